namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>Uniform stride (<see cref="ScoringMetrics.Uniform"/>): keeping the top-k layers keeps layers spread evenly over the depth, for every k.</summary>
public sealed class UniformStrideMetric : IArchitectureMetric
{
    /// <inheritdoc/>
    public string Name => ScoringMetrics.Uniform;

    /// <inheritdoc/>
    public string Description => "uniform stride over the depth";

    /// <inheritdoc/>
    public MetricNeeds Needs => MetricNeeds.None;

    /// <inheritdoc/>
    public ScoredUnits Scores => ScoredUnits.Layers;

    /// <summary>
    /// Farthest-point order over <paramref name="layers"/> layers: both ends first, then repeatedly the layer farthest from
    /// those already chosen (lower index on ties); the i-th layer chosen scores L - i.
    /// </summary>
    public static double[] LayerScores(int layers)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layers);
        var scores = new double[layers];
        var chosen = new List<int> { 0 };
        if (layers > 1)
        {
            chosen.Add(layers - 1);
        }

        while (chosen.Count < layers)
        {
            int best = -1, bestDistance = -1;
            for (int l = 0; l < layers; l++)
            {
                if (chosen.Contains(l))
                {
                    continue;
                }

                int distance = chosen.Min(c => Math.Abs(c - l));
                if (distance > bestDistance)
                {
                    best = l;
                    bestDistance = distance;
                }
            }

            chosen.Add(best);
        }

        for (int i = 0; i < chosen.Count; i++)
        {
            scores[chosen[i]] = layers - i;
        }

        return scores;
    }

    /// <inheritdoc/>
    public UnitScores Score(MetricContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return new UnitScores { Layers = LayerScores(context.Config.NumHiddenLayers) };
    }
}
