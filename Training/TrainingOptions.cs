namespace ModelSurgery.Training;

/// <summary>Numeric precision of the forward and backward passes.</summary>
public enum TrainingPrecision
{
    /// <summary>Everything in float32.</summary>
    Fp32,

    /// <summary>
    /// Model weights and activations in bfloat16, with a float32 master copy of every weight that the optimizer
    /// updates (the update is copied back to the bfloat16 weights after each step).
    /// </summary>
    Bf16,
}

/// <summary>
/// Hyper-parameters of one training run. Defaults follow the PanGu-pi Pro recipe: AdamW with betas (0.9, 0.95), weight
/// decay 0.1 (not on norms and biases), cosine schedule with 3% warmup down to 1e-5, gradient clipping at 1.0.
/// </summary>
public sealed record TrainingOptions
{
    /// <summary>Peak learning rate (after warmup). Use <see cref="LearningRateScaling.ScaleForBatch"/> when changing the batch size.</summary>
    public double LearningRate { get; init; } = 3e-4;

    /// <summary>Learning rate at the end of the cosine decay.</summary>
    public double MinLearningRate { get; init; } = 1e-5;

    /// <summary>Share of the steps spent in linear warmup.</summary>
    public double WarmupFraction { get; init; } = 0.03;

    /// <summary>AdamW first-moment decay.</summary>
    public double Beta1 { get; init; } = 0.9;

    /// <summary>AdamW second-moment decay.</summary>
    public double Beta2 { get; init; } = 0.95;

    /// <summary>AdamW epsilon.</summary>
    public double Epsilon { get; init; } = 1e-8;

    /// <summary>Decoupled weight decay, applied to every weight except norms and biases.</summary>
    public double WeightDecay { get; init; } = 0.1;

    /// <summary>Maximum global L2 norm of the gradient; 0 disables clipping.</summary>
    public double GradClip { get; init; } = 1.0;

    /// <summary>Windows per micro-batch (B).</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>Inputs per window (T).</summary>
    public int SeqLen { get; init; } = 512;

    /// <summary>Micro-batches accumulated per optimizer step.</summary>
    public int GradAccumulation { get; init; } = 1;

    /// <summary>Optimizer steps; when null, derived from <see cref="Tokens"/>.</summary>
    public long? Steps { get; init; }

    /// <summary>Training tokens (inputs) to consume; used when <see cref="Steps"/> is null.</summary>
    public long? Tokens { get; init; }

    /// <summary>Evaluate on validation windows every this many steps (0: only at the end).</summary>
    public int EvalEvery { get; init; } = 100;

    /// <summary>Validation batches per evaluation (taken in order, so every evaluation sees the same data).</summary>
    public int EvalBatches { get; init; } = 8;

    /// <summary>Seed of data order and of torch's generator.</summary>
    public ulong Seed { get; init; } = 1234;

    /// <summary>Steps in a row with a non-finite loss or gradient after which training stops.</summary>
    public int MaxNonFiniteSteps { get; init; } = 10;

    /// <summary>Compute precision.</summary>
    public TrainingPrecision Precision { get; init; } = TrainingPrecision.Fp32;

    /// <summary>Folder for checkpoints, training state, metrics and charts.</summary>
    public string OutputDir { get; init; } = "training-output";

    /// <summary>Save the last checkpoint and training state every this many steps (0: only at the end or on cancellation).</summary>
    public int CheckpointEvery { get; init; } = 500;

    /// <summary>
    /// Whether training sets the C allocator to keep freed memory in the process
    /// (<see cref="Inference.Runtime.NativeAllocator.KeepFreedMemoryInProcess"/>): on Linux it makes steps several times
    /// faster, but it changes the whole process and keeps its peak heap. True by default, since a training run is usually
    /// the process's main work; false leaves the allocator settings of a host application (a server with other work) as
    /// they are.
    /// </summary>
    public bool KeepFreedMemoryInProcess { get; init; } = true;

    /// <summary>Tokens consumed per optimizer step.</summary>
    public long TokensPerStep => (long)BatchSize * SeqLen * GradAccumulation;

    /// <summary>The number of optimizer steps this run takes.</summary>
    /// <returns>Positive step count.</returns>
    public long TotalSteps()
    {
        Validate();
        return Steps ?? ((Tokens!.Value + TokensPerStep - 1) / TokensPerStep);
    }

    /// <summary>Checks every option and names the one that is wrong.</summary>
    public void Validate()
    {
        Require(LearningRate > 0 && double.IsFinite(LearningRate), nameof(LearningRate), "must be positive");
        Require(MinLearningRate >= 0 && MinLearningRate <= LearningRate, nameof(MinLearningRate), "must be in [0, LearningRate]");
        Require(WarmupFraction >= 0 && WarmupFraction < 1, nameof(WarmupFraction), "must be in [0, 1)");
        Require(Beta1 >= 0 && Beta1 < 1, nameof(Beta1), "must be in [0, 1)");
        Require(Beta2 >= 0 && Beta2 < 1, nameof(Beta2), "must be in [0, 1)");
        Require(WeightDecay >= 0, nameof(WeightDecay), "must not be negative");
        Require(GradClip >= 0, nameof(GradClip), "must not be negative");
        Require(BatchSize > 0, nameof(BatchSize), "must be positive");
        Require(SeqLen > 0, nameof(SeqLen), "must be positive");
        Require(GradAccumulation > 0, nameof(GradAccumulation), "must be positive");
        Require(Steps is > 0 || (Steps is null && Tokens is > 0), nameof(Steps), "or Tokens must be set to a positive value");
        Require(EvalEvery >= 0, nameof(EvalEvery), "must not be negative");
        Require(EvalBatches >= 0, nameof(EvalBatches), "must not be negative");
        Require(MaxNonFiniteSteps > 0, nameof(MaxNonFiniteSteps), "must be positive");
        Require(CheckpointEvery >= 0, nameof(CheckpointEvery), "must not be negative");
        Require(!string.IsNullOrWhiteSpace(OutputDir), nameof(OutputDir), "must be set");
    }

    private static void Require(bool condition, string option, string what)
    {
        if (!condition)
        {
            throw new ArgumentException($"Training option {option} {what}.", option);
        }
    }
}
