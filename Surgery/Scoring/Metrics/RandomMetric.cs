using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>Seeded uniform random scores for every unit (<see cref="ScoringMetrics.Random"/>): the baseline every metric should beat.</summary>
public sealed class RandomMetric : IArchitectureMetric
{
    /// <inheritdoc/>
    public string Name => ScoringMetrics.Random;

    /// <inheritdoc/>
    public string Description => "seeded uniform random scores";

    /// <inheritdoc/>
    public MetricNeeds Needs => MetricNeeds.None;

    /// <inheritdoc/>
    public ScoredUnits Scores => ScoredUnits.Layers | ScoredUnits.Heads | ScoredUnits.KvGroups | ScoredUnits.Neurons | ScoredUnits.HiddenChannels;

    /// <summary>Uniform random scores in [0, 1) for every unit of <paramref name="config"/> (the same seed gives the same scores).</summary>
    public static UnitScores Generate(LlamaConfig config, int seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        var random = new Random(seed);
        int layers = config.NumHiddenLayers;
        return new UnitScores
        {
            Layers = Uniform(layers, random),
            Heads = [.. Enumerable.Range(0, layers).Select(_ => Uniform(config.NumAttentionHeads, random))],
            KvGroups = [.. Enumerable.Range(0, layers).Select(_ => Uniform(config.NumKeyValueHeads, random))],
            Neurons = [.. Enumerable.Range(0, layers).Select(_ => Uniform(config.IntermediateSize, random))],
            Channels = Uniform(config.HiddenSize, random),
        };
    }

    /// <inheritdoc/>
    public UnitScores Score(MetricContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return Generate(context.Config, context.Options.Seed);
    }

    private static double[] Uniform(int count, Random random) => [.. Enumerable.Range(0, count).Select(_ => random.NextDouble())];
}
