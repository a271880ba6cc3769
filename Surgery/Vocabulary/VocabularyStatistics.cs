using System.Globalization;
using System.Text.Json;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Inference.IO;

namespace ModelSurgery.Surgery.Vocabulary;

/// <summary>One point of the coverage curve.</summary>
/// <param name="VocabSize">Keep the this many most frequent tokens.</param>
/// <param name="Coverage">Fraction of all corpus tokens those tokens account for (0..1).</param>
/// <param name="EmbeddingShare">Fraction of the model's parameters in the embedding and LM head at that vocabulary size, when a config was given.</param>
public sealed record CoveragePoint(int VocabSize, double Coverage, double? EmbeddingShare);

/// <summary>
/// Token frequencies of a tokenizer over a corpus: the input to vocabulary compression. Saved as JSON; the coverage
/// curve says how much of the corpus the top-k tokens cover (PanGu-pi Pro: 48k of 100k tokens cover 97.86%).
/// </summary>
public sealed record VocabularyStatistics
{
    /// <summary>What tokenizer produced the ids (a path or name), for the record.</summary>
    public string Tokenizer { get; init; } = "";

    /// <summary>Occurrences of each token id in the corpus (index = id).</summary>
    public IReadOnlyList<long> Counts { get; init; } = [];

    /// <summary>Tokens in the corpus (sum of <see cref="Counts"/>).</summary>
    public long TotalTokens { get; init; }

    /// <summary>UTF-8 bytes of text tokenized.</summary>
    public long TotalBytes { get; init; }

    /// <summary>Documents (JSONL records or text chunks) tokenized.</summary>
    public long Documents { get; init; }

    /// <summary>Wall-clock seconds the count took.</summary>
    public double ElapsedSeconds { get; init; }

    /// <summary>Throughput: <see cref="TotalBytes"/> / 1e6 / <see cref="ElapsedSeconds"/>.</summary>
    public double MegabytesPerSecond { get; init; }

    /// <summary>The coverage curve at a spread of vocabulary sizes (with embedding shares when a config was given).</summary>
    public IReadOnlyList<CoveragePoint> CoverageCurve { get; init; } = [];

    /// <summary>Number of ids counted (the vocabulary size).</summary>
    public int VocabSize => Counts.Count;

    /// <summary>Ids seen at least once.</summary>
    public int DistinctTokensSeen => Counts.Count(c => c > 0);

    /// <summary>Fraction of corpus tokens covered by the <paramref name="k"/> most frequent ids.</summary>
    public double Coverage(int k) => CoverageOf(SortedPrefixSums(Counts), k);

    /// <summary>The smallest number of most frequent ids that cover at least <paramref name="coverage"/> of the corpus.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="coverage"/> is not in (0, 1].</exception>
    public int SizeForCoverage(double coverage)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(coverage, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(coverage, 1);
        long[] prefix = SortedPrefixSums(Counts);
        long total = prefix[^1];
        for (int k = 0; k < prefix.Length; k++)
        {
            if (total == 0 || prefix[k] >= coverage * total)
            {
                return k;
            }
        }

        return Counts.Count;
    }

    /// <summary>
    /// The coverage curve: for each size k, the fraction of corpus tokens in the k most frequent ids, and given a
    /// config, the embedding-plus-head share of parameters with vocab_size = k.
    /// </summary>
    /// <param name="counts">Occurrences per id.</param>
    /// <param name="config">The model whose parameter split to report, or null.</param>
    /// <param name="sizes">Sizes to evaluate; null picks about 100 spread from 1 to the vocabulary size.</param>
    public static IReadOnlyList<CoveragePoint> BuildCoverageCurve(IReadOnlyList<long> counts, LlamaConfig? config = null, IReadOnlyList<int>? sizes = null)
    {
        ArgumentNullException.ThrowIfNull(counts);
        long[] prefix = SortedPrefixSums(counts);
        IEnumerable<int> ks = sizes ?? (IEnumerable<int>)DefaultSizes(counts.Count);
        return [.. ks.Select(k => new CoveragePoint(k, CoverageOf(prefix, k),
            config is null ? null : LlamaTensorLayout.CountParameters(config with { VocabSize = k }).EmbeddingShare))];
    }

    /// <summary>The statistics as JSON (compact: one count per id).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Writes the statistics as JSON atomically.</summary>
    public void Save(string path) => AtomicFile.WriteAllText(path, ToJson());

    /// <summary>Reads statistics written by <see cref="Save"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not valid statistics JSON; the message names it.</exception>
    public static VocabularyStatistics Load(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<VocabularyStatistics>(File.ReadAllText(path), JsonOptions)
                ?? throw new InvalidDataException($"{path}: empty statistics file.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid vocabulary statistics ({e.Message}).", e);
        }
    }

    /// <summary>Draws <see cref="CoverageCurve"/> as a PNG: coverage (%) and, if present, the embedding share (%) against vocabulary size.</summary>
    /// <param name="path">Output PNG path.</param>
    /// <param name="keptTokens">The chosen vocabulary size, marked on the chart; null marks nothing.</param>
    /// <param name="keptCoverage">The share of the corpus the kept tokens cover (e.g. <see cref="VocabularySelection.Coverage"/>); null: that of the most frequent <paramref name="keptTokens"/>.</param>
    public void SaveCoverageChart(string path, int? keptTokens = null, double? keptCoverage = null) => Charts.Save(CoverageChart(keptTokens, keptCoverage), path);

    /// <summary>The chart <see cref="SaveCoverageChart"/> draws, before rendering.</summary>
    /// <param name="keptTokens">The chosen vocabulary size, marked as a vertical line with its coverage; null marks nothing.</param>
    /// <param name="keptCoverage">The share of the corpus the kept tokens cover; null: that of the most frequent <paramref name="keptTokens"/>.</param>
    /// <returns>The plot.</returns>
    public ScottPlot.Plot CoverageChart(int? keptTokens = null, double? keptCoverage = null)
    {
        IReadOnlyList<CoveragePoint> curve = CoverageCurve.Count > 0 ? CoverageCurve : BuildCoverageCurve(Counts);
        double[] x = [.. curve.Select(p => (double)p.VocabSize)];
        var series = new List<LineSeries> { new("corpus coverage", x, [.. curve.Select(p => p.Coverage * 100)]) };
        if (curve.All(p => p.EmbeddingShare is not null))
        {
            series.Add(new LineSeries("embedding + head share of parameters", x, [.. curve.Select(p => p.EmbeddingShare!.Value * 100)]));
        }

        ChartMarker? marker = keptTokens is int kept
            ? new ChartMarker(kept, string.Create(CultureInfo.InvariantCulture, $"kept {kept:N0} tokens: {keptCoverage ?? Coverage(kept):P1} coverage"))
            : null;
        return Charts.LinesPlot("Vocabulary coverage", "tokens kept (most frequent first)", "%", series, marker: marker);
    }

    private static SortedSet<int> DefaultSizes(int vocabSize)
    {
        var sizes = new SortedSet<int>();
        for (int i = 0; i <= 100; i++)
        {
            sizes.Add((int)Math.Round((double)vocabSize * i / 100));
        }

        for (int k = 1; k < vocabSize; k *= 2)
        {
            sizes.Add(k);
        }

        return sizes;
    }

    private static double CoverageOf(long[] prefix, int k)
    {
        long total = prefix[^1];
        return total == 0 ? 0 : (double)prefix[Math.Clamp(k, 0, prefix.Length - 1)] / total;
    }

    /// <summary>prefix[k] = occurrences of the k most frequent ids (prefix[0] = 0).</summary>
    private static long[] SortedPrefixSums(IReadOnlyList<long> counts)
    {
        long[] sorted = [.. counts.OrderDescending()];
        long[] prefix = new long[sorted.Length + 1];
        for (int i = 0; i < sorted.Length; i++)
        {
            prefix[i + 1] = prefix[i] + sorted[i];
        }

        return prefix;
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = false };
}
