using Microsoft.Extensions.Logging;

namespace ModelSurgery.Training;

/// <summary>Log messages of the training assembly.</summary>
internal static partial class TrainingLog
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Resumed from {StatePath} at step {Step} of {TotalSteps}.")]
    public static partial void Resumed(ILogger logger, string statePath, long step, long totalSteps);

    [LoggerMessage(Level = LogLevel.Information, Message = "Training {TotalSteps} steps of {TokensPerStep} tokens ({Decay} decayed and {NoDecay} undecayed parameter tensors).")]
    public static partial void Starting(ILogger logger, long totalSteps, long tokensPerStep, int decay, int noDecay);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Step {Step}: non-finite loss {Loss} or gradient norm {GradNorm}; update skipped ({Count} in a row).")]
    public static partial void SkippedStep(ILogger logger, long step, double loss, double gradNorm, int count);

    [LoggerMessage(Level = LogLevel.Information, Message = "Step {Step}: validation loss {ValidationLoss:F4}.")]
    public static partial void Evaluated(ILogger logger, long step, double validationLoss);

    [LoggerMessage(Level = LogLevel.Information, Message = "Step {Step}/{TotalSteps}: loss {Loss:F4}, lr {LearningRate:E3}, {TokensPerSecond:F0} tokens/s, ETA {Eta}.")]
    public static partial void StepDone(ILogger logger, long step, long totalSteps, double loss, double learningRate, double tokensPerSecond, string eta);

    [LoggerMessage(Level = LogLevel.Information, Message = "Saved training state at step {Step} to {Directory}.")]
    public static partial void Saved(ILogger logger, long step, string directory);

    [LoggerMessage(Level = LogLevel.Debug, Message = "The C allocator keeps freed memory in the process from now on (process-wide; TrainingOptions.KeepFreedMemoryInProcess = false leaves it alone); {Arenas}.")]
    public static partial void KeptFreedMemoryInProcess(ILogger logger, string arenas);

    [LoggerMessage(Level = LogLevel.Information, Message = "OMP_WAIT_POLICY is not set, so idle OpenMP workers spin; on cores shared with other busy processes that slows training several times. Call CpuThreading.PreferPassiveWaiting() first thing in the program or set OMP_WAIT_POLICY=PASSIVE.")]
    public static partial void SpinningOpenMpWorkers(ILogger logger);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Every training step faults in {MiB} MiB of fresh memory ({Faults} page faults): the C allocator maps blocks of 64 MiB or more that threads other than the main one ask for afresh and unmaps them when freed. Start the process with MALLOC_ARENA_MAX=1 (glibc reads it only at start) or call NativeAllocator.RestartOnOneArena() first thing in Main; the quickstart's teacher trained 4 times faster with it.")]
    public static partial void StepsMapFreshMemory(ILogger logger, long miB, long faults);

    [LoggerMessage(Level = LogLevel.Information, Message = "Round {Round}: scanned {Batches} batches (mean loss {MeanLoss:F4}), selected {Selected}.")]
    public static partial void RoundSelected(ILogger logger, int round, int batches, double meanLoss, int selected);
}
