namespace ModelSurgery.Surgery.Scoring;

/// <summary>Layer and unit scores that need no data: priors and baselines. Higher = more important.</summary>
public static class LayerPriors
{
    /// <summary>
    /// PanGu-π Pro's position prior: the first and last layers matter most and the middle least; layer l scores
    /// |l - (L-1)/2| / ((L-1)/2), i.e. 1 at both ends and 0 in the middle.
    /// </summary>
    public static double[] PositionPrior(int layers)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layers);
        if (layers == 1)
        {
            return [1.0];
        }

        double middle = (layers - 1) / 2.0;
        return [.. Enumerable.Range(0, layers).Select(l => Math.Abs(l - middle) / middle)];
    }

    /// <summary>
    /// Uniform-stride scores: keeping the k highest-scoring layers keeps layers spread evenly over the depth for every k.
    /// The order is farthest-point: both ends first, then repeatedly the layer farthest from those already kept (lower
    /// index on ties); the i-th layer chosen scores L - i.
    /// </summary>
    public static double[] UniformStride(int layers)
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

    /// <summary>Uniform random scores in [0, 1) from <paramref name="random"/> (seed it for reproducible baselines).</summary>
    public static double[] Random(int count, Random random)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentNullException.ThrowIfNull(random);
        return [.. Enumerable.Range(0, count).Select(_ => random.NextDouble())];
    }
}
