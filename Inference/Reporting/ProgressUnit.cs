namespace ModelSurgery.Inference.Reporting;

/// <summary>What a progress count counts, so a report reads as "2,500/10,000 steps" or "12.3/45.6 MB".</summary>
public enum ProgressUnit
{
    /// <summary>Steps of a loop: training steps, scoring batches or layers, recipe steps.</summary>
    Steps,

    /// <summary>Tokens.</summary>
    Tokens,

    /// <summary>Bytes (shown in MB).</summary>
    Bytes,

    /// <summary>Documents of a corpus.</summary>
    Documents,

    /// <summary>Evaluation examples.</summary>
    Examples,

    /// <summary>Tensors of a checkpoint.</summary>
    Tensors,

    /// <summary>Token windows (training sequences).</summary>
    Windows,

    /// <summary>Scoring requests (log-likelihood requests of an evaluation).</summary>
    Requests,
}
