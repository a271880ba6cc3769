namespace ModelSurgery.Surgery.Scoring;

/// <summary>Scores of one metric as plain arrays (higher = more important); components a metric does not produce are null.</summary>
public sealed record UnitScores
{
    /// <summary>Per layer, [L].</summary>
    public double[]? Layers { get; init; }

    /// <summary>Per query head, [L][H].</summary>
    public double[][]? Heads { get; init; }

    /// <summary>Per KV group, [L][KV].</summary>
    public double[][]? KvGroups { get; init; }

    /// <summary>Per FFN neuron, [L][F].</summary>
    public double[][]? Neurons { get; init; }

    /// <summary>Per hidden channel, [D].</summary>
    public double[]? Channels { get; init; }
}
