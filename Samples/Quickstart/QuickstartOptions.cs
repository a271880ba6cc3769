using ModelSurgery.Samples;

namespace ModelSurgery.Quickstart;

/// <summary>Model sizes and token budgets of one quickstart run.</summary>
/// <param name="VocabSize">Tokens kept from GPT-2's vocabulary (the most frequent in Brown, with their merge closure).</param>
/// <param name="SeqLen">Training and evaluation context.</param>
/// <param name="BatchSize">Sequences per teacher step.</param>
/// <param name="TeacherLayers">Teacher decoder layers.</param>
/// <param name="TeacherHidden">Teacher hidden size.</param>
/// <param name="TeacherHeads">Teacher query heads.</param>
/// <param name="TeacherKvHeads">Teacher key/value heads.</param>
/// <param name="TeacherFfn">Teacher MLP width.</param>
/// <param name="TeacherTokens">Tokens the teacher is trained on.</param>
/// <param name="StudentLayers">Student decoder layers.</param>
/// <param name="StudentHidden">Student hidden size.</param>
/// <param name="StudentHeads">Student query heads.</param>
/// <param name="StudentKvHeads">Student key/value heads.</param>
/// <param name="StudentFfn">Student MLP width.</param>
/// <param name="StudentTokens">Tokens each student is trained on.</param>
/// <param name="StudentBatchSize">Sequences per student step (smaller than the teacher's: more updates from a small budget).</param>
/// <param name="CalibrationSequences">Calibration windows the teacher is scored on.</param>
/// <param name="BrownDocuments">Brown documents used (null: all 500).</param>
/// <param name="EvalBrownDocuments">Held-out Brown documents evaluated.</param>
/// <param name="EvalHeldoutDocuments">heldout.jsonl documents evaluated.</param>
/// <param name="SampleTokens">Tokens generated per model for the text sample.</param>
public sealed record QuickstartSizes(
    int VocabSize,
    int SeqLen,
    int BatchSize,
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
    int CalibrationSequences,
    int? BrownDocuments,
    int EvalBrownDocuments,
    int EvalHeldoutDocuments,
    int SampleTokens)
{
    /// <summary>
    /// The full run: a 6-layer teacher (1.2M non-embedding parameters) trained for a few minutes on two CPU cores, and a
    /// student with about a quarter of its non-embedding parameters.
    /// </summary>
    public static QuickstartSizes Full { get; } = new(
        VocabSize: 8192, SeqLen: 128, BatchSize: 16,
        TeacherLayers: 6, TeacherHidden: 128, TeacherHeads: 4, TeacherKvHeads: 2, TeacherFfn: 384, TeacherTokens: 409_600,
        StudentLayers: 3, StudentHidden: 96, StudentHeads: 2, StudentKvHeads: 1, StudentFfn: 288, StudentTokens: 40_960, StudentBatchSize: 8,
        CalibrationSequences: 32, BrownDocuments: null, EvalBrownDocuments: 6, EvalHeldoutDocuments: 40, SampleTokens: 40);

    /// <summary>Tiny models and budgets: the whole pipeline in seconds (tests and CI).</summary>
    public static QuickstartSizes Fast { get; } = new(
        VocabSize: 1024, SeqLen: 32, BatchSize: 8,
        TeacherLayers: 4, TeacherHidden: 64, TeacherHeads: 4, TeacherKvHeads: 2, TeacherFfn: 192, TeacherTokens: 20_000,
        StudentLayers: 2, StudentHidden: 48, StudentHeads: 2, StudentKvHeads: 1, StudentFfn: 96, StudentTokens: 8_000, StudentBatchSize: 8,
        CalibrationSequences: 8, BrownDocuments: 20, EvalBrownDocuments: 1, EvalHeldoutDocuments: 8, SampleTokens: 12);
}

/// <summary>What to run and where to write it (the flags every sample takes; see <see cref="SampleRunOptions"/>).</summary>
public sealed record QuickstartOptions : SampleRunOptions
{
    /// <inheritdoc/>
    public override string DefaultOutputDir => "artifacts/quickstart";

    /// <summary>The sizes this run uses.</summary>
    public QuickstartSizes Sizes => Fast ? QuickstartSizes.Fast : QuickstartSizes.Full;

    /// <summary>Usage text for <c>--help</c>.</summary>
    public const string Usage = """
        Usage: dotnet run -c Release --project Samples/Quickstart -- [options]

          --fast          tiny models and token budgets (seconds; used by the tests)
          --out <dir>     output folder (default artifacts/quickstart, or artifacts/quickstart-fast with --fast)
          --teacher <dir> cached teacher folder (default <out>/teacher)
          --data <dir>    folder with brown.jsonl and heldout.jsonl (default: shipped with the program)
          --fresh         retrain the teacher even if a cached one matches
          --threads <n>   LibTorch CPU threads (default 1; more helps only on idle cores)
          --help          this text
        """;

    /// <summary>Parses command-line arguments; returns null for <c>--help</c>.</summary>
    /// <exception cref="ArgumentException">An unknown option or a missing value; the message names it.</exception>
    public static QuickstartOptions? Parse(IReadOnlyList<string> args) => Parse(args, new QuickstartOptions(), Usage);
}
