using System.Globalization;

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

/// <summary>What to run and where to write it.</summary>
public sealed record QuickstartOptions
{
    /// <summary>Default output folder, relative to the current folder.</summary>
    public const string DefaultOutputDir = "artifacts/quickstart";

    /// <summary>Default output folder of <see cref="Fast"/> runs, so that they never replace the full run's cached teacher.</summary>
    public const string DefaultFastOutputDir = "artifacts/quickstart-fast";

    /// <summary>Where reports, charts, the student checkpoints and (by default) the cached teacher go; null for the default.</summary>
    public string? OutputDir { get; init; }

    /// <summary>The cached teacher's folder; default <c>teacher</c> inside the output folder.</summary>
    public string? TeacherDir { get; init; }

    /// <summary>Folder holding <c>brown.jsonl</c> and <c>heldout.jsonl</c>; default the <c>Data</c> folder next to the program.</summary>
    public string? DataDir { get; init; }

    /// <summary>Use <see cref="QuickstartSizes.Fast"/> instead of <see cref="QuickstartSizes.Full"/>.</summary>
    public bool Fast { get; init; }

    /// <summary>Retrain the teacher even when a matching cached one exists.</summary>
    public bool Fresh { get; init; }

    /// <summary>
    /// CPU threads for LibTorch; null keeps its default (one per core). Default one: these models are small, and on a
    /// shared machine LibTorch's threads wait on each other (four times slower on two busy cores).
    /// </summary>
    public int? Threads { get; init; } = 1;

    /// <summary>The sizes this run uses.</summary>
    public QuickstartSizes Sizes => Fast ? QuickstartSizes.Fast : QuickstartSizes.Full;

    /// <summary>The output folder this run uses.</summary>
    public string ResolvedOutputDir => OutputDir ?? (Fast ? DefaultFastOutputDir : DefaultOutputDir);

    /// <summary>The teacher folder this run uses.</summary>
    public string ResolvedTeacherDir => TeacherDir ?? Path.Combine(ResolvedOutputDir, "teacher");

    /// <summary>The data folder this run uses.</summary>
    public string ResolvedDataDir => DataDir ?? Path.Combine(AppContext.BaseDirectory, "Data");

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
    public static QuickstartOptions? Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var options = new QuickstartOptions();
        for (int i = 0; i < args.Count; i++)
        {
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"Option '{args[i]}' needs a value.", nameof(args));
            options = args[i] switch
            {
                "--fast" => options with { Fast = true },
                "--fresh" => options with { Fresh = true },
                "--out" => options with { OutputDir = Value() },
                "--teacher" => options with { TeacherDir = Value() },
                "--data" => options with { DataDir = Value() },
                "--threads" => options with { Threads = PositiveInt(args[i], Value()) },
                "--help" or "-h" => null,
                _ => throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"Unknown option '{args[i]}'.\n{Usage}"), nameof(args)),
            };
            if (options is null)
            {
                return null;
            }
        }

        return options;
    }

    private static int PositiveInt(string option, string value) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n > 0
            ? n
            : throw new ArgumentException($"Option '{option}' needs a positive whole number, not '{value}'.", nameof(option));
}
