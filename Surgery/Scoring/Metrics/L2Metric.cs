using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>LLM-Pruner's L2 magnitude: the L2 norm of each unit's weights (<see cref="ScoringMetrics.L2"/>).</summary>
public sealed class L2Metric : ILayerPassMetric
{
    /// <inheritdoc/>
    public string Name => ScoringMetrics.L2;

    /// <inheritdoc/>
    public string Description => "L2 norm of each unit's weights";

    /// <inheritdoc/>
    public MetricNeeds Needs => MetricNeeds.Weights;

    /// <inheritdoc/>
    public ScoredUnits Scores => ScoredUnits.Heads | ScoredUnits.KvGroups | ScoredUnits.Neurons | ScoredUnits.HiddenChannels;

    /// <inheritdoc/>
    public LayerPassObserver CreateObserver(MetricContext context)
    {
        ArgumentNullException.ThrowIfNull(context);

        // Squares summed in float64, the root taken once over the whole unit.
        return new WeightMagnitudeObserver(context.Config, w => w.to_type(ScalarType.Float64).pow(2), squareRoot: true);
    }
}
