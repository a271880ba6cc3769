using System.CommandLine;
using ModelSurgery.Cli;
using ModelSurgery.Cli.Commands;
using ModelSurgery.Training;
using ModelSurgery.Training.Distillation;
using ModelSurgery.Training.MultiRound;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Tests.Cli;

/// <summary>
/// Every flag of <c>train</c> and <c>distill</c> reaches the stage's record (or the run's settings), and a flag left out
/// takes the record's default: the command lines are parsed and bound as the commands bind them, without running.
/// </summary>
public sealed class TrainingFlagBindingTests
{
    // Longer than any default window, so the record's seq_len is not capped by the model.
    private const int MaxPositions = 1024;

    // Stands for a second checkpoint folder (a config.json is all binding reads).
    private const string Other = "{other-model}";

    private string _dir = null!;
    private string _model = null!;

    [SetUp]
    public void SetUp()
    {
        _dir = Directory.CreateTempSubdirectory("flag-binding").FullName;
        _model = Directory.CreateDirectory(Path.Combine(_dir, "model")).FullName;
        (TrainCliSupport.Config() with { MaxPositionEmbeddings = MaxPositions }).Save(Path.Combine(_model, "config.json"));
        string other = Directory.CreateDirectory(Path.Combine(_dir, "other-model")).FullName;
        (TrainCliSupport.Config() with { MaxPositionEmbeddings = MaxPositions }).Save(Path.Combine(other, "config.json"));
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    /// <summary>The flags both commands share: each with a value that is not its default and what it must set.</summary>
    private static IEnumerable<TestCaseData> ScheduleFlags()
    {
        static TestCaseData Case(string[] args, Func<TrainingRun, object?> actual, object? expected) =>
            new TestCaseData(args, (Func<object, object?>)(run => actual((TrainingRun)run)), expected).SetArgDisplayNames(string.Join(' ', args));

        yield return Case(["--steps", "7"], r => r.Stage.Steps, 7L);
        yield return Case(["--tokens", "4096"], r => (r.Stage.Tokens, r.Stage.Steps), (4096L, (long?)null));
        yield return Case(["--lr", "0.002"], r => r.Stage.LearningRate, 0.002);
        yield return Case(["--min-lr", "0.0001"], r => r.Stage.MinLearningRate, 0.0001);
        yield return Case(["--warmup-fraction", "0.1"], r => r.Stage.WarmupFraction, 0.1);
        yield return Case(["--weight-decay", "0.05"], r => r.Stage.WeightDecay, 0.05);
        yield return Case(["--grad-clip", "0.5"], r => r.Stage.GradClip, 0.5);
        yield return Case(["--batch-size", "4", "--seq-len", "16", "--batch-tokens", "2048"], r => r.Stage.GradAccum, 2048 / (4 * 16));
        yield return Case(["--batch-size", "3"], r => r.Stage.BatchSize, 3);
        yield return Case(["--seq-len", "32"], r => r.Stage.SeqLen, 32);
        yield return Case(["--grad-accum", "4"], r => r.Stage.GradAccum, 4);
        yield return Case(["--eval-every", "0"], r => r.Stage.EvalEvery, 0);
        yield return Case(["--eval-batches", "3"], r => r.Stage.EvalBatches, 3);
        yield return Case(["--checkpoint-every", "0"], r => r.Stage.CheckpointEvery, 0);
        yield return Case(["--precision", "bf16"], r => r.Stage.Precision, TrainingPrecision.Bf16);
        yield return Case(["--max-non-finite-steps", "5"], r => r.Stage.MaxNonFiniteSteps, 5);
        yield return Case(["--seed", "99"], r => r.Stage.Seed, 99UL);
        yield return Case(["--device", "cpu"], r => (r.Stage.Device, r.Settings.Device), ("cpu", "cpu"));
        yield return Case(["--rounds", "3"], r => r.Settings.Rounds, new MultiRoundOptions(3, 0.5, RoundSchedule.Restart));
        yield return Case(["--rounds", "2", "--round-ratio", "0.25"], r => r.Settings.Rounds!.Ratio, 0.25);
        yield return Case(["--rounds", "2", "--round-schedule", "continue"], r => r.Settings.Rounds!.Schedule, RoundSchedule.Continue);
        yield return Case(["--resume"], r => r.Settings.Resume, true);
        yield return Case(["--val-fraction", "0.2"], r => r.Settings.ValidationFraction, 0.2);
        yield return Case(["--data", "other.tokens"], r => r.Data, "other.tokens");
        yield return Case(["--out", "other-run"], r => r.Output, "other-run");
    }

    /// <summary>The flags only <c>distill</c> has.</summary>
    private static IEnumerable<TestCaseData> DistillFlags()
    {
        static TestCaseData Case(string[] args, Func<TrainingRun, object?> actual, object? expected) =>
            new TestCaseData(args, (Func<object, object?>)(run => actual((TrainingRun)run)), expected).SetArgDisplayNames(string.Join(' ', args));

        static DistillationOptions Loss(TrainingRun run) => (DistillationOptions)run.Stage;

        yield return Case(["--kd-loss", "jsd"], r => Loss(r).KdLoss, DistillationDivergence.JensenShannon);
        yield return Case(["--temperature", "2"], r => Loss(r).Temperature, 2.0);
        yield return Case(["--alpha", "0.25"], r => Loss(r).Alpha, 0.25);
        yield return Case(["--teacher-cache", "teacher.cache"], r => Loss(r).TeacherCache, "teacher.cache");
        yield return Case(["--plan", "plan.json"], r => Loss(r).HiddenStatePlan, "plan.json");
        yield return Case(["--hidden-weight", "0.5"], r => Loss(r).HiddenWeight, 0.5);
        yield return Case(["--teacher-dtype", "bf16"], r => Loss(r).TeacherDtype, TrainingPrecision.Bf16);
        yield return Case(["--teacher", "other-teacher"], r => r.Pipeline.TeacherDirectory, "other-teacher");
        yield return Case(["--student", Other], r => r.Pipeline.StudentDirectory, Other);
    }

    /// <summary>The flag only <c>train</c> has.</summary>
    private static IEnumerable<TestCaseData> TrainFlags()
    {
        yield return new TestCaseData(new[] { "--model", Other }, (Func<object, object?>)(r => ((TrainingRun)r).Pipeline.StudentDirectory), Other).SetArgDisplayNames("--model");
    }

    [TestCaseSource(nameof(ScheduleFlags))]
    [TestCaseSource(nameof(TrainFlags))]
    public void A_train_flag_reaches_the_record(string[] args, Func<object, object?> actual, object? expected)
    {
        TrainingRun run = BindTrain(args);
        Assert.That(actual(run), Is.EqualTo(Expand(expected)));
        Assert.That(run.Stage, Is.TypeOf<TrainingStageOptions>(), "train takes the training stage's record");
    }

    [TestCaseSource(nameof(ScheduleFlags))]
    [TestCaseSource(nameof(DistillFlags))]
    public void A_distill_flag_reaches_the_record(string[] args, Func<object, object?> actual, object? expected)
    {
        TrainingRun run = BindDistill(args);
        Assert.That(actual(run), Is.EqualTo(Expand(expected)));
        Assert.That(run.Stage, Is.TypeOf<DistillationOptions>(), "distill takes the distillation stage's record");
    }

    [Test]
    public void The_table_covers_every_flag_of_both_commands()
    {
        static IEnumerable<string> Covered(IEnumerable<TestCaseData> cases) =>
            cases.SelectMany(c => ((string[])c.Arguments[0]!).Where(a => a.StartsWith("--", StringComparison.Ordinal)));

        // --force is the output folder's guard, not an option of the run.
        string[] notBound = ["--force"];
        string[] train = [.. Covered(ScheduleFlags()), .. Covered(TrainFlags()), .. notBound];
        string[] distill = [.. Covered(ScheduleFlags()), .. Covered(DistillFlags()), .. notBound];
        Assert.That(Flags(TrainCommand.Create(Context(), out _)), Is.SubsetOf(train));
        Assert.That(Flags(DistillCommand.Create(Context(), out _)), Is.SubsetOf(distill));
    }

    [Test]
    public void Flags_left_out_take_the_records_defaults()
    {
        TrainingRun train = BindTrain([]);
        Assert.That(train.Stage, Is.EqualTo(new TrainingStageOptions()));
        Assert.That(train.Settings, Is.EqualTo(new CheckpointTrainingSettings { Device = new TrainingStageOptions().Device }));

        TrainingRun distill = BindDistill([]);
        Assert.That(distill.Stage, Is.EqualTo(new DistillationOptions()));
        Assert.That(distill.Stage.TotalSteps(), Is.EqualTo(TrainingStageOptions.DefaultSteps));
    }

    [Test]
    public void The_default_window_is_capped_by_the_models_positions()
    {
        (TrainCliSupport.Config() with { MaxPositionEmbeddings = 64 }).Save(Path.Combine(_model, "config.json"));
        Assert.That(new TrainingStageOptions().SeqLen, Is.GreaterThan(64), "the cap is what this test sees");
        Assert.That(BindTrain([]).Stage.SeqLen, Is.EqualTo(64));
    }

    [TestCase(new[] { "--steps", "2", "--tokens", "1000" }, "--steps", "--tokens")]
    [TestCase(new[] { "--tokens", "0" }, "--tokens", "at least 1")]
    [TestCase(new[] { "--grad-accum", "0" }, "--grad-accum", "at least 1")]
    [TestCase(new[] { "--weight-decay", "-0.1" }, "--weight-decay", "negative")]
    [TestCase(new[] { "--grad-clip", "-1" }, "--grad-clip", "negative")]
    [TestCase(new[] { "--max-non-finite-steps", "0" }, "--max-non-finite-steps", "at least 1")]
    [TestCase(new[] { "--eval-every", "-1" }, "--eval-every", "negative")]
    [TestCase(new[] { "--checkpoint-every", "-1" }, "--checkpoint-every", "negative")]
    [TestCase(new[] { "--min-lr", "0.5", "--lr", "0.1" }, "--min-lr", "--lr")]
    public void An_invalid_value_is_refused_naming_the_flag(string[] args, string flag, string problem)
    {
        foreach (Func<string[], TrainingRun> bind in new Func<string[], TrainingRun>[] { BindTrain, BindDistill })
        {
            var ex = Assert.Throws<UsageException>(() => bind(args));
            Assert.That(ex!.Message, Does.StartWith(flag + ":").And.Contain(problem));
        }
    }

    [Test]
    public void A_refused_resume_names_the_flag_of_every_option_the_trainer_checks()
    {
        string[] trainFlags = Flags(TrainCommand.Create(Context(), out _));
        string[] distillFlags = Flags(DistillCommand.Create(Context(), out _));
        foreach (string option in Trainer.ResumeCheckedOptions)
        {
            string? flag = TrainingFlags.ResumeFlag(option);
            Assert.That(flag, Is.Not.Null, $"{option} has a flag (or says it has none)");
            const string Rest = " is 1 in this run but was 2 in the run that wrote 'state.bin'; a resumed run needs the same options (or start over).";
            string message = TrainingFlags.ResumeMessage(new ResumeMismatchException(option, "Training option " + option + Rest));
            Assert.That(message, Is.EqualTo(flag + Rest), "the flag in place of the property, the rest kept");

            // Every flag named is one both commands take.
            foreach (string named in flag!.Split(' ', '(', ')').Where(w => w.StartsWith("--", StringComparison.Ordinal)))
            {
                Assert.That(trainFlags, Does.Contain(named), option);
                Assert.That(distillFlags, Does.Contain(named), option);
            }
        }

        Assert.That(TrainingFlags.ResumeFlag("LearningRate"), Is.EqualTo("--lr"));
        Assert.That(TrainingFlags.ResumeFlag("Steps"), Is.EqualTo("--steps or --tokens"));
        Assert.That(TrainingFlags.ResumeFlag("Data"), Is.EqualTo("--data"));
        var unknown = new ResumeMismatchException("Other", "Training option Other differs.");
        Assert.That(TrainingFlags.ResumeMessage(unknown), Is.EqualTo(unknown.Message), "an option without a flag keeps the trainer's words");
    }

    private static CliContext Context() => new(TextWriter.Null, TextWriter.Null);

    private static string[] Flags(Command command) => [.. command.Options.Select(o => o.Name)];

    private object? Expand(object? expected) => expected is string text ? text.Replace(Other, Path.Combine(_dir, "other-model"), StringComparison.Ordinal) : expected;

    private TrainingRun BindTrain(string[] args) =>
        Bind((CliContext context, out Func<ParseResult, TrainingRun> bind) => TrainCommand.Create(context, out bind), [("--model", _model), ("--data", "train.tokens"), ("--out", "run")], args);

    private TrainingRun BindDistill(string[] args) =>
        Bind((CliContext context, out Func<ParseResult, TrainingRun> bind) => DistillCommand.Create(context, out bind), [("--student", _model), ("--teacher", "teacher"), ("--data", "train.tokens"), ("--out", "run")], args);

    /// <summary>Parses the required flags (unless the case gives its own) and the case's, and binds them as the command does.</summary>
    private TrainingRun Bind(CreateCommand create, (string Flag, string Value)[] required, string[] args)
    {
        Command command = create(Context(), out Func<ParseResult, TrainingRun> bind);
        string[] line = [.. required.Where(r => !args.Contains(r.Flag)).SelectMany(r => new[] { r.Flag, r.Value }), .. args.Select(a => (string)Expand(a)!)];
        ParseResult parsed = command.Parse(line);
        Assert.That(parsed.Errors, Is.Empty, string.Join("; ", parsed.Errors.Select(e => e.Message)));
        return bind(parsed);
    }

    private delegate Command CreateCommand(CliContext context, out Func<ParseResult, TrainingRun> bind);
}
