using System.Globalization;

namespace ModelSurgery.Samples;

/// <summary>
/// What every sample program (the quickstart, the reproduction) takes: where to write, where the cached teacher and the
/// text are, fast or full sizes, a fresh teacher, and the thread count; with one parser for those flags.
/// </summary>
public abstract record SampleRunOptions
{
    /// <summary>Where reports, charts, checkpoints and (by default) the cached teacher go; null for the default.</summary>
    public string? OutputDir { get; init; }

    /// <summary>The cached teacher's folder; default <c>teacher</c> inside the output folder.</summary>
    public string? TeacherDir { get; init; }

    /// <summary>Folder holding <c>brown.jsonl</c> and <c>heldout.jsonl</c>; default the <c>Data</c> folder next to the program.</summary>
    public string? DataDir { get; init; }

    /// <summary>Tiny models and budgets instead of the full sizes (tests and CI).</summary>
    public bool Fast { get; init; }

    /// <summary>Retrain the teacher even when a matching cached one exists.</summary>
    public bool Fresh { get; init; }

    /// <summary>
    /// CPU threads for LibTorch; null keeps its default (one per core). Default one: the samples' models are small, and
    /// on a shared machine LibTorch's threads wait on each other (four times slower on two busy cores).
    /// </summary>
    public int? Threads { get; init; } = 1;

    /// <summary>Default output folder of full runs, relative to the current folder.</summary>
    public abstract string DefaultOutputDir { get; }

    /// <summary>Default output folder of <see cref="Fast"/> runs, so that they never replace the full run's cached teacher.</summary>
    public string DefaultFastOutputDir => DefaultOutputDir + "-fast";

    /// <summary>The output folder this run uses.</summary>
    public string ResolvedOutputDir => OutputDir ?? (Fast ? DefaultFastOutputDir : DefaultOutputDir);

    /// <summary>The teacher folder this run uses.</summary>
    public string ResolvedTeacherDir => TeacherDir ?? Path.Combine(ResolvedOutputDir, "teacher");

    /// <summary>The data folder this run uses.</summary>
    public string ResolvedDataDir => DataDir ?? Path.Combine(AppContext.BaseDirectory, "Data");

    /// <summary>
    /// Parses <paramref name="args"/> into <paramref name="defaults"/>: the common flags here, the sample's own through
    /// <paramref name="own"/> (null for a flag it does not know). Returns null for <c>--help</c>.
    /// </summary>
    /// <typeparam name="T">The sample's options.</typeparam>
    /// <param name="args">Command-line arguments.</param>
    /// <param name="defaults">The options before any flag.</param>
    /// <param name="usage">Usage text, shown after an unknown option.</param>
    /// <param name="own">The sample's own flags: (options, flag, value reader) to the new options, or null when unknown.</param>
    /// <exception cref="ArgumentException">An unknown option, a missing or bad value; the message names it.</exception>
    protected static T? Parse<T>(IReadOnlyList<string> args, T defaults, string usage, Func<T, string, Func<string>, T?>? own = null)
        where T : SampleRunOptions
    {
        ArgumentNullException.ThrowIfNull(args);
        SampleRunOptions options = defaults;
        for (int i = 0; i < args.Count; i++)
        {
            string flag = args[i];
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"Option '{flag}' needs a value.");
            if (flag is "--help" or "-h")
            {
                return null;
            }

            options = flag switch
            {
                "--fast" => options with { Fast = true },
                "--fresh" => options with { Fresh = true },
                "--out" => options with { OutputDir = Value() },
                "--teacher" => options with { TeacherDir = Value() },
                "--data" => options with { DataDir = Value() },
                "--threads" => options with { Threads = PositiveInt(flag, Value()) },
                _ => own?.Invoke((T)options, flag, Value) ?? throw new ArgumentException($"Unknown option '{flag}'.\n{usage}"),
            };
        }

        return (T)options;
    }

    /// <summary>A whole number above zero given to <paramref name="option"/>.</summary>
    /// <exception cref="ArgumentException">Not one; the message names the option and the value.</exception>
    protected static int PositiveInt(string option, string value) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n > 0
            ? n
            : throw new ArgumentException($"Option '{option}' needs a positive whole number, not '{value}'.");
}
