using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>What to score and how.</summary>
public sealed record ScoringOptions
{
    /// <summary>Metric names from <see cref="ScoringMetrics"/>; each produces one set of scores.</summary>
    public IReadOnlyList<string> Metrics { get; init; } = [ScoringMetrics.L1];

    /// <summary>Calibration sequences per forward pass.</summary>
    public int BatchSize { get; init; } = 4;

    /// <summary>Device for the computation; null for the CPU.</summary>
    public Device? Device { get; init; }

    /// <summary>Seed of the random baseline.</summary>
    public int Seed { get; init; }

    /// <summary>The n of <c>angular-n</c> (layers spanned); <c>angular-3</c> overrides it.</summary>
    public int AngularSpan { get; init; } = 1;

    /// <summary>Optimiser steps of <c>learned-mask</c> (each one calibration batch).</summary>
    public int MaskSteps { get; init; } = 200;

    /// <summary>Adam learning rate of the gate logits.</summary>
    public double MaskLearningRate { get; init; } = 0.05;

    /// <summary>Fraction of heads, neurons and channels the sparsity penalty pushes the expected kept count toward.</summary>
    public double MaskTargetFraction { get; init; } = 0.5;

    /// <summary>Weight of the squared distance between the expected kept fraction and the target.</summary>
    public double MaskPenalty { get; init; } = 1.0;

    /// <summary>
    /// Bytes that whole-model metrics (skip-loss, taylor, learned-mask) may use; null means the memory the runtime
    /// reports as available to the process. Set it when computing on a GPU.
    /// </summary>
    public long? MemoryBudgetBytes { get; init; }

    /// <summary>Throws when an option is out of range.</summary>
    /// <exception cref="ArgumentException">The message names the option.</exception>
    public void Validate()
    {
        if (Metrics is null || Metrics.Count == 0)
        {
            throw new ArgumentException("ScoringOptions.Metrics must name at least one metric.", nameof(Metrics));
        }

        foreach (string metric in Metrics)
        {
            _ = ScoringMetrics.Get(metric);
        }

        if (BatchSize <= 0)
        {
            throw new ArgumentException($"ScoringOptions.BatchSize must be positive, got {BatchSize}.", nameof(BatchSize));
        }

        if (AngularSpan <= 0)
        {
            throw new ArgumentException($"ScoringOptions.AngularSpan must be positive, got {AngularSpan}.", nameof(AngularSpan));
        }

        if (MaskSteps <= 0 || MaskLearningRate <= 0 || MaskPenalty < 0)
        {
            throw new ArgumentException($"ScoringOptions mask settings are out of range: MaskSteps {MaskSteps} and MaskLearningRate {MaskLearningRate} must be positive, MaskPenalty {MaskPenalty} non-negative.", nameof(MaskSteps));
        }

        if (MaskTargetFraction is < 0 or > 1)
        {
            throw new ArgumentException($"ScoringOptions.MaskTargetFraction must be in [0, 1], got {MaskTargetFraction}.", nameof(MaskTargetFraction));
        }
    }
}

/// <summary>Progress of a scoring run.</summary>
/// <param name="Stage">What is running, e.g. <c>forward statistics</c> or <c>taylor</c>.</param>
/// <param name="Completed">Steps done in this stage.</param>
/// <param name="Total">Steps in this stage.</param>
public sealed record ScoringProgress(string Stage, int Completed, int Total);
