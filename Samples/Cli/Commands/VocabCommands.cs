using System.CommandLine;
using System.Globalization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.IO;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Cli.Commands;

/// <summary>
/// <c>modelsurgery vocab stats --tokenizer &lt;path&gt; --corpus &lt;paths...&gt; [--model &lt;dir&gt;] [--field text] --out &lt;stats.json&gt; [--plot coverage.png]</c>
/// and <c>modelsurgery vocab compress --model &lt;dir&gt; --corpus &lt;paths...&gt; (--keep N | --coverage 0.98) [--field text] [--pad-to-multiple 64] --out &lt;dir&gt;</c>.
/// </summary>
internal static class VocabCommands
{
    /// <summary>The coverages whose vocabulary size <c>vocab stats</c> prints (97.86%: PanGu-pi Pro's 48k of 100k tokens).</summary>
    internal static readonly double[] ReportedCoverages = [0.90, 0.95, 0.9786, 0.98, 0.99];

    public static Command Create(CliContext context)
    {
        var command = new Command("vocab", "Vocabulary statistics and compression (keep the most frequent tokens of a corpus).")
        {
            CreateStats(context),
            CreateCompress(context),
        };
        return command;
    }

    private static Option<string[]> Corpus() => new("--corpus")
    {
        Description = "Corpus files, folders or glob patterns (JSONL or plain text).",
        Required = true,
        AllowMultipleArgumentsPerToken = true,
        Arity = ArgumentArity.OneOrMore,
    };

    private static Option<string> Field() => new("--field") { Description = "Text field of JSONL records (dotted path for nested fields).", DefaultValueFactory = _ => CorpusReader.DefaultJsonlField };

    private static Command CreateStats(CliContext context)
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "Tokenizer: tokenizer.json, a folder holding one, a SentencePiece .model, a .tiktoken file, or gpt2.", Required = true };
        var corpus = Corpus();
        var model = new Option<string?>("--model") { Description = "Checkpoint folder whose config.json gives the embedding-plus-head share at each vocabulary size." };
        var field = Field();
        var output = new Option<string>("--out") { Description = "Statistics JSON to write.", Required = true };
        var plot = new Option<string?>("--plot") { Description = "Coverage chart PNG to write." };
        var command = new Command("stats", "Token frequencies of a tokenizer over a corpus: vocabulary size needed for each coverage.") { tokenizer, corpus, model, field, output, plot };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            string[] corpusPaths = parsed.GetValue(corpus)!;
            string? modelDir = parsed.GetValue(model);
            string? configPath = modelDir is null ? null : Path.Combine(modelDir, "config.json");
            if (configPath is not null && !File.Exists(configPath))
            {
                throw new UsageException($"--model {modelDir}: no config.json there.");
            }

            using OutputGuard guard = new OutputGuard()
                .Input(parsed.GetValue(tokenizer), "--tokenizer", InputKind.Model)
                .Inputs(corpusPaths, "--corpus", InputKind.Corpus)
                .Input(modelDir, "--model", InputKind.Model)
                .File(parsed.GetValue(output), "--out")
                .File(parsed.GetValue(plot), "--plot");
            using var loggers = context.CreateLoggerFactory(parsed);
            using var bar = context.CreateProgressBar("counting", ProgressUnit.Bytes);
            VocabularyStatistics statistics = await VocabularyCommands.StatsAsync(
                parsed.GetValue(tokenizer)!,
                corpusPaths,
                parsed.GetValue(output)!,
                parsed.GetValue(field),
                parsed.GetValue(plot),
                configPath,
                bar,
                loggers.CreateLogger("vocab"),
                cancellationToken).ConfigureAwait(false);
            bar.Dispose();

            LlamaConfig? config = configPath is null ? null : LlamaConfig.Load(configPath);
            TextWriter o = context.Output;
            await o.WriteLineAsync(Invariant($"tokens {statistics.TotalTokens:N0} in {statistics.Documents:N0} documents, {statistics.TotalBytes:N0} bytes, {statistics.MegabytesPerSecond:F2} MB/s ({statistics.ElapsedSeconds:F2} s)")).ConfigureAwait(false);
            await o.WriteLineAsync(Invariant($"vocabulary {statistics.VocabSize:N0} ids, {statistics.DistinctTokensSeen:N0} seen")).ConfigureAwait(false);
            if (config is not null)
            {
                await o.WriteLineAsync(Invariant($"embedding + head share at vocab_size {config.VocabSize:N0}: {LlamaTensorLayout.CountParameters(config).EmbeddingShare * 100:F2}%")).ConfigureAwait(false);
            }

            foreach (double coverage in ReportedCoverages)
            {
                int size = statistics.SizeForCoverage(coverage);
                string share = config is null ? "" : Invariant($", embedding + head share {LlamaTensorLayout.CountParameters(config with { VocabSize = size }).EmbeddingShare * 100:F2}%");
                await o.WriteLineAsync(Invariant($"coverage {coverage * 100:0.##}%: {size:N0} tokens{share}")).ConfigureAwait(false);
            }

            return ExitCodes.Success;
        });
        return command;
    }

    private static Command CreateCompress(CliContext context)
    {
        var model = CommonOptions.Model();
        var corpus = Corpus();
        var keep = new Option<int?>("--keep") { Description = "Keep this many tokens (merge parents and special tokens included)." };
        var coverage = new Option<double?>("--coverage") { Description = "Keep the fewest most frequent tokens that cover this fraction of the corpus, e.g. 0.98." };
        var field = Field();
        var pad = new Option<int>("--pad-to-multiple") { Description = "Pad vocab_size to a multiple of this with zero embedding and head rows.", DefaultValueFactory = _ => 1 };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "The model's tokenizer when the folder has none (file or gpt2); its ids must be the embedding rows." };
        var output = new Option<string>("--out") { Description = "Output checkpoint folder.", Required = true };
        var force = CommonOptions.Force();
        var command = new Command("compress", "Compress a model's vocabulary to the most frequent tokens of a corpus: tokenizer, embedding and head.") { model, corpus, keep, coverage, field, pad, tokenizer, output, force };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            CompressionTarget target = (parsed.GetValue(keep), parsed.GetValue(coverage)) switch
            {
                (int n, null) when n >= 1 => CompressionTarget.Keep(n),
                (int n, null) => throw new UsageException($"--keep must be at least 1, got {n}."),
                (null, double c) when c > 0 && c <= 1 => CompressionTarget.Cover(c),
                (null, double c) => throw new UsageException(Invariant($"--coverage must be in (0, 1], got {c}.")),
                (null, null) => throw new UsageException("give either --keep N or --coverage F."),
                _ => throw new UsageException("--keep and --coverage are mutually exclusive; give one."),
            };
            int padMultiple = parsed.GetValue(pad);
            if (padMultiple < 1)
            {
                throw new UsageException($"--pad-to-multiple must be at least 1, got {padMultiple}.");
            }

            string modelDir = parsed.GetValue(model)!;
            if (!File.Exists(Path.Combine(modelDir, "config.json")))
            {
                throw new UsageException($"--model {modelDir}: no config.json there.");
            }

            string[] corpusPaths = parsed.GetValue(corpus)!;
            using OutputGuard guard = new OutputGuard()
                .Input(modelDir, "--model", InputKind.Model)
                .Inputs(corpusPaths, "--corpus", InputKind.Corpus)
                .Input(parsed.GetValue(tokenizer), "--tokenizer", InputKind.Model)
                .Folder(parsed.GetValue(output), "--out", parsed.GetValue(force), clearModel: true);
            using (var teacher = Inference.Checkpoints.CheckpointReader.Open(modelDir))
            {
                // The compressed model is at most as large as the one it comes from.
                Inference.Runtime.MemoryPreflight.EnsureDiskSpace(parsed.GetValue(output)!, teacher.TotalTensorBytes, "vocab compress");
            }

            using var loggers = context.CreateLoggerFactory(parsed);
            using var counting = context.CreateProgressBar("counting", ProgressUnit.Bytes);
            ProgressBar? building = null;
            ModelCompressionResult result = await ModelVocabularyCompressor.CompressAsync(
                modelDir,
                corpusPaths,
                target,
                parsed.GetValue(output)!,
                new ModelCompressionOptions { JsonlField = parsed.GetValue(field), PadVocabToMultiple = padMultiple, Tokenizer = parsed.GetValue(tokenizer) },
                new SynchronousProgress<ModelCompressionProgress>(p =>
                {
                    if (p.Counting is { } c)
                    {
                        counting.Report(c);
                    }
                    else if (p.Building is { } b)
                    {
                        building ??= context.CreateProgressBar("building", ProgressUnit.Bytes);
                        building.Report(b);
                    }
                }),
                loggers.CreateLogger("vocab"),
                cancellationToken).ConfigureAwait(false);
            counting.Dispose();
            building?.Dispose();

            TextWriter o = context.Output;
            int stored = result.Build.Config.VocabSize;
            string padded = stored == result.Map.NewVocabSize ? "" : Invariant($" (vocab_size {stored:N0} with padding)");
            await o.WriteLineAsync(Invariant($"vocabulary {result.Map.OldVocabSize:N0} -> {result.Map.NewVocabSize:N0} tokens{padded}, {result.Selection.AddedForClosure:N0} added to keep merges reachable")).ConfigureAwait(false);
            await o.WriteLineAsync(Invariant($"coverage {result.Selection.Coverage * 100:F2}% of {result.Statistics.TotalTokens:N0} corpus tokens")).ConfigureAwait(false);
            await o.WriteLineAsync(Invariant($"embedding + head share {result.Before.EmbeddingShare * 100:F2}% -> {result.After.EmbeddingShare * 100:F2}%; parameters {result.Before.Total:N0} -> {result.After.Total:N0}")).ConfigureAwait(false);
            await o.WriteLineAsync($"wrote {result.Build.Directory} ({VocabularyCompressor.MapFileName}, {ModelVocabularyCompressor.StatisticsFileName}, {ModelVocabularyCompressor.ChartFileName})").ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
