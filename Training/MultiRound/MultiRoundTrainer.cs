using System.Globalization;
using ModelSurgery.Training.Data;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Training.MultiRound;

/// <summary>How the optimizer and learning-rate schedule carry across rounds.</summary>
public enum RoundSchedule
{
    /// <summary>
    /// Each round starts a fresh AdamW state and its own warmup-plus-cosine schedule over the round's steps, from the
    /// current weights; each round writes to <c>OutputDir/round-k</c>.
    /// </summary>
    Restart = 0,

    /// <summary>
    /// All rounds share one AdamW state and one warmup-plus-cosine schedule over the steps of all rounds (warmup only
    /// at the start), so a later round continues where the previous one left off; the whole run writes to
    /// <c>OutputDir/rounds</c>. Equivalent to one run over the rounds' batches laid end to end, except that each
    /// later round's batches are drawn just before it starts.
    /// </summary>
    Continue = 1,
}

/// <summary>Rounds of multi-round training.</summary>
/// <param name="Rounds">Number of rounds R (1 is plain training).</param>
/// <param name="Ratio">Share r of the N batches drawn for each later round.</param>
/// <param name="Schedule">Whether rounds restart or continue the optimizer and learning-rate schedule.</param>
public sealed record MultiRoundOptions(int Rounds = 2, double Ratio = 0.5, RoundSchedule Schedule = RoundSchedule.Restart);

/// <summary>One finished round.</summary>
/// <param name="Round">Round number (1-based).</param>
/// <param name="Batches">Indices (into the fixed list of N batches) trained on, in order.</param>
/// <param name="Result">
/// The round's training result. With <see cref="RoundSchedule.Continue"/> it is the round's share of the one run:
/// <see cref="TrainingResult.Steps"/> is the round's step count, while step numbers in the history and evaluations
/// count from the start of round 1, and <see cref="TrainingResult.BestValidationLoss"/> is the best seen so far.
/// </param>
public sealed record RoundResult(int Round, IReadOnlyList<int> Batches, TrainingResult Result);

/// <summary>
/// Multi-round training (PanGu-pi Pro): the training windows are cut once into N fixed batches (shuffled by the seed).
/// Round 1 trains on all of them. Before each later round, the model as it stands (frozen: eval mode, no gradients)
/// computes every batch's loss, and round(r * N) batches are drawn without replacement with probability
/// exp(loss_i) / sum_j exp(loss_j) (<see cref="RoundSampler"/>); the round trains on them in draw order. By default
/// (<see cref="RoundSchedule.Restart"/>) each round starts a fresh optimizer and learning-rate schedule from the
/// current weights and writes to <c>OutputDir/round-k</c>; with <see cref="RoundSchedule.Continue"/> all rounds are one
/// run (<see cref="Trainer.TrainInSegmentsAsync"/>) with one optimizer and schedule, written to <c>OutputDir/rounds</c>.
/// Multi-round runs are not resumable. Every scan is logged to <c>OutputDir/round-sampling.jsonl</c>: one line per batch with its
/// loss, whether it was drawn and at which draw.
/// </summary>
public sealed class MultiRoundTrainer
{
    private readonly nn.Module<Tensor, Tensor> _model;
    private readonly TrainingOptions _options;
    private readonly MultiRoundOptions _rounds;
    private readonly ITrainingObjective? _objective;
    private readonly IModelCheckpointer? _checkpointer;
    private readonly ILogger _logger;

    /// <summary>Creates the trainer.</summary>
    /// <param name="model">The model, trained in place.</param>
    /// <param name="options">Per-round hyper-parameters; <see cref="TrainingOptions.Steps"/> and <see cref="TrainingOptions.Tokens"/> are replaced by each round's batch count (divided by the gradient accumulation).</param>
    /// <param name="rounds">R and r.</param>
    /// <param name="objective">Training loss (default cross-entropy); batch scans always use cross-entropy.</param>
    /// <param name="checkpointer">Model checkpoint writer.</param>
    /// <param name="logger">Optional logger.</param>
    public MultiRoundTrainer(
        nn.Module<Tensor, Tensor> model,
        TrainingOptions options,
        MultiRoundOptions rounds,
        ITrainingObjective? objective = null,
        IModelCheckpointer? checkpointer = null,
        ILogger? logger = null)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _rounds = rounds ?? throw new ArgumentNullException(nameof(rounds));
        if (rounds.Rounds < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(rounds), $"Rounds must be at least 1; got {rounds.Rounds}.");
        }

        RoundSampler.CountFor(1, rounds.Ratio);
        _objective = objective;
        _checkpointer = checkpointer;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Path of the sampling audit log.</summary>
    public string AuditPath => Path.Combine(_options.OutputDir, "round-sampling.jsonl");

    /// <summary>Cuts the training windows into the fixed list of N batches (shuffled by <paramref name="seed"/>).</summary>
    /// <param name="windows">Training windows.</param>
    /// <param name="batchSize">Windows per batch; a partial last batch is dropped.</param>
    /// <param name="seed">Shuffle seed.</param>
    /// <returns>The batches.</returns>
    public static IReadOnlyList<long[]> FixedBatches(IReadOnlyList<long> windows, int batchSize, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(windows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        long[] order = [.. windows];
        new DeterministicRandom(DeterministicRandom.Derive(seed, 0xBA7C4)).Shuffle(order.AsSpan());
        return [.. Enumerable.Range(0, order.Length / batchSize).Select(b => order[(b * batchSize)..((b + 1) * batchSize)])];
    }

    /// <summary>Mean next-token cross-entropy of each batch under the frozen model.</summary>
    /// <param name="model">The model (put in eval mode and run without gradients).</param>
    /// <param name="file">The token file.</param>
    /// <param name="batches">Batches of window ids.</param>
    /// <param name="seqLen">Inputs per window (T).</param>
    /// <param name="cancellationToken">Cancels the scan.</param>
    /// <returns>One loss per batch.</returns>
    public static double[] ScanBatchLosses(nn.Module<Tensor, Tensor> model, TokenFile file, IReadOnlyList<long[]> batches, int seqLen, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(batches);
        var losses = new double[batches.Count];
        model.eval();
        using (torch.no_grad())
        {
            for (int b = 0; b < batches.Count; b++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                var sampler = new BatchSampler(file, batches[b], batches[b].Length, seqLen, 0, shuffle: false);
                TrainingBatch batch = sampler.Next(Trainer.ModelDevice(model));
                Tensor logits = model.forward(batch.Inputs); // [B, T, V]
                losses[b] = CrossEntropyObjective.Compute(logits, batch.Targets).to(ScalarType.Float64).item<double>();
            }
        }

        model.train();
        return losses;
    }

    /// <summary>Runs all rounds.</summary>
    /// <param name="data">Token file and split; <see cref="TrainingData.ShuffleTrain"/> is ignored (rounds fix the order).</param>
    /// <param name="progress">Per-step progress of the round being trained.</param>
    /// <param name="cancellationToken">Cancels training.</param>
    /// <returns>One result per round.</returns>
    public async Task<IReadOnlyList<RoundResult>> RunAsync(TrainingData data, IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        IReadOnlyList<long[]> batches = FixedBatches(data.TrainWindows, _options.BatchSize, _options.Seed);
        if (batches.Count == 0)
        {
            throw new ArgumentException($"{data.TrainWindows.Count} training windows do not fill one batch of {_options.BatchSize}.", nameof(data));
        }

        Directory.CreateDirectory(_options.OutputDir);
        File.Delete(AuditPath);
        var random = new DeterministicRandom(DeterministicRandom.Derive(_options.Seed, 0x20C4D));
        if (_rounds.Schedule == RoundSchedule.Continue)
        {
            return await RunContinuousAsync(data, batches, random, progress, cancellationToken).ConfigureAwait(false);
        }

        var results = new List<RoundResult>();
        for (int round = 1; round <= _rounds.Rounds; round++)
        {
            int[] selection = SelectBatches(round, data, batches, random, cancellationToken);
            var windows = selection.SelectMany(b => batches[b]).ToArray();
            var roundOptions = _options with
            {
                Steps = StepsFor(selection.Length),
                Tokens = null,
                OutputDir = Path.Combine(_options.OutputDir, string.Create(CultureInfo.InvariantCulture, $"round-{round}")),
            };
            var trainer = new Trainer(_model, roundOptions, _objective, _checkpointer, _logger);
            TrainingResult result = await trainer.TrainAsync(data with { TrainWindows = windows, ShuffleTrain = false }, progress, resume: false, cancellationToken).ConfigureAwait(false);
            results.Add(new RoundResult(round, selection, result));
        }

        return results;
    }

    /// <summary>Folder of the one run that <see cref="RoundSchedule.Continue"/> trains.</summary>
    private string ContinuousOutputDir => Path.Combine(_options.OutputDir, "rounds");

    private long StepsFor(int batchCount) => Math.Max(1, batchCount / _options.GradAccumulation);

    /// <summary>Round 1 takes every batch; a later round scans the current model and draws batches by loss.</summary>
    private int[] SelectBatches(int round, TrainingData data, IReadOnlyList<long[]> batches, DeterministicRandom random, CancellationToken cancellationToken)
    {
        if (round == 1)
        {
            return [.. Enumerable.Range(0, batches.Count)];
        }

        double[] losses = ScanBatchLosses(_model, data.File, batches, _options.SeqLen, cancellationToken);
        int[] selection = RoundSampler.Sample(losses, RoundSampler.CountFor(batches.Count, _rounds.Ratio), random);
        AppendAudit(round, losses, selection);
        double meanLoss = losses.Average();
        TrainingLog.RoundSelected(_logger, round, batches.Count, meanLoss, selection.Length);
        return selection;
    }

    private async Task<IReadOnlyList<RoundResult>> RunContinuousAsync(
        TrainingData data,
        IReadOnlyList<long[]> batches,
        DeterministicRandom random,
        IProgress<TrainingProgress>? progress,
        CancellationToken cancellationToken)
    {
        // Step counts are known up front (round 1: N batches, later rounds: round(r N)); only the draws wait for the model.
        long[] roundSteps = [.. Enumerable.Range(1, _rounds.Rounds).Select(round => StepsFor(round == 1 ? batches.Count : RoundSampler.CountFor(batches.Count, _rounds.Ratio)))];
        var selections = new List<int[]>();
        var options = _options with { Steps = roundSteps.Sum(), Tokens = null, OutputDir = ContinuousOutputDir };
        var trainer = new Trainer(_model, options, _objective, _checkpointer, _logger);
        TrainingResult run = await trainer.TrainInSegmentsAsync(
            data with { ShuffleTrain = false },
            roundSteps,
            segment =>
            {
                int[] selection = SelectBatches(segment + 1, data, batches, random, cancellationToken);
                selections.Add(selection);
                return [.. selection.SelectMany(b => batches[b])];
            },
            progress,
            cancellationToken).ConfigureAwait(false);

        var results = new List<RoundResult>();
        long end = 0;
        for (int k = 0; k < roundSteps.Length; k++)
        {
            long start = end;
            end += roundSteps[k];
            var evaluations = run.Evaluations.Where(e => e.Step > start && e.Step <= end).ToList();
            double? best = run.Evaluations.Where(e => e.Step <= end).Select(e => (double?)e.ValidationLoss).Min();
            var result = new TrainingResult(roundSteps[k], [.. run.History.Where(r => r.Step > start && r.Step <= end)], evaluations, best, run.OutputDir);
            results.Add(new RoundResult(k + 1, selections[k], result));
        }

        return results;
    }

    private void AppendAudit(int round, double[] losses, int[] selection)
    {
        var drawOf = new Dictionary<int, int>();
        for (int k = 0; k < selection.Length; k++)
        {
            drawOf[selection[k]] = k;
        }

        using var writer = new StreamWriter(AuditPath, append: true);
        for (int b = 0; b < losses.Length; b++)
        {
            string draw = drawOf.TryGetValue(b, out int k) ? k.ToString(CultureInfo.InvariantCulture) : "null";
            writer.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"{{\"round\":{round},\"batch\":{b},\"loss\":{losses[b]:R},\"selected\":{(drawOf.ContainsKey(b) ? "true" : "false")},\"draw\":{draw}}}"));
        }
    }
}
