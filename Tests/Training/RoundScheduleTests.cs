using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.MultiRound;
using TorchSharp;

namespace ModelSurgery.Tests.Training;

public sealed class RoundScheduleTests
{
    private const int Vocab = 16;
    private const int SeqLen = 8;

    [Test]
    public async Task Continued_rounds_follow_one_cosine_schedule_over_all_steps()
    {
        using var run = new RoundRun();
        TrainingOptions options = run.Options;
        using var model = new TinyCausalLm(Vocab, SeqLen, seed: 1);

        IReadOnlyList<RoundResult> rounds = await new MultiRoundTrainer(model, options, new MultiRoundOptions(2, 0.5, RoundSchedule.Continue)).RunAsync(run.Data);

        int n = run.Data.TrainWindows.Count / options.BatchSize;
        long total = n + RoundSampler.CountFor(n, 0.5);
        var schedule = LearningRateSchedule.For(options, total);
        StepRecord[] steps = [.. rounds.SelectMany(r => r.Result.History)];
        Assert.Multiple(() =>
        {
            Assert.That(rounds.Select(r => r.Result.Steps), Is.EqualTo(new[] { (long)n, RoundSampler.CountFor(n, 0.5) }));
            Assert.That(steps.Select(s => s.Step), Is.EqualTo(Enumerable.Range(1, (int)total).Select(s => (long)s)), "step numbers run on across rounds");
            Assert.That(steps.Select(s => s.LearningRate), Is.EqualTo(Enumerable.Range(0, (int)total).Select(s => schedule.At(s))));
            // No second warmup: round 2 starts below the peak and keeps decaying from where round 1 stopped.
            Assert.That(rounds[1].Result.History[0].LearningRate, Is.LessThan(rounds[0].Result.History[^1].LearningRate));
            Assert.That(rounds[1].Result.History[^1].LearningRate, Is.EqualTo(options.MinLearningRate).Within(1e-15));
            Assert.That(rounds[1].Batches, Is.Unique);
            Assert.That(rounds[1].Batches, Has.Count.EqualTo(RoundSampler.CountFor(n, 0.5)));
            Assert.That(File.ReadAllLines(Path.Combine(options.OutputDir, "round-sampling.jsonl")), Has.Length.EqualTo(n), "round 2's scan is audited");
            Assert.That(rounds[1].Result.OutputDir, Is.EqualTo(Path.Combine(options.OutputDir, "rounds")));
        });
    }

    [Test]
    public async Task Restarted_rounds_warm_up_again()
    {
        using var run = new RoundRun();
        using var model = new TinyCausalLm(Vocab, SeqLen, seed: 1);

        IReadOnlyList<RoundResult> rounds = await new MultiRoundTrainer(model, run.Options, new MultiRoundOptions(2, 0.5)).RunAsync(run.Data);

        var roundTwo = LearningRateSchedule.For(run.Options, rounds[1].Result.Steps);
        Assert.Multiple(() =>
        {
            Assert.That(new MultiRoundOptions().Schedule, Is.EqualTo(RoundSchedule.Restart), "restarting stays the default");
            Assert.That(rounds[1].Result.History.Select(s => s.LearningRate), Is.EqualTo(Enumerable.Range(0, (int)roundTwo.TotalSteps).Select(s => roundTwo.At(s))));
            Assert.That(rounds[1].Result.History[0].Step, Is.EqualTo(1));
        });
    }

    [Test]
    public async Task Continued_rounds_keep_the_optimizer_state()
    {
        // Carrying the AdamW moments and step count makes the rounds one run over their batches laid end to end; a fresh
        // optimizer at round 2 (zero moments, bias correction from step 1) would move the weights differently.
        using var run = new RoundRun();
        TrainingOptions options = run.Options;
        using var rounded = new TinyCausalLm(Vocab, SeqLen, seed: 1);
        IReadOnlyList<RoundResult> rounds = await new MultiRoundTrainer(rounded, options, new MultiRoundOptions(2, 0.5, RoundSchedule.Continue)).RunAsync(run.Data);

        IReadOnlyList<long[]> batches = MultiRoundTrainer.FixedBatches(run.Data.TrainWindows, options.BatchSize, options.Seed);
        long[] planned = [.. rounds.SelectMany(r => r.Batches).SelectMany(b => batches[b])];
        long total = rounds.Sum(r => r.Result.Steps);
        using var single = new TinyCausalLm(Vocab, SeqLen, seed: 1);
        await new Trainer(single, options with { Steps = total, OutputDir = Path.Combine(options.OutputDir, "single") })
            .TrainAsync(run.Data with { TrainWindows = planned, ShuffleTrain = false });

        using var restartedModel = new TinyCausalLm(Vocab, SeqLen, seed: 1);
        await new MultiRoundTrainer(restartedModel, options with { OutputDir = Path.Combine(options.OutputDir, "restarted") }, new MultiRoundOptions(2, 0.5))
            .RunAsync(run.Data);

        var roundedWeights = Weights(rounded);
        var singleWeights = Weights(single);
        var restartedWeights = Weights(restartedModel);
        Assert.Multiple(() =>
        {
            foreach ((string name, float[] values) in roundedWeights)
            {
                Assert.That(values, Is.EqualTo(singleWeights[name]), $"{name} equals one run over the same batches");
            }

            Assert.That(roundedWeights.Any(w => !w.Value.SequenceEqual(restartedWeights[w.Key])), "a restarted optimizer ends elsewhere");
        });
    }

    [Test]
    public async Task A_run_in_segments_cannot_be_resumed()
    {
        using var run = new RoundRun();
        TrainingOptions options = run.Options;
        using var model = new TinyCausalLm(Vocab, SeqLen, seed: 1);
        var trainer = new Trainer(model, options);
        long[] half = [.. run.Data.TrainWindows.Take(8)];
        var asked = new List<int>();

        TrainingResult result = await trainer.TrainInSegmentsAsync(run.Data, [3, 2], k =>
        {
            asked.Add(k);
            return half;
        });

        Assert.Multiple(() =>
        {
            Assert.That(result.Steps, Is.EqualTo(5));
            Assert.That(asked, Is.EqualTo(new[] { 0, 1 }), "each segment's windows are asked for once, in order");
            Assert.That(
                async () => await new Trainer(model, options with { Steps = 5 }).TrainAsync(run.Data, resume: true),
                Throws.InstanceOf<InvalidDataException>().With.Message.Contains("segments").And.Message.Contains(Trainer.StateFileName));
            Assert.That(async () => await trainer.TrainInSegmentsAsync(run.Data, [], _ => half), Throws.ArgumentException);
            Assert.That(async () => await trainer.TrainInSegmentsAsync(run.Data, [2, 0], _ => half), Throws.ArgumentException.With.Message.Contains("Segment 1"));
        });
    }

    private static Dictionary<string, float[]> Weights(TinyCausalLm model) =>
        model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().cpu().data<float>().ToArray());

    /// <summary>A pattern token file, its window split and options whose warmup makes a second warmup visible.</summary>
    private sealed class RoundRun : IDisposable
    {
        private readonly string _dir = Directory.CreateTempSubdirectory("round-schedule").FullName;
        private readonly TokenFile _file;

        public RoundRun()
        {
            _file = TokenFile.Open(TrainingTestData.WritePatternFile(_dir, Vocab, 20, 40));
            DatasetSplit split = DatasetSplit.ByChunk(TokenWindows.Count(_file.Count, SeqLen), 0.1, 1);
            Data = new TrainingData(_file, split.Train, split.Validation);
            Options = new TrainingOptions
            {
                LearningRate = 1e-2,
                MinLearningRate = 1e-4,
                WarmupFraction = 0.2,
                BatchSize = 4,
                SeqLen = SeqLen,
                EvalEvery = 0,
                Steps = 1,
                OutputDir = Path.Combine(_dir, "out"),
            };
        }

        public TrainingData Data { get; }

        public TrainingOptions Options { get; }

        public void Dispose()
        {
            _file.Dispose();
            Directory.Delete(_dir, recursive: true);
        }
    }
}
