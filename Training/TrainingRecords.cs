using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Training;

/// <summary>Progress after each optimizer step.</summary>
/// <param name="Completed">Steps completed (1-based: the step just finished).</param>
/// <param name="Total">Steps in the run.</param>
/// <param name="Loss">Mean training loss of the step (NaN or infinite when the step was skipped).</param>
/// <param name="LearningRate">Learning rate used by the step.</param>
/// <param name="GradNorm">Global gradient L2 norm before clipping.</param>
/// <param name="TokensPerSecond">Training tokens per second since this run (or resumption) started.</param>
/// <param name="Eta">Estimated time to the last step (<see cref="ProgressEta"/>; zero before a rate is known).</param>
/// <param name="Skipped">True when the step had a non-finite loss or gradient and the update was not applied.</param>
/// <param name="ValidationLoss">Validation loss when this step evaluated, else null.</param>
public sealed record TrainingProgress(
    long Completed, long? Total, double Loss, double LearningRate, double GradNorm, double TokensPerSecond, TimeSpan Eta, bool Skipped, double? ValidationLoss) : IProgressReport
{
    /// <summary>Always <see cref="ProgressUnit.Steps"/>.</summary>
    public ProgressUnit Unit => ProgressUnit.Steps;

    /// <summary>Loss, learning rate, throughput and the validation loss when there was one, e.g. <c>loss 2.3456 lr 3.00E-004 1234 tokens/s</c>.</summary>
    public string Status => string.Create(
        System.Globalization.CultureInfo.InvariantCulture,
        $"loss {Loss:F4} lr {LearningRate:E2} {TokensPerSecond:F0} tokens/s{(ValidationLoss is { } v ? $" val {v:F4}" : string.Empty)}{(Skipped ? " skipped" : string.Empty)}");
}

/// <summary>One optimizer step as recorded in the metrics log.</summary>
/// <param name="Step">Step number (1-based).</param>
/// <param name="Loss">Mean training loss.</param>
/// <param name="LearningRate">Learning rate used.</param>
/// <param name="GradNorm">Gradient norm before clipping.</param>
/// <param name="Skipped">Whether the update was skipped.</param>
public sealed record StepRecord(long Step, double Loss, double LearningRate, double GradNorm, bool Skipped);

/// <summary>One evaluation as recorded in the metrics log.</summary>
/// <param name="Step">Step after which the evaluation ran.</param>
/// <param name="ValidationLoss">Mean validation cross-entropy.</param>
public sealed record EvalRecord(long Step, double ValidationLoss);

/// <summary>Outcome of <see cref="Trainer.TrainAsync"/>.</summary>
/// <param name="Steps">Steps completed (the run's total).</param>
/// <param name="History">Every step of the run, resumed steps included.</param>
/// <param name="Evaluations">Every evaluation of the run.</param>
/// <param name="BestValidationLoss">Lowest validation loss seen, or null when there was no validation data.</param>
/// <param name="OutputDir">Where checkpoints, state, metrics and charts were written.</param>
public sealed record TrainingResult(long Steps, IReadOnlyList<StepRecord> History, IReadOnlyList<EvalRecord> Evaluations, double? BestValidationLoss, string OutputDir)
{
    /// <summary>Loss of the last step.</summary>
    public double FinalLoss => History.Count == 0 ? double.NaN : History[^1].Loss;
}

/// <summary>Training stopped because too many steps in a row had a non-finite loss or gradient.</summary>
public sealed class TrainingDivergedException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public TrainingDivergedException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    /// <param name="message">What happened.</param>
    public TrainingDivergedException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and cause.</summary>
    /// <param name="message">What happened.</param>
    /// <param name="innerException">The cause.</param>
    public TrainingDivergedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>A resumed run's options differ from those recorded in the training state it resumes.</summary>
public sealed class ResumeMismatchException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="option">The <see cref="TrainingOptions"/> property (or "Data", "DataTokens") that differs.</param>
    /// <param name="message">The message, naming the option and both values.</param>
    public ResumeMismatchException(string option, string message)
        : base(message)
    {
        Option = option;
    }

    /// <summary>Creates the exception.</summary>
    public ResumeMismatchException()
    {
        Option = string.Empty;
    }

    /// <summary>Creates the exception.</summary>
    public ResumeMismatchException(string message)
        : base(message)
    {
        Option = string.Empty;
    }

    /// <summary>Creates the exception.</summary>
    public ResumeMismatchException(string message, Exception innerException)
        : base(message, innerException)
    {
        Option = string.Empty;
    }

    /// <summary>The option that differs.</summary>
    public string Option { get; }
}
