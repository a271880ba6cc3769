namespace ModelSurgery.Inference.Reporting;

/// <summary>
/// What every progress record of the library says, under the same names: how much is done, of how much, in which unit,
/// and a short status. A host draws any of them with one renderer; each record adds its own domain fields (a loss, a
/// running perplexity) beside these.
/// </summary>
public interface IProgressReport
{
    /// <summary>Units done so far (in <see cref="Unit"/>).</summary>
    long Completed { get; }

    /// <summary>Units in all, or null when not known in advance (never 0 as a stand-in for unknown).</summary>
    long? Total { get; }

    /// <summary>What <see cref="Completed"/> and <see cref="Total"/> count.</summary>
    ProgressUnit Unit { get; }

    /// <summary>A short human-readable status (the stage, the file, the current loss), or null for none.</summary>
    string? Status { get; }
}
