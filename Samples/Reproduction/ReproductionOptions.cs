using System.Globalization;
using ModelSurgery.Samples;

namespace ModelSurgery.Reproduction;

/// <summary>The six ablations, in report order.</summary>
public enum Ablation
{
    /// <summary>1. Parameter inheritance by importance metric vs random initialisation.</summary>
    Inheritance = 1,

    /// <summary>2. Which teacher layers the student keeps.</summary>
    LayerSelection = 2,

    /// <summary>3. Vocabulary size at a fixed parameter budget.</summary>
    Vocabulary = 3,

    /// <summary>4. Depth vs width at a fixed parameter budget.</summary>
    DepthWidth = 4,

    /// <summary>5. Multiple-round training vs one round.</summary>
    MultiRound = 5,

    /// <summary>6. Distillation vs plain training.</summary>
    Distillation = 6,
}

/// <summary>Model sizes and token budgets of one reproduction run.</summary>
/// <param name="VocabSize">Tokens kept from GPT-2's vocabulary for the teacher and every student except the vocabulary sweep.</param>
/// <param name="SeqLen">Training and evaluation context.</param>
/// <param name="TeacherBatchSize">Sequences per teacher step.</param>
/// <param name="TeacherLayers">Teacher decoder layers (deep enough that choosing layers matters).</param>
/// <param name="TeacherHidden">Teacher hidden size.</param>
/// <param name="TeacherHeads">Teacher query heads.</param>
/// <param name="TeacherKvHeads">Teacher key/value heads.</param>
/// <param name="TeacherFfn">Teacher MLP width.</param>
/// <param name="TeacherTokens">Tokens the teacher is trained on.</param>
/// <param name="StudentLayers">Inherited student's layers.</param>
/// <param name="StudentHidden">Inherited student's hidden size.</param>
/// <param name="StudentHeads">Inherited student's query heads.</param>
/// <param name="StudentKvHeads">Inherited student's KV heads.</param>
/// <param name="StudentFfn">Inherited student's MLP width.</param>
/// <param name="StudentTokens">The equal training budget of every student (tokens).</param>
/// <param name="StudentBatchSize">Sequences per student step.</param>
/// <param name="RandomContinueFactor">The random student of ablation 1 is also trained for this many times the budget, to find where it reaches the inherited student.</param>
/// <param name="CalibrationSequences">Calibration windows the teacher is scored on.</param>
/// <param name="MaskSteps">Optimiser steps of the learned-mask metric.</param>
/// <param name="VocabSizes">Vocabulary sizes of the tokenizer sweep.</param>
/// <param name="VocabBudget">Total parameters of every model in the tokenizer sweep.</param>
/// <param name="VocabHidden">Hidden size of the tokenizer sweep's models (layers and MLP absorb the rest of the budget).</param>
/// <param name="VocabTrainBytes">Training text of every model in the tokenizer sweep, in UTF-8 bytes.</param>
/// <param name="ShapeBudget">Total parameters of every model in the depth/width sweep.</param>
/// <param name="ShapeDepths">Layer counts of the depth/width sweep.</param>
/// <param name="BrownDocuments">Brown documents used (null: all 500).</param>
/// <param name="EvalBrownDocuments">Held-out Brown documents evaluated one by one (bits per byte, the bootstrap's unit), each cut to its first <see cref="EvalDocumentChars"/> characters.</param>
/// <param name="EvalHeldoutDocuments">heldout.jsonl documents evaluated.</param>
/// <param name="Seeds">Default seeds of every ablation except the vocabulary sweep.</param>
public sealed record ReproductionSizes(
    int VocabSize,
    int SeqLen,
    int TeacherBatchSize,
    int TeacherLayers,
    int TeacherHidden,
    int TeacherHeads,
    int TeacherKvHeads,
    int TeacherFfn,
    long TeacherTokens,
    int StudentLayers,
    int StudentHidden,
    int StudentHeads,
    int StudentKvHeads,
    int StudentFfn,
    long StudentTokens,
    int StudentBatchSize,
    int RandomContinueFactor,
    int CalibrationSequences,
    int MaskSteps,
    IReadOnlyList<int> VocabSizes,
    long VocabBudget,
    int VocabHidden,
    long VocabTrainBytes,
    long ShapeBudget,
    IReadOnlyList<int> ShapeDepths,
    int? BrownDocuments,
    int EvalBrownDocuments,
    int EvalHeldoutDocuments,
    int Seeds)
{
    /// <summary>Characters of each held-out Brown document that are evaluated (about a thousand tokens: the evaluation stays cheap next to training).</summary>
    public const int EvalDocumentChars = 3000;

    /// <summary>The full run: an 8-layer teacher and students trained in about 15 minutes in all on two CPU cores.</summary>
    public static ReproductionSizes Full { get; } = new(
        VocabSize: 4096, SeqLen: 128, TeacherBatchSize: 16,
        TeacherLayers: 8, TeacherHidden: 128, TeacherHeads: 4, TeacherKvHeads: 2, TeacherFfn: 384, TeacherTokens: 655_360,
        StudentLayers: 4, StudentHidden: 96, StudentHeads: 2, StudentKvHeads: 1, StudentFfn: 192, StudentTokens: 81_920, StudentBatchSize: 4,
        RandomContinueFactor: 4, CalibrationSequences: 32, MaskSteps: 100,
        VocabSizes: [1024, 2048, 4096, 8192], VocabBudget: 1_200_000, VocabHidden: 96, VocabTrainBytes: 240_000,
        ShapeBudget: 900_000, ShapeDepths: [1, 2, 4, 8],
        BrownDocuments: null, EvalBrownDocuments: 20, EvalHeldoutDocuments: 40, Seeds: 3);

    /// <summary>Tiny models and budgets: every ablation in about a minute (tests and CI).</summary>
    public static ReproductionSizes Fast { get; } = new(
        VocabSize: 1024, SeqLen: 32, TeacherBatchSize: 8,
        TeacherLayers: 4, TeacherHidden: 64, TeacherHeads: 4, TeacherKvHeads: 2, TeacherFfn: 128, TeacherTokens: 16_384,
        StudentLayers: 2, StudentHidden: 48, StudentHeads: 2, StudentKvHeads: 1, StudentFfn: 64, StudentTokens: 4_096, StudentBatchSize: 8,
        RandomContinueFactor: 2, CalibrationSequences: 8, MaskSteps: 10,
        VocabSizes: [512, 1024, 2048], VocabBudget: 200_000, VocabHidden: 32, VocabTrainBytes: 12_000,
        ShapeBudget: 160_000, ShapeDepths: [1, 2, 4],
        BrownDocuments: 30, EvalBrownDocuments: 4, EvalHeldoutDocuments: 6, Seeds: 1);
}

/// <summary>What to run and where to write it (the flags every sample takes, see <see cref="SampleRunOptions"/>, and the ablations).</summary>
public sealed record ReproductionOptions : SampleRunOptions
{
    /// <inheritdoc/>
    public override string DefaultOutputDir => "artifacts/reproduction";

    /// <summary>Ablations to run; empty for all.</summary>
    public IReadOnlyList<Ablation> Only { get; init; } = [];

    /// <summary>Seeds of every ablation but the vocabulary sweep; null for the sizes' default.</summary>
    public int? Seeds { get; init; }

    /// <summary>The sizes this run uses.</summary>
    public ReproductionSizes Sizes => Fast ? ReproductionSizes.Fast : ReproductionSizes.Full;

    /// <summary>The seeds this run uses.</summary>
    public int ResolvedSeeds => Seeds ?? Sizes.Seeds;

    /// <summary>The ablations this run runs, in report order.</summary>
    public IReadOnlyList<Ablation> Ablations => Only.Count == 0 ? Enum.GetValues<Ablation>() : [.. Only.Distinct().Order()];

    /// <summary>Usage text for <c>--help</c>.</summary>
    public const string Usage = """
        Usage: dotnet run -c Release --project Samples/Reproduction -- [options]

        Reproduces the PanGu-pi Pro ablations at small scale on CPU and writes report.md, report.json and PNG charts.

          --fast             tiny models and budgets (about a minute; used by the tests)
          --out <dir>        output folder (default artifacts/reproduction, or artifacts/reproduction-fast with --fast)
          --only <list>      comma-separated ablations: inheritance, layers, vocab, shape, multiround, distillation (or 1-6)
          --seeds <n>        seeds of every ablation but the vocabulary sweep (default 3, 1 with --fast)
          --teacher <dir>    cached teacher folder (default <out>/teacher)
          --data <dir>       folder with brown.jsonl and heldout.jsonl (default: shipped with the program)
          --fresh            retrain the teacher even if a cached one matches
          --threads <n>      LibTorch CPU threads (default 1)
          --help             this text
        """;

    /// <summary>Parses command-line arguments; returns null for <c>--help</c>.</summary>
    /// <exception cref="ArgumentException">An unknown option, a missing or bad value; the message names it.</exception>
    public static ReproductionOptions? Parse(IReadOnlyList<string> args) => Parse(args, new ReproductionOptions(), Usage, (options, flag, value) => flag switch
    {
        "--only" => options with { Only = ParseAblations(value()) },
        "--seeds" => options with { Seeds = PositiveInt(flag, value()) },
        _ => null,
    });

    /// <summary>The option name of an ablation (<c>inheritance</c>, <c>layers</c>, ...).</summary>
    public static string NameOf(Ablation ablation) => ablation switch
    {
        Ablation.Inheritance => "inheritance",
        Ablation.LayerSelection => "layers",
        Ablation.Vocabulary => "vocab",
        Ablation.DepthWidth => "shape",
        Ablation.MultiRound => "multiround",
        Ablation.Distillation => "distillation",
        _ => throw new ArgumentOutOfRangeException(nameof(ablation), ablation, "Unknown ablation."),
    };

    /// <summary>Parses <c>--only</c>'s comma-separated list of names or numbers.</summary>
    /// <exception cref="ArgumentException">An unknown name; the message lists the known ones.</exception>
    public static IReadOnlyList<Ablation> ParseAblations(string list)
    {
        ArgumentNullException.ThrowIfNull(list);
        var result = new List<Ablation>();
        foreach (string item in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            Ablation? match = int.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && Enum.IsDefined((Ablation)n)
                ? (Ablation)n
                : Enum.GetValues<Ablation>().Cast<Ablation?>().FirstOrDefault(a => string.Equals(NameOf(a!.Value), item, StringComparison.OrdinalIgnoreCase));
            result.Add(match ?? throw new ArgumentException(
                $"Option '--only': unknown ablation '{item}'; use {string.Join(", ", Enum.GetValues<Ablation>().Select(NameOf))} or 1-6."));
        }

        return result.Count > 0 ? result : throw new ArgumentException("Option '--only' needs at least one ablation.");
    }
}
