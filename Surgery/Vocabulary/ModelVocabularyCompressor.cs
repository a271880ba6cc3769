using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery.Building;
using ModelSurgery.Surgery.Planning;

namespace ModelSurgery.Surgery.Vocabulary;

/// <summary>Options of <see cref="ModelVocabularyCompressor.CompressAsync"/>.</summary>
public sealed record ModelCompressionOptions
{
    /// <summary>The text field of JSONL corpus records (default <c>text</c>; dotted paths reach nested fields).</summary>
    public string? JsonlField { get; init; }

    /// <summary>Pads the compressed vocab_size up to a multiple of this with zero embedding and head rows (1 = no padding).</summary>
    public int PadVocabToMultiple { get; init; } = 1;

    /// <summary>
    /// The tokenizer to compress (file, folder or <c>gpt2</c>); null means the model folder's own tokenizer. Its ids must be
    /// the model's embedding rows.
    /// </summary>
    public string? Tokenizer { get; init; }

    /// <summary>Corpus reading options (parallelism, document limit); the vocabulary size and config are filled in.</summary>
    public CountingOptions? Counting { get; init; }

    /// <summary>Options of the student build (dtype, shard size, memory guard); the tokenizer and padding are filled in.</summary>
    public StudentBuildOptions? Build { get; init; }
}

/// <summary>Progress of a model compression: counting the corpus first, then building the checkpoint.</summary>
/// <param name="Counting">Counting progress, while counting.</param>
/// <param name="Building">Build progress, while building.</param>
public sealed record ModelCompressionProgress(CountingProgress? Counting, StudentBuildProgress? Building) : IProgressReport
{
    /// <summary>Text bytes counted while counting, student bytes written while building.</summary>
    public long Completed => Counting?.Completed ?? Building?.Completed ?? 0;

    /// <summary>Null while counting (a streamed corpus), the student's bytes while building.</summary>
    public long? Total => Counting is null ? Building?.Total : null;

    /// <summary>Always <see cref="ProgressUnit.Bytes"/>: both stages count bytes.</summary>
    public ProgressUnit Unit => ProgressUnit.Bytes;

    /// <summary>The stage and its own status.</summary>
    public string Status => Counting is { } c ? $"counting: {c.Status}" : Building is { } b ? $"building: {b.Status}" : "starting";
}

/// <summary>What <see cref="ModelVocabularyCompressor.CompressAsync"/> produced.</summary>
/// <param name="Map">New id to teacher id; also saved as <c>vocab_map.json</c> in the output folder.</param>
/// <param name="Selection">What was kept and the corpus coverage of the kept tokens.</param>
/// <param name="Statistics">Token counts of the original tokenizer over the corpus.</param>
/// <param name="Build">The written checkpoint (config, parameters, bytes).</param>
/// <param name="Before">Parameter split of the original model.</param>
/// <param name="After">Parameter split of the compressed model (with padding rows).</param>
/// <param name="MapPath">The <c>vocab_map.json</c> file.</param>
/// <param name="StatisticsPath">The statistics JSON file.</param>
/// <param name="ChartPath">The coverage chart PNG.</param>
public sealed record ModelCompressionResult(
    VocabularyMap Map,
    VocabularySelection Selection,
    VocabularyStatistics Statistics,
    StudentBuildResult Build,
    ParameterCount Before,
    ParameterCount After,
    string MapPath,
    string StatisticsPath,
    string ChartPath);

/// <summary>
/// Compresses the vocabulary of a whole model (PanGu-pi Pro): counts the tokenizer's token frequencies over a corpus,
/// compresses the tokenizer to the most frequent tokens (closed under merges), and builds a checkpoint that keeps only
/// those rows of the embedding and the LM head, with the compressed tokenizer, bos/eos/pad ids renumbered, and
/// <c>vocab_map.json</c> (new id to teacher id) so distillation can restrict the teacher's logits.
/// </summary>
public static class ModelVocabularyCompressor
{
    /// <summary>The statistics JSON written into the output folder.</summary>
    public const string StatisticsFileName = "vocab_stats.json";

    /// <summary>The coverage chart written into the output folder.</summary>
    public const string ChartFileName = "vocab_coverage.png";

    /// <summary>Compresses the model in <paramref name="modelDirectory"/> into <paramref name="outputDirectory"/>.</summary>
    /// <param name="modelDirectory">A checkpoint folder (config.json, safetensors, tokenizer).</param>
    /// <param name="corpusPaths">Files, folders or glob patterns (JSONL or plain text).</param>
    /// <param name="target">How many tokens, or how much coverage, to keep.</param>
    /// <param name="outputDirectory">Where to write the compressed checkpoint (created if needed; not the model folder).</param>
    /// <param name="options">Field, padding and build options.</param>
    /// <param name="progress">Receives counting then build progress.</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="cancellationToken">Stops the work.</param>
    /// <exception cref="ArgumentException">The output is the model folder, the tokenizer has more ids than the model's vocab_size, or the target is below the tokens that must be kept.</exception>
    /// <exception cref="InvalidDataException">A file is malformed; the message names it.</exception>
    public static async Task<ModelCompressionResult> CompressAsync(
        string modelDirectory,
        IEnumerable<string> corpusPaths,
        CompressionTarget target,
        string outputDirectory,
        ModelCompressionOptions? options = null,
        IProgress<ModelCompressionProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(modelDirectory);
        ArgumentNullException.ThrowIfNull(corpusPaths);
        ArgumentNullException.ThrowIfNull(target);
        ArgumentException.ThrowIfNullOrWhiteSpace(outputDirectory);
        options ??= new ModelCompressionOptions();
        logger ??= NullLogger.Instance;
        if (options.PadVocabToMultiple < 1)
        {
            throw new ArgumentException($"PadVocabToMultiple must be at least 1, got {options.PadVocabToMultiple}.", nameof(options));
        }

        if (string.Equals(Path.GetFullPath(modelDirectory).TrimEnd(Path.DirectorySeparatorChar), Path.GetFullPath(outputDirectory).TrimEnd(Path.DirectorySeparatorChar), StringComparison.Ordinal))
        {
            throw new ArgumentException($"{outputDirectory}: the output folder must differ from the model folder.", nameof(outputDirectory));
        }

        LlamaConfig config = LlamaConfig.Load(Path.Combine(modelDirectory, "config.json"));
        string tokenizerPath = options.Tokenizer ?? modelDirectory;
        ModelTokenizer tokenizer = TokenizerFiles.Load(tokenizerPath);
        int tokenizerSize = tokenizer.VocabularySize;
        if (tokenizerSize > config.VocabSize)
        {
            throw new ArgumentException($"{tokenizerPath}: the tokenizer has {tokenizerSize} ids but {modelDirectory}/config.json has vocab_size {config.VocabSize}; they do not belong together.", nameof(options));
        }

        // 1. Count: one count per tokenizer id (a padded teacher's extra rows are never produced, so never kept).
        CountingOptions counting = (options.Counting ?? new CountingOptions()) with { VocabSize = tokenizerSize, Config = config, TokenizerName = tokenizerPath };
        IProgress<CountingProgress>? countingProgress = progress is null ? null : new SynchronousProgress<CountingProgress>(p => progress.Report(new ModelCompressionProgress(p, null)));
        VocabularyStatistics statistics = await TokenFrequencyCounter.ComputeAsync(tokenizer, corpusPaths, options.JsonlField, counting, countingProgress, logger, cancellationToken)
            .ConfigureAwait(false);

        // 2. Compress the tokenizer into a scratch folder next to the output, so a failed build leaves no half-made model.
        Directory.CreateDirectory(outputDirectory);
        string scratch = Path.Combine(outputDirectory, ".vocab-" + Guid.NewGuid().ToString("N"));
        try
        {
            CompressionResult compressed = await VocabularyCompressor.CompressAsync(tokenizerPath, statistics, target, scratch, logger, cancellationToken).ConfigureAwait(false);
            VocabularyMap map = compressed.Map;

            // 3. Build: keep the embedding and head rows of the kept ids in new-id order; everything else as is.
            SurgeryPlan plan = PlanBuilder.Identity(config) with { KeptTokens = map.KeptOldIds, Description = $"vocabulary compression ({target})" };
            StudentBuildOptions build = (options.Build ?? new StudentBuildOptions()) with
            {
                Tokenizer = TokenizerFolderOrFile(compressed.TokenizerPath),
                PadVocabToMultiple = options.PadVocabToMultiple,
            };
            IProgress<StudentBuildProgress>? buildProgress = progress is null ? null : new SynchronousProgress<StudentBuildProgress>(p => progress.Report(new ModelCompressionProgress(null, p)));
            StudentBuildResult built = await StudentBuilder.BuildAsync(modelDirectory, plan, outputDirectory, build, buildProgress, logger, cancellationToken).ConfigureAwait(false);

            // 4. Records for distillation and for the reader.
            string mapPath = Path.Combine(outputDirectory, VocabularyCompressor.MapFileName);
            map.Save(mapPath);
            string statisticsPath = Path.Combine(outputDirectory, StatisticsFileName);
            statistics.Save(statisticsPath);
            string chartPath = Path.Combine(outputDirectory, ChartFileName);
            statistics.SaveCoverageChart(chartPath, map.NewVocabSize, compressed.Selection.Coverage);
            return new ModelCompressionResult(map, compressed.Selection, statistics, built, LlamaTensorLayout.CountParameters(config), built.Parameters, mapPath, statisticsPath, chartPath);
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    /// <summary>A tokenizer.json or SentencePiece model is copied with its companions (the whole folder); other files alone.</summary>
    private static string TokenizerFolderOrFile(string tokenizerFile) =>
        StudentBuilder.TokenizerFileNames.Contains(Path.GetFileName(tokenizerFile)) ? Path.GetDirectoryName(tokenizerFile)! : tokenizerFile;
}
