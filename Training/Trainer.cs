using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Training.Data;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ModelSurgery.Training;

/// <summary>
/// Trains a causal language model (ids [B, T] to logits [B, T, V]) with AdamW, warmup plus cosine schedule, gradient
/// accumulation and clipping, skipping non-finite steps, periodic evaluation, checkpoints and metrics.
/// <para>
/// Output folder layout: <c>checkpoints/last/</c> (model through the checkpointer plus <c>training-state.bin</c>),
/// <c>checkpoints/best/</c> (model with the lowest validation loss), <c>metrics.jsonl</c>, <c>metrics.csv</c> and
/// <c>loss.png</c>. The training state holds the float32 weights, optimizer moments, step, torch generator state and
/// data cursor, so a resumed run continues bit for bit (on CPU float32).
/// </para>
/// <para>
/// bf16: TorchSharp has no usable autocast on CPU, so <see cref="TrainingPrecision.Bf16"/> converts the model to
/// bfloat16 for the forward and backward passes and keeps a float32 master copy of every weight; the optimizer updates
/// the master copy from float32 gradients and the result is rounded back into the bfloat16 weights.
/// </para>
/// </summary>
public sealed class Trainer
{
    /// <summary>Name of the training state file inside <c>checkpoints/last</c>.</summary>
    public const string StateFileName = "training-state.bin";

    // Version 2: the run's options follow the magic, and a SHA-256 of everything before it ends the file.
    private static ReadOnlySpan<byte> StateMagic => "MSTRAIN2"u8;

    private static ReadOnlySpan<byte> OldStateMagic => "MSTRAIN1"u8;

    private const int ChecksumLength = 32;

    // The longest a run goes without a step line in the log.
    private static readonly TimeSpan StepLogInterval = TimeSpan.FromSeconds(30);

    // A run trained in segments chooses its windows through a callback the state cannot hold, so it is not resumable.
    private static ReadOnlySpan<byte> SegmentedStateMagic => "MSTRAINS"u8;

    private readonly nn.Module<Tensor, Tensor> _model;
    private readonly TrainingOptions _options;
    private readonly ITrainingObjective _objective;
    private readonly IModelCheckpointer? _checkpointer;
    private readonly ILogger _logger;

    // The token file of the current run, recorded in the state so a resume on other data is refused.
    private TokenFile? _dataFile;

    /// <summary>Creates a trainer.</summary>
    /// <param name="model">The model to train, in place (converted to bfloat16 when <see cref="TrainingOptions.Precision"/> asks).</param>
    /// <param name="options">Hyper-parameters and output folder.</param>
    /// <param name="objective">The loss; default next-token cross-entropy.</param>
    /// <param name="checkpointer">Writes model checkpoints; when null only the training state is written.</param>
    /// <param name="logger">Optional logger.</param>
    public Trainer(
        nn.Module<Tensor, Tensor> model,
        TrainingOptions options,
        ITrainingObjective? objective = null,
        IModelCheckpointer? checkpointer = null,
        ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _model = model;
        _options = options;
        _objective = objective ?? CrossEntropyObjective.Instance;
        _checkpointer = checkpointer;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>The process's minor page faults so far (a seam for tests; the process's own count by default).</summary>
    internal Func<long?> CountMinorPageFaults { get; init; } = NativeAllocator.MinorPageFaults;

    /// <summary>Whether the process started with glibc's threads on one arena (a seam for tests).</summary>
    internal Func<bool> StartedWithOneArena { get; init; } = () => NativeAllocator.StartedWithOneArena;

    /// <summary>Path of the training state a resumed run reads.</summary>
    /// <param name="outputDir">The run's output folder.</param>
    /// <returns>The state file path.</returns>
    public static string StatePath(string outputDir) => Path.Combine(outputDir, "checkpoints", "last", StateFileName);

    /// <summary>Runs training to the last step.</summary>
    /// <param name="data">Token file and window split.</param>
    /// <param name="progress">Optional per-step progress.</param>
    /// <param name="resume">Continue from <see cref="StatePath"/> when it exists.</param>
    /// <param name="cancellationToken">Stops at the next step boundary after saving the last checkpoint and state.</param>
    /// <returns>The run's history.</returns>
    /// <exception cref="TrainingDivergedException">Too many non-finite steps in a row.</exception>
    public Task<TrainingResult> TrainAsync(
        TrainingData data,
        IProgress<TrainingProgress>? progress = null,
        bool resume = false,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        return RunAsync(data, _options.TotalSteps(), segments: null, progress, resume, cancellationToken);
    }

    /// <summary>
    /// Runs one training run made of consecutive segments whose training windows are chosen only when each segment
    /// starts: one AdamW state and one warmup-plus-cosine schedule span all segments (warmup only at the start), so a
    /// later segment continues where the previous one left off. <see cref="TrainingOptions.Steps"/> and
    /// <see cref="TrainingOptions.Tokens"/> are ignored: the run has the sum of <paramref name="segmentSteps"/> steps.
    /// <para>
    /// Before the first step of segment k (0-based), <paramref name="windowsForSegment"/> is called with k and returns
    /// the windows that segment trains on, in that order (no shuffling; the list is reused from its start when the
    /// segment needs more batches than it holds). <see cref="TrainingData.TrainWindows"/> and
    /// <see cref="TrainingData.ShuffleTrain"/> are ignored; the validation windows are used as in
    /// <see cref="TrainAsync"/>.
    /// </para>
    /// <para>
    /// Such a run cannot be resumed: its windows depend on the callback, which the training state cannot hold. The
    /// state it writes is marked so that <see cref="TrainAsync"/> with <c>resume</c> refuses it.
    /// </para>
    /// </summary>
    /// <param name="data">Token file and validation windows.</param>
    /// <param name="segmentSteps">Optimizer steps of each segment, in order (each positive).</param>
    /// <param name="windowsForSegment">Returns segment k's training windows, called once just before the segment starts.</param>
    /// <param name="progress">Optional per-step progress (steps count over the whole run).</param>
    /// <param name="cancellationToken">Stops at the next step boundary after saving the last checkpoint and state.</param>
    /// <returns>The run's history; step numbers count from the start of the first segment.</returns>
    /// <exception cref="TrainingDivergedException">Too many non-finite steps in a row.</exception>
    public Task<TrainingResult> TrainInSegmentsAsync(
        TrainingData data,
        IReadOnlyList<long> segmentSteps,
        Func<int, IReadOnlyList<long>> windowsForSegment,
        IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(segmentSteps);
        ArgumentNullException.ThrowIfNull(windowsForSegment);
        if (segmentSteps.Count == 0)
        {
            throw new ArgumentException("At least one segment is needed.", nameof(segmentSteps));
        }

        for (int k = 0; k < segmentSteps.Count; k++)
        {
            if (segmentSteps[k] <= 0)
            {
                throw new ArgumentException($"Segment {k} has {segmentSteps[k]} steps; every segment needs at least one.", nameof(segmentSteps));
            }
        }

        return RunAsync(data, segmentSteps.Sum(), new Segments(segmentSteps, windowsForSegment), progress, resume: false, cancellationToken);
    }

    private async Task<TrainingResult> RunAsync(
        TrainingData data,
        long totalSteps,
        Segments? segments,
        IProgress<TrainingProgress>? progress,
        bool resume,
        CancellationToken cancellationToken)
    {
        _dataFile = data.File;
        var schedule = LearningRateSchedule.For(_options, totalSteps);
        BatchSampler sampler = segments is null
            ? new BatchSampler(data.File, data.TrainWindows, _options.BatchSize, _options.SeqLen, _options.Seed, data.ShuffleTrain)
            : segments.SamplerFor(0, data, _options);
        Directory.CreateDirectory(_options.OutputDir);

        // Parameters the optimizer updates, in a fixed order (model, then objective): the state file relies on it.
        List<(string Name, Parameter Parameter)> modelParameters = [.. _model.named_parameters()];
        if (_options.Precision == TrainingPrecision.Bf16)
        {
            _model.to(ScalarType.BFloat16);
            modelParameters = [.. _model.named_parameters()];
        }

        // In bf16 the optimizer sees float32 master copies; in fp32 it sees the model's own parameters.
        List<(string Name, Parameter Parameter)> optimized = _options.Precision == TrainingPrecision.Bf16
            ? [.. modelParameters.Select(p => (p.Name, new Parameter(p.Parameter.detach().to(ScalarType.Float32).clone())))]
            : modelParameters;
        optimized.AddRange(_objective.Parameters.Select(p => ("objective." + p.Name, p.Parameter)));

        var (decay, noDecay) = WeightDecayGroups.Split(optimized);
        using var optimizer = torch.optim.AdamW(
            [
                new AdamW.ParamGroup(decay.Select(p => p.Parameter), lr: _options.LearningRate, beta1: _options.Beta1, beta2: _options.Beta2, eps: _options.Epsilon, weight_decay: _options.WeightDecay),
                new AdamW.ParamGroup(noDecay.Select(p => p.Parameter), lr: _options.LearningRate, beta1: _options.Beta1, beta2: _options.Beta2, eps: _options.Epsilon, weight_decay: 0),
            ],
            lr: _options.LearningRate,
            beta1: _options.Beta1,
            beta2: _options.Beta2,
            eps: _options.Epsilon,
            weight_decay: _options.WeightDecay);

        var run = new RunState();
        string statePath = StatePath(_options.OutputDir);
        if (resume && File.Exists(statePath))
        {
            LoadState(statePath, run, sampler, optimizer, optimized, totalSteps);
            CopyMastersToModel(optimized, modelParameters);
            TrainingLog.Resumed(_logger, statePath, run.Step, totalSteps);
        }
        else
        {
            torch.random.manual_seed((long)(_options.Seed & long.MaxValue));
            TrainingLog.Starting(_logger, totalSteps, _options.TokensPerStep, decay.Count, noDecay.Count);
        }

        // Every step allocates and frees the same large tensors: keep freed memory for reuse instead of faulting it in again.
        // Process-wide, so a host that manages its own allocator opts out with TrainingOptions.KeepFreedMemoryInProcess.
        bool freedMemoryKept = _options.KeepFreedMemoryInProcess && NativeAllocator.KeepFreedMemoryInProcess();
        if (freedMemoryKept)
        {
            TrainingLog.KeptFreedMemoryInProcess(_logger, StartedWithOneArena()
                ? "every thread allocates from glibc's main arena"
                : "threads other than the main one allocate from arenas of their own, which map blocks of 64 MiB or more afresh (MALLOC_ARENA_MAX=1 at process start keeps them on one)");
        }
        if (OperatingSystem.IsLinux() && string.IsNullOrEmpty(Environment.GetEnvironmentVariable(CpuThreading.WaitPolicyVariable)))
        {
            TrainingLog.SpinningOpenMpWorkers(_logger);
        }

        using var metrics = new MetricsWriter(_options.OutputDir, run, resumed: run.Step > 0);
        var clipped = optimized.Select(p => p.Parameter).ToList();
        double initialNorm = WeightNorm(clipped);
        var clock = Stopwatch.StartNew();
        var stepLog = Stopwatch.StartNew();
        long startStep = run.Step;
        var freshMemory = new FreshMemoryWatch(this);
        int nonFiniteInARow = run.NonFiniteInARow;
        while (run.Step < totalSteps)
        {
            if (cancellationToken.IsCancellationRequested)
            {
                await SaveLastAsync(run, sampler, optimizer, optimized, totalSteps, segments is not null).ConfigureAwait(false);
                cancellationToken.ThrowIfCancellationRequested();
            }

            if (segments is not null && segments.StartsAt(run.Step) is int segment and > 0)
            {
                sampler = segments.SamplerFor(segment, data, _options);
            }

            double lr = schedule.At(run.Step);
            foreach (var group in optimizer.ParamGroups)
            {
                group.LearningRate = lr;
            }

            long? faultsBefore = freedMemoryKept ? CountMinorPageFaults() : null;
            StepRecord record = TrainStep(sampler, optimizer, optimized, modelParameters, clipped, lr, run.Step + 1);
            if (faultsBefore is long before && CountMinorPageFaults() is long after)
            {
                freshMemory.Observe(run.Step - startStep, after - before);
            }

            run.Step++;
            run.History.Add(record);
            nonFiniteInARow = record.Skipped ? nonFiniteInARow + 1 : 0;
            run.NonFiniteInARow = nonFiniteInARow;
            metrics.AppendStep(record);
            if (!record.Skipped && WeightNorm(clipped) is var norm && (!double.IsFinite(norm) || norm > MaxWeightGrowth * Math.Max(initialNorm, 1e-3)))
            {
                // A finite loss can hide a blown-up model (overflowing activations normalise to zeros and a uniform
                // prediction): weights grown a million-fold, or non-finite, mean the run diverged.
                metrics.Flush();
                throw new TrainingDivergedException(string.Create(
                    CultureInfo.InvariantCulture,
                    $"Training stopped at step {record.Step}: the weights diverged (norm {norm:E2}, {initialNorm:E2} at the start). Lower the learning rate or check the data and model."));
            }

            if (record.Skipped)
            {
                TrainingLog.SkippedStep(_logger, record.Step, record.Loss, record.GradNorm, nonFiniteInARow);
                if (nonFiniteInARow >= _options.MaxNonFiniteSteps)
                {
                    metrics.Flush();
                    throw new TrainingDivergedException(
                        $"Training stopped at step {record.Step}: {nonFiniteInARow} steps in a row had a non-finite loss or gradient " +
                        $"(limit MaxNonFiniteSteps = {_options.MaxNonFiniteSteps}). Lower the learning rate or check the data and model.");
                }
            }

            double? validationLoss = null;
            bool last = run.Step == totalSteps;
            if (data.ValidationWindows.Count >= _options.BatchSize && _options.EvalBatches > 0
                && ((_options.EvalEvery > 0 && run.Step % _options.EvalEvery == 0) || last))
            {
                validationLoss = Evaluate(data);
                run.Evaluations.Add(new EvalRecord(run.Step, validationLoss.Value));
                metrics.AppendEval(run.Evaluations[^1]);
                TrainingLog.Evaluated(_logger, run.Step, validationLoss.Value);
                if (run.BestValidationLoss is null || validationLoss < run.BestValidationLoss)
                {
                    run.BestValidationLoss = validationLoss;
                    await SaveModelAsync(Path.Combine(_options.OutputDir, "checkpoints", "best"), cancellationToken).ConfigureAwait(false);
                }
            }

            if (last || (_options.CheckpointEvery > 0 && run.Step % _options.CheckpointEvery == 0))
            {
                await SaveLastAsync(run, sampler, optimizer, optimized, totalSteps, segments is not null).ConfigureAwait(false);
                metrics.DrawChart();
            }

            double elapsed = clock.Elapsed.TotalSeconds;
            long done = run.Step - startStep;
            double tokensPerSecond = elapsed > 0 ? done * _options.TokensPerStep / elapsed : 0;
            TimeSpan eta = ProgressEta.Remaining(done, clock.Elapsed, totalSteps - run.Step) ?? TimeSpan.Zero;
            progress?.Report(new TrainingProgress(run.Step, totalSteps, record.Loss, lr, record.GradNorm, tokensPerSecond, eta, record.Skipped, validationLoss));
            // Without a progress object the log is how a run reports: the first step, every tenth of the run, at most
            // half a minute apart, and the last; a fixed step interval was one line per few milliseconds on a small model
            // and one line per hour on a large one.
            long tenth = Math.Max(1, totalSteps / 10);
            bool logNow = run.Step == startStep + 1 || last || run.Step % tenth == 0 || stepLog.Elapsed >= StepLogInterval;
            if (logNow)
            {
                stepLog.Restart();
                if (_logger.IsEnabled(LogLevel.Information))
                {
                    // The same estimate and format as the command line's progress bar.
                    string remaining = ProgressEta.Format(eta);
                    TrainingLog.StepDone(_logger, run.Step, totalSteps, record.Loss, lr, tokensPerSecond, remaining);
                }
            }
        }

        return new TrainingResult(run.Step, run.History, run.Evaluations, run.BestValidationLoss, _options.OutputDir);
    }

    /// <summary>
    /// Warns once, where the C allocator was told to keep freed memory, when warmed-up steps keep faulting in fresh
    /// memory while glibc gives threads arenas of their own: such an arena maps every block of 64 MiB or more (logits over
    /// a large vocabulary) afresh and unmaps it when freed, every step, and only <c>MALLOC_ARENA_MAX=1</c> at process
    /// start stops it. Every step is watched, since a loop may move onto pool threads only after its first checkpoint.
    /// </summary>
    private sealed class FreshMemoryWatch(Trainer trainer)
    {
        /// <summary>Steps of a run (0-based) before this one allocate state once (optimizer moments, first activations).</summary>
        private const int FirstWatchedStep = 2;

        /// <summary>How many steps in a row must fault in fresh memory: a step that evaluates or grows once does not count.</summary>
        private const int StepsInARow = 2;

        /// <summary>Fresh memory per step from which a step counts (glibc's largest mmap threshold).</summary>
        private const long WarningBytes = 32L << 20;

        private int _inARow;
        private bool _warned;

        /// <summary>Takes the minor page faults of step <paramref name="stepOfRun"/> (0-based within this run).</summary>
        public void Observe(long stepOfRun, long faults)
        {
            long bytes = faults * Environment.SystemPageSize;
            _inARow = stepOfRun >= FirstWatchedStep && bytes >= WarningBytes ? _inARow + 1 : 0;
            if (_inARow >= StepsInARow && !_warned && !trainer.StartedWithOneArena())
            {
                _warned = true;
                TrainingLog.StepsMapFreshMemory(trainer._logger, bytes >> 20, faults);
            }
        }
    }

    private StepRecord TrainStep(
        BatchSampler sampler,
        AdamW optimizer,
        List<(string Name, Parameter Parameter)> optimized,
        List<(string Name, Parameter Parameter)> modelParameters,
        List<Parameter> clipped,
        double lr,
        long stepNumber)
    {
        using var scope = torch.NewDisposeScope();
        _model.train();
        // Release the model's gradients first (backward allocates fresh ones) so that the optimizer's in-place zeroing
        // does not clear them only for them to be dropped; in bf16 the float32 master gradients are replaced after
        // backward anyway. The optimizer then zeroes what is left: the objective's parameters.
        _model.zero_grad();
        if (_options.Precision == TrainingPrecision.Bf16)
        {
            // The float32 master gradients are allocated once and overwritten after backward: zeroing (or reallocating)
            // 4 bytes per parameter every step would be wasted memory traffic. Only the objective's own are zeroed.
            for (int i = modelParameters.Count; i < optimized.Count; i++)
            {
                optimized[i].Parameter.grad?.zero_();
            }
        }
        else
        {
            optimizer.zero_grad();
        }

        double lossSum = 0;
        for (int micro = 0; micro < _options.GradAccumulation; micro++)
        {
            TrainingBatch batch = sampler.Next(ModelDevice(_model));
            Tensor loss = _objective.Loss(_model, batch); // []
            lossSum += loss.to(ScalarType.Float64).item<double>();
            (loss / _options.GradAccumulation).backward();
        }

        double meanLoss = lossSum / _options.GradAccumulation;
        if (_options.Precision == TrainingPrecision.Bf16)
        {
            using var noGrad = torch.no_grad();
            for (int i = 0; i < modelParameters.Count; i++)
            {
                Tensor? grad = modelParameters[i].Parameter.grad;
                Tensor? master = optimized[i].Parameter.grad;
                if (grad is null || master is null)
                {
                    optimized[i].Parameter.grad = grad?.to(ScalarType.Float32);
                }
                else
                {
                    master.copy_(grad);
                }
            }
        }

        // With clipping disabled the norm is still measured (an infinite bound leaves gradients unchanged).
        double gradNorm = torch.nn.utils.clip_grad_norm_(clipped, _options.GradClip > 0 ? _options.GradClip : double.PositiveInfinity);
        bool skipped = !double.IsFinite(meanLoss) || !double.IsFinite(gradNorm);
        if (!skipped)
        {
            optimizer.step();
            CopyMastersToModel(optimized, modelParameters);
        }

        return new StepRecord(stepNumber, meanLoss, lr, gradNorm, skipped);
    }

    private void CopyMastersToModel(List<(string Name, Parameter Parameter)> optimized, List<(string Name, Parameter Parameter)> modelParameters)
    {
        if (_options.Precision != TrainingPrecision.Bf16)
        {
            return;
        }

        using var noGrad = torch.no_grad();
        for (int i = 0; i < modelParameters.Count; i++)
        {
            modelParameters[i].Parameter.copy_(optimized[i].Parameter);
        }
    }

    private double Evaluate(TrainingData data)
    {
        var sampler = new BatchSampler(data.File, data.ValidationWindows, _options.BatchSize, _options.SeqLen, _options.Seed, shuffle: false);
        long batches = Math.Min(_options.EvalBatches, sampler.BatchesPerEpoch);
        double sum = 0;
        _model.eval();
        using (torch.no_grad())
        {
            for (long i = 0; i < batches; i++)
            {
                using var scope = torch.NewDisposeScope();
                TrainingBatch batch = sampler.Next(ModelDevice(_model));
                Tensor logits = _model.forward(batch.Inputs); // [B, T, V]
                sum += CrossEntropyObjective.Compute(logits, batch.Targets).to(ScalarType.Float64).item<double>();
            }
        }

        _model.train();
        return sum / batches;
    }

    /// <summary>The device of a model's first parameter (CPU for a model without parameters).</summary>
    /// <param name="model">The model.</param>
    /// <returns>Where its inputs must go.</returns>
    public static Device ModelDevice(nn.Module model)
    {
        ArgumentNullException.ThrowIfNull(model);
        Parameter? first = model.parameters().FirstOrDefault();
        return first?.device ?? torch.CPU;
    }

    private async Task SaveModelAsync(string directory, CancellationToken cancellationToken)
    {
        if (_checkpointer is null)
        {
            return;
        }

        Directory.CreateDirectory(directory);
        await _checkpointer.SaveAsync(_model, directory, cancellationToken).ConfigureAwait(false);
    }

    private async Task SaveLastAsync(RunState run, BatchSampler sampler, AdamW optimizer, List<(string Name, Parameter Parameter)> optimized, long totalSteps, bool segmented)
    {
        string directory = Path.Combine(_options.OutputDir, "checkpoints", "last");
        // The model checkpoint must be complete even when the run is being cancelled.
        await SaveModelAsync(directory, CancellationToken.None).ConfigureAwait(false);
        Directory.CreateDirectory(directory);
        SaveState(Path.Combine(directory, StateFileName), run, sampler, optimizer, optimized, totalSteps, segmented);
        TrainingLog.Saved(_logger, run.Step, directory);
    }

    private void SaveState(string path, RunState run, BatchSampler sampler, AdamW optimizer, List<(string Name, Parameter Parameter)> optimized, long totalSteps, bool segmented)
    {
        string temp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            using (var sha = System.Security.Cryptography.SHA256.Create())
            using (var hashing = new System.Security.Cryptography.CryptoStream(stream, sha, System.Security.Cryptography.CryptoStreamMode.Write, leaveOpen: true))
            using (var writer = new BinaryWriter(hashing, Encoding.UTF8, leaveOpen: true))
            {
                writer.Write(segmented ? SegmentedStateMagic : StateMagic);
                writer.Write(RunIdentity().ToJsonString());
                writer.Write(run.Step);
                writer.Write(totalSteps);
                writer.Write(_options.Seed);
                writer.Write(run.NonFiniteInARow);
                writer.Write(run.BestValidationLoss ?? double.NaN);
                BatchSamplerState cursor = sampler.State;
                writer.Write(cursor.Epoch);
                writer.Write(cursor.Position);
                writer.Write(cursor.Seed);
                using (Tensor rng = torch.random.get_rng_state())
                {
                    rng.Save(writer);
                }

                writer.Write(optimized.Count);
                foreach ((string name, Parameter p) in optimized)
                {
                    writer.Write(name);
                    p.Save(writer);
                }

                var buffers = _model.named_buffers().ToList();
                writer.Write(buffers.Count);
                foreach ((string name, Tensor b) in buffers)
                {
                    writer.Write(name);
                    b.Save(writer);
                }

                optimizer.save_state_dict(writer);
                writer.Write(run.History.Count);
                foreach (StepRecord r in run.History)
                {
                    writer.Write(r.Step);
                    writer.Write(r.Loss);
                    writer.Write(r.LearningRate);
                    writer.Write(r.GradNorm);
                    writer.Write(r.Skipped);
                }

                writer.Write(run.Evaluations.Count);
                foreach (EvalRecord e in run.Evaluations)
                {
                    writer.Write(e.Step);
                    writer.Write(e.ValidationLoss);
                }

                writer.Flush();
                hashing.FlushFinalBlock();
                stream.Write(sha.Hash!);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }

    private void LoadState(string path, RunState run, BatchSampler sampler, AdamW optimizer, List<(string Name, Parameter Parameter)> optimized, long totalSteps)
    {
        using var stream = File.OpenRead(path);
        using var reader = new BinaryReader(stream, Encoding.UTF8);
        try
        {
            byte[] magic = reader.ReadBytes(StateMagic.Length);
            if (magic.AsSpan().SequenceEqual(OldStateMagic))
            {
                throw new InvalidDataException($"Training state '{path}' was written by an earlier version, without the run's options and a checksum; it cannot be checked, so it is not resumed. Start the run again.");
            }

            if (magic.AsSpan().SequenceEqual(StateMagic) || magic.AsSpan().SequenceEqual(SegmentedStateMagic))
            {
                VerifyChecksum(stream, path);
                stream.Position = magic.Length;
                CheckRunIdentity(reader.ReadString(), path);
            }

            if (magic.AsSpan().SequenceEqual(SegmentedStateMagic))
            {
                throw new InvalidDataException(
                    $"Training state '{path}' was written by a run trained in segments (multi-round training with one continuous schedule), " +
                    "whose training windows were chosen as it ran; such a run cannot be resumed. Start it again instead.");
            }

            if (!magic.AsSpan().SequenceEqual(StateMagic))
            {
                throw new InvalidDataException($"Training state '{path}' does not start with 'MSTRAIN1'; it is not a training state file.");
            }

            run.Step = reader.ReadInt64();
            long savedTotal = reader.ReadInt64();
            ulong savedSeed = reader.ReadUInt64();
            if (savedTotal != totalSteps || savedSeed != _options.Seed)
            {
                throw new ResumeMismatchException(
                    savedTotal != totalSteps ? "Steps" : "Seed",
                    savedTotal != totalSteps
                        ? $"Training option Steps gives {totalSteps} steps in this run but the run that wrote '{path}' has {savedTotal}; a resumed run needs the same options (or start over)."
                        : $"Training option Seed is {_options.Seed} in this run but was {savedSeed} in the run that wrote '{path}'; a resumed run needs the same options (or start over).");
            }

            run.NonFiniteInARow = reader.ReadInt32();
            double best = reader.ReadDouble();
            run.BestValidationLoss = double.IsNaN(best) ? null : best;
            sampler.Restore(new BatchSamplerState(reader.ReadInt64(), reader.ReadInt64(), reader.ReadUInt64()));
            using (Tensor rng = TensorExtensionMethods.Load(reader))
            {
                torch.random.set_rng_state(rng);
            }

            int count = reader.ReadInt32();
            if (count != optimized.Count)
            {
                throw new InvalidDataException($"Training state '{path}' holds {count} parameters; the model and objective have {optimized.Count}.");
            }

            using (torch.no_grad())
            {
                foreach ((string name, Parameter p) in optimized)
                {
                    string saved = reader.ReadString();
                    if (saved != name)
                    {
                        throw new InvalidDataException($"Training state '{path}' has parameter '{saved}' where the model has '{name}'.");
                    }

                    p.Load(reader);
                }

                var buffers = _model.named_buffers().ToDictionary(b => b.name, b => b.buffer);
                int bufferCount = reader.ReadInt32();
                for (int i = 0; i < bufferCount; i++)
                {
                    string name = reader.ReadString();
                    if (!buffers.TryGetValue(name, out Tensor? buffer))
                    {
                        throw new InvalidDataException($"Training state '{path}' has buffer '{name}', which the model does not have.");
                    }

                    buffer.Load(reader);
                }
            }

            optimizer.load_state_dict(reader);
            int steps = reader.ReadInt32();
            for (int i = 0; i < steps; i++)
            {
                run.History.Add(new StepRecord(reader.ReadInt64(), reader.ReadDouble(), reader.ReadDouble(), reader.ReadDouble(), reader.ReadBoolean()));
            }

            int evals = reader.ReadInt32();
            for (int i = 0; i < evals; i++)
            {
                run.Evaluations.Add(new EvalRecord(reader.ReadInt64(), reader.ReadDouble()));
            }
        }
        catch (Exception e) when (e is EndOfStreamException or ArgumentException)
        {
            throw new InvalidDataException($"Training state '{path}' is truncated or does not match the model: {e.Message}", e);
        }
    }

    // How far the weight norm may grow over its value at the start before the run counts as diverged.
    private const double MaxWeightGrowth = 1e6;

    private static double WeightNorm(List<Parameter> parameters)
    {
        if (parameters.Count == 0)
        {
            return 0;
        }

        // Run after every step: one fused norm per tensor and a single read back to the host. (A float64 copy of every
        // weight cost a pass over the whole model and a host sync per tensor.) Float32 norms overflow only near 1e19,
        // far past the divergence bound, and an overflow reads as diverged anyway.
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        Tensor norms = torch.stack(parameters.Select(p => p.detach().norm().to_type(ScalarType.Float64))); // [P]
        return norms.square().sum().sqrt().item<double>();
    }

    /// <summary>
    /// Every <see cref="ResumeMismatchException.Option"/> a resumed run can be refused for: the <see cref="TrainingOptions"/>
    /// properties it must share with the run that wrote the state, and <c>Data</c> (the token file) and <c>DataTokens</c>
    /// (its length).
    /// </summary>
    public static IReadOnlyList<string> ResumeCheckedOptions { get; } =
    [
        nameof(TrainingOptions.Steps), nameof(TrainingOptions.Seed), nameof(TrainingOptions.LearningRate), nameof(TrainingOptions.MinLearningRate),
        nameof(TrainingOptions.WarmupFraction), nameof(TrainingOptions.WeightDecay), nameof(TrainingOptions.GradClip), nameof(TrainingOptions.BatchSize),
        nameof(TrainingOptions.SeqLen), nameof(TrainingOptions.GradAccumulation), nameof(TrainingOptions.Precision), nameof(TrainingOptions.Beta1),
        nameof(TrainingOptions.Beta2), nameof(TrainingOptions.Epsilon), "Data", "DataTokens",
    ];

    // The options a resumed run must share with the one that wrote the state (steps and seed are checked apart); keep
    // ResumeCheckedOptions in step with it.
    private System.Text.Json.Nodes.JsonObject RunIdentity() => new()
    {
        [nameof(TrainingOptions.LearningRate)] = _options.LearningRate,
        [nameof(TrainingOptions.MinLearningRate)] = _options.MinLearningRate,
        [nameof(TrainingOptions.WarmupFraction)] = _options.WarmupFraction,
        [nameof(TrainingOptions.WeightDecay)] = _options.WeightDecay,
        [nameof(TrainingOptions.GradClip)] = _options.GradClip,
        [nameof(TrainingOptions.BatchSize)] = _options.BatchSize,
        [nameof(TrainingOptions.SeqLen)] = _options.SeqLen,
        [nameof(TrainingOptions.GradAccumulation)] = _options.GradAccumulation,
        [nameof(TrainingOptions.Precision)] = _options.Precision.ToString(),
        [nameof(TrainingOptions.Beta1)] = _options.Beta1,
        [nameof(TrainingOptions.Beta2)] = _options.Beta2,
        [nameof(TrainingOptions.Epsilon)] = _options.Epsilon,
        ["Data"] = _dataFile is null ? null : Path.GetFullPath(_dataFile.Path),
        ["DataTokens"] = _dataFile?.Count,
    };

    private void CheckRunIdentity(string savedJson, string path)
    {
        var saved = System.Text.Json.Nodes.JsonNode.Parse(savedJson) as System.Text.Json.Nodes.JsonObject
            ?? throw new InvalidDataException($"Training state '{path}' has no record of the run's options.");
        foreach ((string key, System.Text.Json.Nodes.JsonNode? now) in RunIdentity())
        {
            string before = saved[key]?.ToJsonString() ?? "null";
            string current = now?.ToJsonString() ?? "null";
            if (before != current)
            {
                throw new ResumeMismatchException(key,
                    $"Training option {key} is {current} in this run but was {before} in the run that wrote '{path}'; a resumed run needs the same options (or start over).");
            }
        }
    }

    // Reads the whole file once: the state is refused before any of it is used when a byte has changed.
    private static void VerifyChecksum(FileStream stream, string path)
    {
        long length = stream.Length - ChecksumLength;
        if (length <= 0)
        {
            throw new InvalidDataException($"Training state '{path}' is truncated; it cannot be resumed.");
        }

        stream.Position = 0;
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        byte[] buffer = new byte[1 << 20];
        long left = length;
        while (left > 0)
        {
            int read = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
            if (read == 0)
            {
                throw new InvalidDataException($"Training state '{path}' is truncated; it cannot be resumed.");
            }

            hash.AppendData(buffer, 0, read);
            left -= read;
        }

        byte[] stored = new byte[ChecksumLength];
        stream.ReadExactly(stored);
        if (!hash.GetHashAndReset().AsSpan().SequenceEqual(stored))
        {
            throw new InvalidDataException($"Training state '{path}' is damaged (its SHA-256 checksum does not match); it cannot be resumed. Start the run again without --resume.");
        }
    }

    /// <summary>Where each segment of a segmented run starts and how its windows are chosen.</summary>
    private sealed class Segments(IReadOnlyList<long> steps, Func<int, IReadOnlyList<long>> windowsForSegment)
    {
        private readonly long[] _starts = [.. steps.Select((_, k) => steps.Take(k).Sum())];

        /// <summary>The segment whose first step has index <paramref name="step"/> (0-based), or null.</summary>
        public int? StartsAt(long step)
        {
            int k = Array.IndexOf(_starts, step);
            return k < 0 ? null : k;
        }

        public BatchSampler SamplerFor(int segment, TrainingData data, TrainingOptions options)
        {
            IReadOnlyList<long> windows = windowsForSegment(segment)
                ?? throw new InvalidOperationException($"The window callback returned null for segment {segment}.");
            if (windows.Count < options.BatchSize)
            {
                throw new InvalidOperationException(
                    $"Segment {segment} got {windows.Count} training windows, fewer than one batch of {options.BatchSize} (TrainingOptions.BatchSize).");
            }

            return new BatchSampler(data.File, windows, options.BatchSize, options.SeqLen, options.Seed, shuffle: false);
        }
    }

    /// <summary>Mutable bookkeeping of a run, saved in the training state.</summary>
    private sealed class RunState
    {
        public long Step { get; set; }

        public int NonFiniteInARow { get; set; }

        public double? BestValidationLoss { get; set; }

        public List<StepRecord> History { get; } = [];

        public List<EvalRecord> Evaluations { get; } = [];
    }

    /// <summary>Appends metrics to JSONL and CSV and draws the loss chart.</summary>
    private sealed class MetricsWriter : IDisposable
    {
        private readonly string _directory;
        private readonly RunState _run;
        private readonly StreamWriter _jsonl;
        private readonly StreamWriter _csv;

        public MetricsWriter(string directory, RunState run, bool resumed)
        {
            _directory = directory;
            _run = run;
            // A resumed run rewrites the logs from the saved history, dropping steps logged after the last checkpoint.
            _jsonl = new StreamWriter(Path.Combine(directory, "metrics.jsonl"), append: false);
            _csv = new StreamWriter(Path.Combine(directory, "metrics.csv"), append: false);
            _csv.WriteLine("step,loss,lr,grad_norm,skipped,val_loss");
            if (resumed)
            {
                var evals = run.Evaluations.ToDictionary(e => e.Step);
                foreach (StepRecord r in run.History)
                {
                    WriteStep(r);
                    if (evals.TryGetValue(r.Step, out EvalRecord? e))
                    {
                        WriteEval(e);
                    }
                }
            }

            Flush();
        }

        public void AppendStep(StepRecord record)
        {
            WriteStep(record);
            Flush();
        }

        public void AppendEval(EvalRecord record)
        {
            WriteEval(record);
            Flush();
        }

        public void Flush()
        {
            _jsonl.Flush();
            _csv.Flush();
        }

        public void DrawChart()
        {
            var finite = _run.History.Where(r => double.IsFinite(r.Loss)).ToList();
            if (finite.Count == 0)
            {
                return;
            }

            var series = new List<LineSeries> { new("train", [.. finite.Select(r => (double)r.Step)], [.. finite.Select(r => r.Loss)]) };
            if (_run.Evaluations.Count > 0)
            {
                series.Add(new LineSeries("validation", [.. _run.Evaluations.Select(e => (double)e.Step)], [.. _run.Evaluations.Select(e => e.ValidationLoss)]));
            }

            Charts.Lines(Path.Combine(_directory, "loss.png"), "Loss", "step", "loss", series, integerX: true);
        }

        public void Dispose()
        {
            _jsonl.Dispose();
            _csv.Dispose();
        }

        private static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);

        private static string JsonNumber(double value) => double.IsFinite(value) ? Number(value) : JsonSerializer.Serialize(Number(value));

        private void WriteStep(StepRecord r)
        {
            _jsonl.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"{{\"step\":{r.Step},\"loss\":{JsonNumber(r.Loss)},\"lr\":{JsonNumber(r.LearningRate)},\"grad_norm\":{JsonNumber(r.GradNorm)},\"skipped\":{(r.Skipped ? "true" : "false")}}}"));
            _csv.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{r.Step},{Number(r.Loss)},{Number(r.LearningRate)},{Number(r.GradNorm)},{(r.Skipped ? 1 : 0)},"));
        }

        private void WriteEval(EvalRecord e)
        {
            _jsonl.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{{\"step\":{e.Step},\"val_loss\":{JsonNumber(e.ValidationLoss)}}}"));
            _csv.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{e.Step},,,,,{Number(e.ValidationLoss)}"));
        }
    }
}
