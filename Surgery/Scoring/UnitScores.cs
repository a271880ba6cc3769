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

/// <summary>What one pass of <see cref="CalibrationRunner"/> collects.</summary>
public sealed record ForwardRequest
{
    /// <summary>Weight magnitudes (<c>l1</c>, <c>l2</c>).</summary>
    public bool Magnitudes { get; init; }

    /// <summary>Minitron activation magnitudes (<c>activation</c>).</summary>
    public bool Activations { get; init; }

    /// <summary>Wanda scores (<c>wanda</c>).</summary>
    public bool Wanda { get; init; }

    /// <summary>Block Influence per layer (<c>block-influence</c>).</summary>
    public bool BlockInfluence { get; init; }

    /// <summary>Spans n of the angular distances to measure (<c>angular-n</c>).</summary>
    public IReadOnlyList<int> AngularSpans { get; init; } = [];

    /// <summary>Whether anything needs calibration data run through the model.</summary>
    public bool NeedsForward => Activations || Wanda || BlockInfluence || AngularSpans.Count > 0;
}

/// <summary>The results of one <see cref="CalibrationRunner"/> pass; each is null unless requested.</summary>
public sealed record ForwardResults
{
    /// <summary>L1 magnitudes.</summary>
    public UnitScores? L1 { get; init; }

    /// <summary>L2 magnitudes.</summary>
    public UnitScores? L2 { get; init; }

    /// <summary>Mean activation magnitudes.</summary>
    public UnitScores? Activation { get; init; }

    /// <summary>Wanda scores.</summary>
    public UnitScores? Wanda { get; init; }

    /// <summary>Block Influence per layer, [L].</summary>
    public double[]? BlockInfluence { get; init; }

    /// <summary>Angular distance of each window [l, l + n) for each requested span n, [L - n + 1].</summary>
    public IReadOnlyDictionary<int, double[]> AngularDistances { get; init; } = new Dictionary<int, double[]>();
}
