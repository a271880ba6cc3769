using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using ModelSurgery.Inference.IO;
using TorchSharp;

namespace ModelSurgery.Reproduction;

/// <summary>Where and on what a report was produced.</summary>
/// <param name="Command">The command line.</param>
/// <param name="StartedUtc">When the run started.</param>
/// <param name="Cpu">CPU model.</param>
/// <param name="Cores">Logical cores.</param>
/// <param name="MemoryGiB">Physical memory.</param>
/// <param name="Os">Operating system.</param>
/// <param name="Runtime">.NET runtime.</param>
/// <param name="TorchSharp">TorchSharp version.</param>
/// <param name="Threads">LibTorch threads used.</param>
public sealed record MachineInfo(string Command, DateTime StartedUtc, string Cpu, int Cores, double MemoryGiB, string Os, string Runtime, string TorchSharp, int Threads)
{
    /// <summary>Describes this machine.</summary>
    public static MachineInfo Current(string command, DateTime startedUtc) => new(
        command, startedUtc, CpuModel(), Environment.ProcessorCount, MemoryGiBytes(), RuntimeInformation.OSDescription, RuntimeInformation.FrameworkDescription,
        typeof(torch).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? typeof(torch).Assembly.GetName().Version?.ToString() ?? "unknown",
        torch.get_num_threads());

    private static string CpuModel()
    {
        const string CpuInfo = "/proc/cpuinfo";
        string? line = File.Exists(CpuInfo) ? File.ReadLines(CpuInfo).FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal)) : null;
        return line is null ? RuntimeInformation.ProcessArchitecture.ToString() : line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
    }

    private static double MemoryGiBytes()
    {
        const string MemInfo = "/proc/meminfo";
        string? line = File.Exists(MemInfo) ? File.ReadLines(MemInfo).FirstOrDefault(l => l.StartsWith("MemTotal:", StringComparison.Ordinal)) : null;
        long kib = line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        return kib > 0 ? kib / 1024.0 / 1024.0 : GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / (1024.0 * 1024.0 * 1024.0);
    }
}

/// <summary>What a reproduction run produced.</summary>
/// <param name="OutputDir">The output folder.</param>
/// <param name="ReportPath">report.md.</param>
/// <param name="JsonPath">report.json.</param>
/// <param name="Charts">Every PNG written (full paths).</param>
/// <param name="Sections">One per ablation run.</param>
/// <param name="TeacherFromCache">Whether the teacher came from the cache.</param>
/// <param name="Elapsed">Wall time.</param>
public sealed record ReproductionResult(
    string OutputDir, string ReportPath, string JsonPath, IReadOnlyList<string> Charts, IReadOnlyList<AblationSection> Sections, bool TeacherFromCache, TimeSpan Elapsed);

/// <summary>Runs the chosen ablations and writes <c>report.md</c>, <c>report.json</c> and the charts.</summary>
public static class ReproductionPipeline
{
    /// <summary>Runs everything, printing progress to <paramref name="output"/>.</summary>
    /// <param name="options">What to run.</param>
    /// <param name="output">Progress lines.</param>
    /// <param name="command">The command line recorded in the report.</param>
    /// <param name="cancellationToken">Cancels between steps.</param>
    /// <returns>The result.</returns>
    public static async Task<ReproductionResult> RunAsync(ReproductionOptions options, TextWriter output, string command, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(output);
        DateTime started = DateTime.UtcNow;
        if (options.Threads is int threads)
        {
            torch.set_num_threads(threads);
        }

        string outDir = Path.GetFullPath(options.ResolvedOutputDir);
        Directory.CreateDirectory(outDir);
        var log = new RunLog(output);
        output.WriteLine($"PanGu-pi Pro reproduction ({(options.Fast ? "fast" : "full")} sizes, ablations {string.Join(", ", options.Ablations.Select(ReproductionOptions.NameOf))}, {options.ResolvedSeeds} seed(s)) -> {outDir}");
        using var lab = new Lab(options.Sizes, outDir, log, cancellationToken);

        log.Section("Data and teacher");
        await lab.PrepareDataAsync(options.ResolvedDataDir).ConfigureAwait(false);
        await lab.EnsureTeacherAsync(Path.GetFullPath(options.ResolvedTeacherDir), options.Fresh).ConfigureAwait(false);

        var ablations = new Ablations(lab, options.ResolvedSeeds);
        var sections = new List<AblationSection>();
        foreach (Ablation ablation in options.Ablations)
        {
            log.Section($"{(int)ablation}. {ReproductionOptions.NameOf(ablation)}");
            AblationSection section = ablation switch
            {
                Ablation.Inheritance => await ablations.InheritanceAsync().ConfigureAwait(false),
                Ablation.LayerSelection => await ablations.LayerSelectionAsync().ConfigureAwait(false),
                Ablation.Vocabulary => await ablations.VocabularyAsync().ConfigureAwait(false),
                Ablation.DepthWidth => await ablations.DepthWidthAsync().ConfigureAwait(false),
                Ablation.MultiRound => await ablations.MultiRoundAsync().ConfigureAwait(false),
                Ablation.Distillation => await ablations.DistillationAsync().ConfigureAwait(false),
                _ => throw new InvalidOperationException($"Unknown ablation {ablation}."),
            };
            sections.Add(section);
            foreach (Verdict verdict in section.Verdicts)
            {
                log.Info($"{Verdict.Words(verdict.Outcome)}: {verdict.Claim} ({Verdict.SignedDifference(verdict.MeanDifference)} bpb, noise ±{verdict.Noise.ToString("0.000", CultureInfo.InvariantCulture)})");
            }
        }

        TimeSpan elapsed = log.Elapsed;
        var machine = MachineInfo.Current(command, started);
        string reportPath = Path.Combine(outDir, "report.md");
        string jsonPath = Path.Combine(outDir, "report.json");
        AtomicFile.WriteAllText(reportPath, ReportWriter.Markdown(machine, elapsed, options, lab, sections));
        AtomicFile.WriteAllText(jsonPath, ReportWriter.Json(machine, elapsed, options, sections));
        output.WriteLine();
        foreach (AblationSection section in sections)
        {
            output.WriteLine($"{(int)section.Ablation}. {section.Title}: {Verdict.Words(section.Overall)}");
        }

        output.WriteLine($"Wrote {reportPath} in {elapsed.TotalMinutes:F1} min");
        return new ReproductionResult(
            outDir, reportPath, jsonPath, [.. sections.SelectMany(s => s.Charts).Select(c => Path.Combine(outDir, c))], sections, lab.Teacher.FromCache, elapsed);
    }
}

/// <summary>report.md and report.json.</summary>
internal static class ReportWriter
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter() },
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };

    public static string Markdown(MachineInfo machine, TimeSpan elapsed, ReproductionOptions options, Lab lab, IReadOnlyList<AblationSection> sections)
    {
        var text = new StringBuilder();
        void Line(FormattableString line = default!) => text.AppendLine(line is null ? string.Empty : line.ToString(CultureInfo.InvariantCulture));
        Line($"# PanGu-π Pro ablations reproduced at small scale");
        Line();
        Line($"Reproduces the ablations of \"Rethinking Optimization and Architecture for Tiny Language Models\" (PanGu-π Pro, arXiv 2402.02791) with ModelSurgery, at a scale a 2-core CPU trains in about a quarter of an hour.");
        Line();
        Line($"| | |");
        Line($"|---|---|");
        Line($"| Command | `{machine.Command}` |");
        Line($"| Date | {machine.StartedUtc:yyyy-MM-dd HH:mm} UTC |");
        Line($"| Machine | {machine.Cpu}, {machine.Cores} cores, {machine.MemoryGiB:F0} GiB RAM, {machine.Os} |");
        Line($"| Software | {machine.Runtime}, TorchSharp {machine.TorchSharp}, {machine.Threads} LibTorch thread(s) |");
        Line($"| Total wall time | {elapsed.TotalMinutes:F1} min (teacher {(lab.Teacher.FromCache ? "from the cache, trained in " + lab.Teacher.TrainSeconds.ToString("F0", CultureInfo.InvariantCulture) + " s earlier" : "trained in this run: " + lab.Teacher.TrainSeconds.ToString("F0", CultureInfo.InvariantCulture) + " s")}) |");
        Line($"| Sizes | {(options.Fast ? "fast (CI smoke test: numbers are noise)" : "full")}; {options.ResolvedSeeds} seed(s) for every ablation but the vocabulary sweep |");
        Line();
        Line($"**Our metric is not the paper's.** The paper reports average benchmark accuracy of 1B models trained on up to 1.6T tokens. We report held-out loss and **bits per byte** (lower is better) on held-out Brown Corpus documents (every tenth document, never trained on) and on `Samples/Data/heldout.jsonl` (other sources), for models of well under a million parameters trained for tens of thousands of tokens. Only the direction of each finding is comparable.");
        Line();
        Line($"**Verdicts.** For each claim, d = (claimed-worse minus claimed-better) held-out Brown bits per byte for each seed; the noise is the half-width of a 95% paired bootstrap interval of that difference over the {lab.EvalBrownPaths.Count} held-out documents ({Analysis.BootstrapResamples} resamples). *Reproduces*: every seed has d > 0 and the mean exceeds both the noise and {Verdict.MinimumEffect} bpb (a smaller difference is within what another training seed changes). *Does not reproduce*: every seed has d < 0 and the mean is below minus both. Otherwise *inconclusive*. With one seed the noise covers the evaluation sample only, not training randomness.");
        Line();
        Line($"## Summary");
        Line();
        Line($"| # | Ablation | Primary claim | Verdict | Difference (bpb) | Noise |");
        Line($"|---|---|---|---|---:|---:|");
        foreach (AblationSection s in sections)
        {
            Verdict? v = s.Verdicts.Count > 0 ? s.Verdicts[0] : null;
            Line($"| {(int)s.Ablation} | {s.Title} | {v?.Claim ?? "-"} | **{Verdict.Words(s.Overall)}** | {(v is null ? "-" : Verdict.SignedDifference(v.MeanDifference))} | ±{v?.Noise.ToString("0.000", CultureInfo.InvariantCulture) ?? "-"} |");
        }

        Line();
        Line($"Teacher: {Inference.Configuration.LlamaTensorLayout.CountParameters(lab.TeacherConfig).Total:N0} parameters ({Surgery.Planning.StudentShape.Of(lab.TeacherConfig)}), trained from scratch on {lab.Sizes.TeacherTokens:N0} Brown tokens with GPT-2's vocabulary compressed to {lab.Corpus.Map.NewVocabSize} tokens; context {lab.Sizes.SeqLen}; final validation loss {lab.Teacher.FinalValidationLoss:F3}.");
        foreach (AblationSection s in sections)
        {
            Line();
            Line($"## {(int)s.Ablation}. {s.Title}");
            Line();
            Line($"**Paper.** {s.PaperClaim}");
            Line();
            if (s.PaperTable.Length > 0)
            {
                text.AppendLine(s.PaperTable);
                Line();
            }

            Line($"**What we ran.** {s.Setup}");
            Line();
            text.AppendLine("| " + string.Join(" | ", s.Header) + " |");
            text.AppendLine("|" + string.Join("|", s.Header.Select((_, i) => i == 0 ? "---" : "---:")) + "|");
            foreach (IReadOnlyList<string> row in s.Rows)
            {
                text.AppendLine("| " + string.Join(" | ", row) + " |");
            }

            Line();
            foreach (string chart in s.Charts)
            {
                Line($"![{Path.GetFileNameWithoutExtension(chart)}]({chart})");
                Line();
            }

            foreach (Verdict verdict in s.Verdicts)
            {
                text.AppendLine("- " + verdict.ToMarkdown());
            }

            Line();
            Line($"{s.Notes}");
        }

        return text.ToString();
    }

    public static string Json(MachineInfo machine, TimeSpan elapsed, ReproductionOptions options, IReadOnlyList<AblationSection> sections) =>
        JsonSerializer.Serialize(
            new
            {
                Machine = machine,
                WallSeconds = elapsed.TotalSeconds,
                options.Fast,
                Seeds = options.ResolvedSeeds,
                Sizes = options.Sizes,
                Sections = sections.Select(s => new
                {
                    Id = ReproductionOptions.NameOf(s.Ablation),
                    s.Title,
                    Overall = Verdict.Words(s.Overall),
                    Verdicts = s.Verdicts.Select(v => new { v.Claim, Outcome = Verdict.Words(v.Outcome), v.MeanDifference, v.SeedDifferences, v.Noise }),
                    s.Header,
                    s.Rows,
                    s.Charts,
                    s.Numbers,
                    Runs = s.Runs.Select(r => new
                    {
                        r.Name, r.Seed, r.Shape, r.Parameters, r.NonEmbeddingParameters, r.TrainingTokens, r.ValidationLoss,
                        r.BrownBitsPerByte, r.HeldoutBitsPerByte, DocumentNllNats = r.BrownDocuments.NllNats, DocumentBytes = r.BrownDocuments.Bytes, r.Curve, r.Seconds,
                    }),
                }),
            },
            JsonOptions);
}
