namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>PanGu-π Pro's layer prior (<see cref="ScoringMetrics.PositionPrior"/>): the first and last layers matter most, the middle least.</summary>
public sealed class PositionPriorMetric : IArchitectureMetric
{
    /// <inheritdoc/>
    public string Name => ScoringMetrics.PositionPrior;

    /// <inheritdoc/>
    public string Description => "first and last layers highest, middle lowest";

    /// <inheritdoc/>
    public MetricNeeds Needs => MetricNeeds.None;

    /// <inheritdoc/>
    public ScoredUnits Scores => ScoredUnits.Layers;

    /// <summary>Layer l of <paramref name="layers"/> scores |l - (L-1)/2| / ((L-1)/2): 1 at both ends, 0 in the middle.</summary>
    public static double[] LayerScores(int layers)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layers);
        if (layers == 1)
        {
            return [1.0];
        }

        double middle = (layers - 1) / 2.0;
        return [.. Enumerable.Range(0, layers).Select(l => Math.Abs(l - middle) / middle)];
    }

    /// <inheritdoc/>
    public UnitScores Score(MetricContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return new UnitScores { Layers = LayerScores(context.Config.NumHiddenLayers) };
    }
}
