using ModelSurgery.Inference.Reporting;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Training;

public sealed class TrainerTests
{
    private const int Vocab = 16;
    private string _dir = null!;
    private TokenFile _file = null!;
    private DatasetSplit _split = null!;

    [SetUp]
    public void SetUp()
    {
        _dir = Directory.CreateTempSubdirectory("trainer").FullName;
        _file = TokenFile.Open(TrainingTestData.WritePatternFile(_dir, Vocab, documents: 40, documentLength: 50));
        _split = DatasetSplit.ByChunk(TokenWindows.Count(_file.Count, 16), 0.1, seed: 3);
    }

    [TearDown]
    public void TearDown()
    {
        _file.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private TrainingOptions Options(string name, long steps) => new()
    {
        LearningRate = 1e-2,
        MinLearningRate = 1e-4,
        BatchSize = 4,
        SeqLen = 16,
        Steps = steps,
        EvalEvery = 0,
        EvalBatches = 2,
        CheckpointEvery = 0,
        OutputDir = Path.Combine(_dir, name),
    };

    private TrainingData Data => new(_file, _split.Train, _split.Validation);

    [Test]
    public async Task Without_a_progress_object_the_log_reports_the_first_step_every_tenth_and_the_last()
    {
        using var model = new TinyCausalLm(Vocab, 16, seed: 1);
        var logger = new ListLogger();
        await new Trainer(model, Options("log", 40), logger: logger).TrainAsync(Data);

        var stepLines = logger.Lines.Where(l => l.StartsWith("Step ", StringComparison.Ordinal) && l.Contains("/40: loss", StringComparison.Ordinal)).ToList();
        long[] logged = [.. stepLines.Select(l => long.Parse(l[5..l.IndexOf('/', StringComparison.Ordinal)], System.Globalization.CultureInfo.InvariantCulture))];
        Assert.Multiple(() =>
        {
            // Tenths of 40 steps are every 4th step; a line per step would drown the log.
            Assert.That(logged, Is.SupersetOf(new long[] { 1, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40 }));
            Assert.That(logged, Is.Ordered.Ascending.And.Unique);
            Assert.That(logged, Has.Length.LessThan(40));
            Assert.That(stepLines, Has.All.Contain("tokens/s").And.Contain("ETA"));
        });
    }

    [Test]
    public async Task Training_sets_the_process_allocator_only_unless_the_host_opts_out()
    {
        Assume.That(OperatingSystem.IsLinux(), "the allocator settings exist on glibc only");
        using var model = new TinyCausalLm(Vocab, 16, seed: 1);
        var kept = new ListLogger();
        await new Trainer(model, Options("allocator-default", 1), logger: kept).TrainAsync(Data);
        var left = new ListLogger();
        await new Trainer(model, Options("allocator-opt-out", 1) with { KeepFreedMemoryInProcess = false }, logger: left).TrainAsync(Data);

        Assert.That(kept.Lines, Has.Some.Contain("keeps freed memory"), "by default training applies the setting");
        Assert.That(left.Lines, Has.None.Contain("keeps freed memory"), "opted out, the process's allocator is left alone");
    }

    [TestCase("40,40,40,40,40,40,40,40", false, 40, Description = "every step maps 40 MiB afresh: name the setting, once")]
    [TestCase("0,0,0,0,0,64,64,0", false, 64, Description = "the loop moved onto a pool thread after a checkpoint")]
    [TestCase("1,1,1,1,1,1,1,1", false, 0, Description = "a few pages per step are nothing to warn about")]
    [TestCase("40,40,40,40,40,40,40,40", true, 0, Description = "the process already runs on one arena: the setting would change nothing")]
    [TestCase("90,90,0,0,0,0,0,0", false, 0, Description = "the first steps allocate the optimizer's state once")]
    [TestCase("0,0,40,0,40,0,40,0", false, 0, Description = "one step in a while that grows something is not a pattern")]
    public async Task Steps_that_keep_faulting_in_fresh_memory_name_the_allocator_setting(string mebibytesPerStep, bool oneArena, int warnedMebibytes)
    {
        Assume.That(OperatingSystem.IsLinux(), "the allocator settings exist on glibc only");
        long[] pagesPerStep = [.. mebibytesPerStep.Split(',').Select(m => (long.Parse(m, System.Globalization.CultureInfo.InvariantCulture) << 20) / Environment.SystemPageSize)];
        using var model = new TinyCausalLm(Vocab, 16, seed: 1);
        var logger = new ListLogger();
        // A process whose step k faults pagesPerStep[k] pages; the trainer reads the count before and after each step.
        int calls = 0;
        long total = 0;
        long? Count()
        {
            if (calls++ % 2 == 1)
            {
                total += pagesPerStep[(calls - 1) / 2];
            }

            return total;
        }

        var trainer = new Trainer(model, Options("fresh-memory", pagesPerStep.Length), logger: logger) { CountMinorPageFaults = Count, StartedWithOneArena = () => oneArena };
        await trainer.TrainAsync(Data);

        string[] warnings = [.. logger.Lines.Where(l => l.Contains("Start the process with MALLOC_ARENA_MAX=1", StringComparison.Ordinal))];
        Assert.Multiple(() =>
        {
            Assert.That(calls, Is.EqualTo(2 * pagesPerStep.Length), "every step is counted, before and after");
            Assert.That(warnings, Has.Length.EqualTo(warnedMebibytes > 0 ? 1 : 0));
            if (warnedMebibytes > 0)
            {
                long pages = ((long)warnedMebibytes << 20) / Environment.SystemPageSize;
                Assert.That(warnings[0], Does.Contain($"faults in {warnedMebibytes} MiB of fresh memory ({pages} page faults)"));
            }
        });
    }

    [Test]
    public async Task A_host_that_keeps_its_own_allocator_settings_gets_no_page_fault_count_or_warning()
    {
        using var model = new TinyCausalLm(Vocab, 16, seed: 1);
        var logger = new ListLogger();
        int calls = 0;
        var trainer = new Trainer(model, Options("own-allocator", 6) with { KeepFreedMemoryInProcess = false }, logger: logger)
        {
            CountMinorPageFaults = () => ++calls * (1L << 20),
            StartedWithOneArena = () => false,
        };
        await trainer.TrainAsync(Data);

        Assert.Multiple(() =>
        {
            Assert.That(calls, Is.Zero, "the faults are counted only where the trainer set the allocator up");
            Assert.That(logger.Lines, Has.None.Contain("MALLOC_ARENA_MAX"));
        });
    }

    [Test]
    public async Task Loss_falls_on_a_learnable_sequence()
    {
        using var model = new TinyCausalLm(Vocab, 16, seed: 1);
        TrainingResult result = await new Trainer(model, Options("fall", 30)).TrainAsync(Data);
        double first = result.History[0].Loss;
        double last = result.History.TakeLast(5).Average(r => r.Loss);
        Assert.Multiple(() =>
        {
            Assert.That(result.Steps, Is.EqualTo(30));
            Assert.That(first, Is.GreaterThan(2.0), "an untrained model is near ln 16 = 2.77");
            Assert.That(last, Is.LessThan(first * 0.5));
            Assert.That(result.BestValidationLoss, Is.LessThan(first * 0.5));
        });
    }

    [TestCase(TrainingPrecision.Fp32)]
    [TestCase(TrainingPrecision.Bf16)]
    public async Task A_resumed_run_reproduces_the_uninterrupted_losses_exactly(TrainingPrecision precision)
    {
        const int Steps = 8;
        using var reference = new TinyCausalLm(Vocab, 16, seed: 1);
        TrainingResult full = await new Trainer(reference, Options("full", Steps) with { GradAccumulation = 2, Precision = precision }).TrainAsync(Data);

        // Stop after step 3 through cancellation (the trainer saves its state first), then resume into a model built
        // from a different seed, so only the saved state can make the runs agree.
        TrainingOptions options = Options("stopped", Steps) with { GradAccumulation = 2, Precision = precision };
        using var cancel = new CancellationTokenSource();
        using (var first = new TinyCausalLm(Vocab, 16, seed: 1))
        {
            var stopAt3 = new SynchronousProgress<TrainingProgress>(p =>
            {
                if (p.Completed == 3)
                {
                    cancel.Cancel();
                }
            });
            Assert.That(async () => await new Trainer(first, options).TrainAsync(Data, stopAt3, cancellationToken: cancel.Token), Throws.InstanceOf<OperationCanceledException>());
        }

        Assert.That(File.Exists(Trainer.StatePath(options.OutputDir)));
        torch.random.manual_seed(999); // disturb the global generator; the state restores it
        using var second = new TinyCausalLm(Vocab, 16, seed: 2);
        TrainingResult resumed = await new Trainer(second, options).TrainAsync(Data, resume: true);

        double[] expected = [.. full.History.Select(r => r.Loss)];
        double[] actual = [.. resumed.History.Select(r => r.Loss)];
        Assert.Multiple(() =>
        {
            Assert.That(resumed.History, Has.Count.EqualTo(Steps));
            Assert.That(actual, Is.EqualTo(expected), "bitwise equal losses, not within a tolerance");
            foreach (var ((name, a), (_, b)) in reference.named_parameters().Zip(second.named_parameters()))
            {
                // bf16 weights widen to float32 exactly, so this is a bitwise comparison in either precision.
                Assert.That(a.to_type(ScalarType.Float32).data<float>().ToArray(), Is.EqualTo(b.to_type(ScalarType.Float32).data<float>().ToArray()), name);
            }

            string[] csv = File.ReadAllLines(Path.Combine(options.OutputDir, "metrics.csv"));
            Assert.That(csv.Count(l => !l.EndsWith(',') && !l.StartsWith("step", StringComparison.Ordinal)), Is.EqualTo(1), "one final evaluation row");
        });
    }

    [Test]
    public async Task Resuming_a_different_run_is_refused_with_the_state_file_name()
    {
        using var model = new TinyCausalLm(Vocab, 8, seed: 1);
        TrainingOptions options = Options("mismatch", 2);
        await new Trainer(model, options).TrainAsync(Data);
        Assert.That(
            async () => await new Trainer(model, options with { Steps = 3 }).TrainAsync(Data, resume: true),
            Throws.TypeOf<ResumeMismatchException>().With.Message.Contains(Trainer.StateFileName).And.Message.Contains("has 2").And.Property(nameof(ResumeMismatchException.Option)).EqualTo("Steps"));
    }

    [Test]
    public async Task Non_finite_steps_are_skipped_without_touching_the_weights()
    {
        using var model = new TinyCausalLm(Vocab, 16, seed: 1);
        var objective = new PoisonedObjective(poisonedCalls: [3]);
        float[]? before = null;
        float[]? after = null;
        var progress = new SynchronousProgress<TrainingProgress>(p =>
        {
            if (p.Completed == 2)
            {
                before = model.named_parameters().First().parameter.data<float>().ToArray();
            }

            if (p.Completed == 3)
            {
                after = model.named_parameters().First().parameter.data<float>().ToArray();
            }
        });

        TrainingResult result = await new Trainer(model, Options("nan", 6), objective).TrainAsync(Data, progress);
        bool[] skipped = [false, false, true, false, false, false];
        Assert.Multiple(() =>
        {
            Assert.That(result.History.Select(r => r.Skipped), Is.EqualTo(skipped));
            Assert.That(double.IsNaN(result.History[2].Loss));
            Assert.That(after, Is.EqualTo(before), "the skipped step left the weights alone");
            Assert.That(result.History.Where(r => !r.Skipped).All(r => double.IsFinite(r.Loss)));
        });
    }

    [Test]
    public void Training_stops_after_too_many_non_finite_steps_in_a_row()
    {
        using var model = new TinyCausalLm(Vocab, 16, seed: 1);
        var objective = new PoisonedObjective(poisonedCalls: [.. Enumerable.Range(1, 100)]);
        Assert.That(
            async () => await new Trainer(model, Options("diverged", 20) with { MaxNonFiniteSteps = 3 }, objective).TrainAsync(Data),
            Throws.TypeOf<TrainingDivergedException>().With.Message.Contains("step 3").And.Message.Contains("MaxNonFiniteSteps = 3"));
    }

    [Test]
    public void Weights_grown_a_million_fold_stop_the_run_with_their_norm()
    {
        // The loss -sum(weights) stays finite however large the weights get, and Adam moves every weight by about the
        // learning rate each step: at 1e8 the first step multiplies the weight norm far beyond the 1e6-fold bound.
        using var model = new TinyCausalLm(Vocab, 16, seed: 1);
        TrainingOptions options = Options("grown", 5) with { LearningRate = 1e8, MinLearningRate = 1e8, WarmupFraction = 0, WeightDecay = 0 };
        Assert.That(
            async () => await new Trainer(model, options, new GrowingObjective()).TrainAsync(Data),
            Throws.TypeOf<TrainingDivergedException>().With.Message.Contains("step 1: the weights diverged"));
    }

    [Test]
    public async Task Weights_that_grow_within_the_bound_do_not_stop_the_run()
    {
        // The same objective at a learning rate of 1e-3 grows the weights a little each step: well within the bound.
        using var model = new TinyCausalLm(Vocab, 16, seed: 1);
        TrainingOptions options = Options("within", 5) with { LearningRate = 1e-3, MinLearningRate = 1e-3, WarmupFraction = 0, WeightDecay = 0 };
        TrainingResult result = await new Trainer(model, options, new GrowingObjective()).TrainAsync(Data);
        Assert.That(result.Steps, Is.EqualTo(5));
    }

    [Test]
    public async Task Live_tensor_count_does_not_grow_across_100_steps()
    {
        using var model = new TinyCausalLm(Vocab, 4, seed: 1);
        long at10 = 0;
        long at100 = 0;
        var progress = new SynchronousProgress<TrainingProgress>(p =>
        {
            if (p.Completed == 10)
            {
                at10 = torch.Tensor.TotalCount;
            }

            if (p.Completed == 100)
            {
                at100 = torch.Tensor.TotalCount;
            }
        });

        await new Trainer(model, Options("memory", 100) with { BatchSize = 1, SeqLen = 4 }).TrainAsync(new TrainingData(_file, _split.Train, []), progress);
        // A leak of even one tensor per step would add 90.
        Assert.That(at100 - at10, Is.LessThanOrEqualTo(5), $"live tensors at step 10: {at10}, at step 100: {at100}");
    }

    [Test]
    public async Task Metrics_charts_checkpoints_and_state_are_written()
    {
        using var model = new TinyCausalLm(Vocab, 16, seed: 1);
        var saved = new List<string>();
        var checkpointer = new DelegateModelCheckpointer((m, directory, _) =>
        {
            saved.Add(Path.GetFileName(directory));
            File.WriteAllText(Path.Combine(directory, "model.marker"), m.GetName());
            return Task.CompletedTask;
        });
        TrainingOptions options = Options("metrics", 10) with { EvalEvery = 5, CheckpointEvery = 4 };
        var reports = new List<TrainingProgress>();

        await new Trainer(model, options, checkpointer: checkpointer).TrainAsync(Data, new SynchronousProgress<TrainingProgress>(reports.Add));

        string[] jsonl = File.ReadAllLines(Path.Combine(options.OutputDir, "metrics.jsonl"));
        string[] csv = File.ReadAllLines(Path.Combine(options.OutputDir, "metrics.csv"));
        byte[] png = File.ReadAllBytes(Path.Combine(options.OutputDir, "loss.png"));
        Assert.Multiple(() =>
        {
            Assert.That(jsonl.Count(l => l.Contains("\"loss\"", StringComparison.Ordinal)), Is.EqualTo(10));
            Assert.That(jsonl.Count(l => l.Contains("\"val_loss\"", StringComparison.Ordinal)), Is.EqualTo(2));
            Assert.That(csv[0], Is.EqualTo("step,loss,lr,grad_norm,skipped,val_loss"));
            Assert.That(csv, Has.Length.EqualTo(13));
            Assert.That(png[..4], Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47 }));
            Assert.That(saved, Does.Contain("best").And.Contain("last"));
            Assert.That(saved.Count(s => s == "last"), Is.EqualTo(3), "steps 4, 8 and 10");
            Assert.That(File.Exists(Path.Combine(options.OutputDir, "checkpoints", "best", "model.marker")));
            Assert.That(File.Exists(Trainer.StatePath(options.OutputDir)));
            Assert.That(reports.Select(r => r.Completed), Is.EqualTo(Enumerable.Range(1, 10).Select(i => (long)i)));
            Assert.That(reports.Where(r => r.ValidationLoss is not null).Select(r => r.Completed), Is.EqualTo(new long[] { 5, 10 }));
            Assert.That(reports[^1].TokensPerSecond, Is.GreaterThan(0));
            Assert.That(reports[^1].Eta, Is.EqualTo(TimeSpan.Zero));
            Assert.That(Directory.GetFiles(options.OutputDir, "*.tmp*", SearchOption.AllDirectories), Is.Empty);
        });
    }

    [Test]
    public async Task Bf16_training_keeps_bf16_weights_and_learns()
    {
        using var model = new TinyCausalLm(Vocab, 16, seed: 1);
        TrainingResult result = await new Trainer(model, Options("bf16", 20) with { Precision = TrainingPrecision.Bf16 }).TrainAsync(Data);
        Assert.Multiple(() =>
        {
            Assert.That(model.parameters().Select(p => p.dtype).Distinct(), Is.EqualTo(new[] { ScalarType.BFloat16 }));
            Assert.That(result.History.TakeLast(5).Average(r => r.Loss), Is.LessThan(result.History[0].Loss * 0.6));
        });
    }

    /// <summary>Cross-entropy that returns NaN on chosen calls (1-based), to inject non-finite steps.</summary>
    // Rewards large weights: minimising -sum(weights) grows every weight steadily, while the loss stays finite.
    private sealed class GrowingObjective : ITrainingObjective
    {
        public IReadOnlyList<(string Name, Parameter Parameter)> Parameters => [];

        public Tensor Loss(nn.Module<Tensor, Tensor> model, TrainingBatch batch)
        {
            Tensor total = torch.zeros(1); // [1]
            foreach (Parameter p in model.parameters())
            {
                total = total - p.sum();
            }

            return total.sum();
        }
    }

    private sealed class PoisonedObjective(IReadOnlyCollection<int> poisonedCalls) : ITrainingObjective
    {
        private int _calls;

        public IReadOnlyList<(string Name, Parameter Parameter)> Parameters => [];

        public Tensor Loss(nn.Module<Tensor, Tensor> model, TrainingBatch batch)
        {
            Tensor loss = CrossEntropyObjective.Instance.Loss(model, batch);
            return poisonedCalls.Contains(++_calls) ? loss * double.NaN : loss;
        }
    }
}

/// <summary>Keeps every formatted log message.</summary>
internal sealed class ListLogger : Microsoft.Extensions.Logging.ILogger
{
    private readonly Lock _gate = new();
    private readonly List<string> _lines = [];

    public IReadOnlyList<string> Lines
    {
        get
        {
            lock (_gate)
            {
                return [.. _lines];
            }
        }
    }

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;

    public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_gate)
        {
            _lines.Add(formatter(state, exception));
        }
    }
}
