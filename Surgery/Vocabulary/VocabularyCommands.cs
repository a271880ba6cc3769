using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Surgery.Vocabulary;

/// <summary>
/// File-in, file-out entry points for command-line tools (<c>vocab stats</c>, <c>vocab compress</c>): each loads its
/// inputs, runs <see cref="TokenFrequencyCounter"/> or <see cref="VocabularyCompressor"/>, and writes the results.
/// </summary>
public static class VocabularyCommands
{
    /// <summary>
    /// <c>vocab stats</c>: counts token frequencies of the tokenizer at <paramref name="tokenizerPath"/> over the corpus
    /// and writes the statistics JSON and, optionally, the coverage chart PNG.
    /// </summary>
    /// <param name="tokenizerPath">Tokenizer file, folder, or <c>gpt2</c>.</param>
    /// <param name="corpusPaths">Files, folders or glob patterns (JSONL or plain text).</param>
    /// <param name="statisticsPath">Where to write the statistics JSON.</param>
    /// <param name="jsonlField">The text field of JSONL records (default <c>text</c>).</param>
    /// <param name="chartPath">Where to write the coverage chart PNG, or null.</param>
    /// <param name="configPath">A model's config.json, to chart the embedding share along the curve, or null.</param>
    /// <param name="progress">Receives counting progress.</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="cancellationToken">Stops the work.</param>
    public static async Task<VocabularyStatistics> StatsAsync(string tokenizerPath, IEnumerable<string> corpusPaths, string statisticsPath,
        string? jsonlField = null, string? chartPath = null, string? configPath = null, IProgress<CountingProgress>? progress = null,
        ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(statisticsPath);
        ModelTokenizer tokenizer = TokenizerFiles.Load(tokenizerPath);
        var options = new CountingOptions
        {
            TokenizerName = tokenizerPath,
            Config = configPath is null ? null : LlamaConfig.Load(configPath),
        };
        VocabularyStatistics statistics = await TokenFrequencyCounter.ComputeAsync(tokenizer, corpusPaths, jsonlField, options, progress, logger, cancellationToken)
            .ConfigureAwait(false);
        statistics.Save(statisticsPath);
        if (chartPath is not null)
        {
            statistics.SaveCoverageChart(chartPath);
        }

        return statistics;
    }

    /// <summary>
    /// <c>vocab compress</c>: compresses the tokenizer with the statistics JSON written by <see cref="StatsAsync"/> and
    /// writes the compressed tokenizer (same format) and <c>vocab_map.json</c> into <paramref name="outputDirectory"/>.
    /// </summary>
    /// <param name="tokenizerPath">Tokenizer file, folder, or <c>gpt2</c>.</param>
    /// <param name="statisticsPath">Statistics JSON for that tokenizer.</param>
    /// <param name="target">How many tokens, or how much coverage, to keep.</param>
    /// <param name="outputDirectory">Where to write.</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="cancellationToken">Stops the work.</param>
    public static Task<CompressionResult> CompressAsync(string tokenizerPath, string statisticsPath, CompressionTarget target, string outputDirectory,
        ILogger? logger = null, CancellationToken cancellationToken = default) =>
        VocabularyCompressor.CompressAsync(tokenizerPath, VocabularyStatistics.Load(statisticsPath), target, outputDirectory, logger, cancellationToken);
}
