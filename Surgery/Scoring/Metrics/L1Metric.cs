using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>LLM-Pruner's L1 magnitude: the sum of |w| over each unit's weights (<see cref="ScoringMetrics.L1"/>).</summary>
public sealed class L1Metric : ILayerPassMetric
{
    /// <inheritdoc/>
    public string Name => ScoringMetrics.L1;

    /// <inheritdoc/>
    public string Description => "sum of |w| over each unit's weights";

    /// <inheritdoc/>
    public MetricNeeds Needs => MetricNeeds.Weights;

    /// <inheritdoc/>
    public ScoredUnits Scores => ScoredUnits.Heads | ScoredUnits.KvGroups | ScoredUnits.Neurons | ScoredUnits.HiddenChannels;

    /// <inheritdoc/>
    public LayerPassObserver CreateObserver(MetricContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return new WeightMagnitudeObserver(context.Config, w => w.abs(), squareRoot: false);
    }
}
