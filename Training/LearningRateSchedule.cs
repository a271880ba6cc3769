namespace ModelSurgery.Training;

/// <summary>
/// Linear warmup then cosine decay to a floor, as a pure function of the step:
/// for step s of S with W = round(warmupFraction * S) warmup steps,
/// lr(s) = peak * (s + 1) / W while s &lt; W, then min + (peak - min) * (1 + cos(pi * p)) / 2 with
/// p = (s - W) / max(1, S - 1 - W), so the first post-warmup step is at the peak and the last step is at the minimum.
/// </summary>
/// <param name="PeakLearningRate">Learning rate reached at the end of warmup.</param>
/// <param name="MinLearningRate">Learning rate at the last step.</param>
/// <param name="TotalSteps">Steps in the run.</param>
/// <param name="WarmupSteps">Linear warmup steps.</param>
public sealed record LearningRateSchedule(double PeakLearningRate, double MinLearningRate, long TotalSteps, long WarmupSteps)
{
    /// <summary>Builds the schedule of a run.</summary>
    /// <param name="options">Learning rates and warmup fraction.</param>
    /// <param name="totalSteps">Steps in the run.</param>
    /// <returns>The schedule.</returns>
    public static LearningRateSchedule For(TrainingOptions options, long totalSteps)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(totalSteps);
        return new LearningRateSchedule(options.LearningRate, options.MinLearningRate, totalSteps, (long)Math.Round(options.WarmupFraction * totalSteps));
    }

    /// <summary>The learning rate of step <paramref name="step"/> (0-based).</summary>
    /// <param name="step">Step index.</param>
    /// <returns>The learning rate.</returns>
    public double At(long step)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        if (step < WarmupSteps)
        {
            return PeakLearningRate * (step + 1) / WarmupSteps;
        }

        double progress = Math.Min(1.0, (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - 1 - WarmupSteps));
        return MinLearningRate + ((PeakLearningRate - MinLearningRate) * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }
}

/// <summary>Learning-rate rules when the batch size changes.</summary>
public static class LearningRateScaling
{
    /// <summary>
    /// Square-root scaling (the rule PanGu-pi Pro uses): with Adam the gradient noise falls with the square root of the
    /// batch size, so a batch <c>b</c> times as large tolerates a learning rate <c>sqrt(b)</c> times as large:
    /// lr = lr0 * sqrt(b / b0).
    /// </summary>
    /// <param name="baseLearningRate">lr0, tuned at batch size <paramref name="baseBatchSize"/>.</param>
    /// <param name="baseBatchSize">b0 (in windows or tokens, as long as both sizes use the same unit).</param>
    /// <param name="batchSize">b, the new batch size.</param>
    /// <returns>lr0 * sqrt(b / b0).</returns>
    public static double ScaleForBatch(double baseLearningRate, double baseBatchSize, double batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(baseBatchSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        return baseLearningRate * Math.Sqrt(batchSize / baseBatchSize);
    }
}
