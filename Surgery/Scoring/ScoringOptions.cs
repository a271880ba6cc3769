using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Inference.Runtime;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// The scoring stage's options: what to score, on how much calibration text, and how. The command line's <c>score</c>
/// options and a recipe's <c>scoring</c> section are this record (JSON keys in snake_case, e.g. <c>batch_size</c>).
/// </summary>
public sealed record ScoringOptions
{
    /// <summary>Metric names from <see cref="ScoringMetrics"/>; each produces one set of scores (key <c>metrics</c>).</summary>
    public IReadOnlyList<string> Metrics { get; init; } = [ScoringMetrics.L2, ScoringMetrics.BlockInfluence];

    /// <summary>Calibration windows drawn from the token stream (key <c>calibration_sequences</c>).</summary>
    public int CalibrationSequences { get; init; } = 64;

    /// <summary>Tokens per calibration window (key <c>calibration_length</c>).</summary>
    public int CalibrationLength { get; init; } = 256;

    /// <summary>Calibration sequences per forward pass (key <c>batch_size</c>).</summary>
    public int BatchSize { get; init; } = 4;

    /// <summary>Device for the computation: <c>auto</c> (CUDA when the loaded backend has it, else the CPU), <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c> (key <c>device</c>).</summary>
    public string Device { get; init; } = "auto";

    /// <summary>Seed of the calibration windows and of the random baseline (key <c>seed</c>).</summary>
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
    /// reports as available to the process on the CPU, and on a GPU <c>MemoryPreflight.Limit</c> or, without one, no
    /// check (GPU memory cannot be queried). Set it when computing on a GPU.
    /// </summary>
    public long? MemoryBudgetBytes { get; init; }

    /// <summary>Every problem of the options, each starting with the key of the option at fault (e.g. <c>batch_size</c>).</summary>
    /// <param name="name">Maps a key to the caller's name for it (a command-line option, a recipe field); null uses the keys.</param>
    /// <returns>The problems; empty when the options are valid.</returns>
    public IReadOnlyList<string> Validate(Func<string, string>? name = null)
    {
        var problems = new OptionProblems(name);

        problems.Check(Metrics is { Count: > 0 }, "metrics", "give at least one metric");
        foreach (string metric in Metrics ?? [])
        {
            if (!ScoringMetrics.TryGet(metric, out _))
            {
                problems.Add("metrics", $"unknown metric '{metric}' (known: {string.Join(", ", ScoringMetrics.All.Select(m => m.Name))})");
            }
        }

        problems.Check(CalibrationSequences >= 1, "calibration_sequences", $"must be at least 1, got {CalibrationSequences}");
        problems.Check(CalibrationLength >= 2, "calibration_length", $"must be at least 2, got {CalibrationLength}");
        problems.Check(BatchSize >= 1, "batch_size", $"must be at least 1, got {BatchSize}");
        problems.Check(ComputeDevice.IsValidName(Device), "device", $"'{Device}' is not auto, cpu, cuda or cuda:N");
        problems.Check(AngularSpan >= 1, "angular_span", $"must be at least 1, got {AngularSpan}");
        problems.Check(MaskSteps >= 1, "mask_steps", $"must be at least 1, got {MaskSteps}");
        problems.Check(MaskLearningRate > 0 && double.IsFinite(MaskLearningRate), "mask_learning_rate", $"must be a positive number, got {Format(MaskLearningRate)}");
        problems.Check(MaskTargetFraction is >= 0 and <= 1, "mask_target_fraction", $"must be in [0, 1], got {Format(MaskTargetFraction)}");
        problems.Check(MaskPenalty >= 0 && double.IsFinite(MaskPenalty), "mask_penalty", $"must be a non-negative number, got {Format(MaskPenalty)}");
        problems.Check(MemoryBudgetBytes is null or > 0, "memory_budget_bytes", $"must be positive, got {MemoryBudgetBytes}");
        return problems.List;
    }

    /// <summary>Throws when an option is out of range.</summary>
    /// <exception cref="ArgumentException">Every problem, each naming its option.</exception>
    public void ThrowIfInvalid()
    {
        OptionProblems.ThrowIfAny(Validate(key => "ScoringOptions." + key));
    }

    private static string Format(double value) => value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>Progress of a scoring run.</summary>
/// <param name="Stage">What is running, e.g. <c>forward statistics</c> or <c>taylor</c>.</param>
/// <param name="Completed">Steps done in this stage.</param>
/// <param name="Total">Steps in this stage.</param>
public sealed record ScoringProgress(string Stage, long Completed, long? Total) : IProgressReport
{
    /// <summary>Always <see cref="ProgressUnit.Steps"/> (batches or layers).</summary>
    public ProgressUnit Unit => ProgressUnit.Steps;

    /// <summary>The stage.</summary>
    public string Status => Stage;
}
