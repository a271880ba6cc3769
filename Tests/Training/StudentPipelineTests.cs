using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Tests.Modeling;
using ModelSurgery.Tests.Vocabulary;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Tests.Training;

/// <summary>The fluent chain past surgery: build -> distil or train -> evaluate, configured as a value and run once.</summary>
public sealed class StudentPipelineTests
{
    private string _dir = null!;
    private string _teacher = null!;
    private string _tokens = null!;
    private string _text = null!;
    private int[] _ids = null!;

    /// <summary>Small enough for the tiny model: six steps of two 32-token windows.</summary>
    private static readonly DistillationOptions Distillation = new() { Steps = 6, BatchSize = 2, SeqLen = 32, EvalEvery = 3, EvalBatches = 1, LearningRate = 1e-2, CheckpointEvery = 3, Device = "cpu" };

    private static readonly TrainingStageOptions Schedule = new() { Steps = 6, BatchSize = 2, SeqLen = 32, EvalEvery = 3, EvalBatches = 1, LearningRate = 1e-2, CheckpointEvery = 3, Device = "cpu" };

    [SetUp]
    public async Task SetUp()
    {
        _dir = Directory.CreateTempSubdirectory("pipeline").FullName;
        _teacher = Path.Combine(_dir, "teacher");
        (await TinyTokenizedModel.SaveAsync(_teacher)).Dispose();
        _ids = [.. TinyModels.RandomIds(800, TinyTokenizedModel.VocabSize, seed: 4).Select(i => (int)i)];
        _tokens = Path.Combine(_dir, "tokens.bin");
        using var writer = new TokenFileWriter(_tokens, TinyTokenizedModel.VocabSize, TinyTokenizedModel.EndOfText);
        writer.AppendDocument(_ids);
        writer.Complete();
        _text = Path.Combine(_dir, "heldout.txt");
        await File.WriteAllTextAsync(_text, "The jury said the election was conducted fairly, and the city thanked it.");
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private Surgeon Chain() => Surgeon.ForTeacher(_teacher)
        .CalibrateOn(_ids, sequences: 4, length: 32)
        .ScoreWith(ScoringMetrics.BlockInfluence, ScoringMetrics.L2)
        .Plan(plan => plan.KeepTopLayers(1).KeepNeuronFraction(0.5));

    private static readonly CheckpointTrainingSettings Split = new() { ValidationFraction = 0.1 };

    [Test]
    public async Task One_chain_builds_distils_and_evaluates_as_the_stages_do_by_hand()
    {
        var progress = new List<PipelineProgress>();
        StudentPipelineResult result = await Chain()
            .BuildStudent(Path.Combine(_dir, "student"))
            .Distill(_tokens, Distillation, Path.Combine(_dir, "run"))
            .RunWith(Split)
            .Evaluate(new EvaluationSuite { Text = [_text] })
            .ReportTo(new ListProgress<PipelineProgress>(progress))
            .RunAsync();

        // Every stage ran, in order, reporting through the one sink.
        Assert.That(progress.Select(p => p.Stage).Distinct(), Is.EqualTo(new[] { "surgery", "distillation", "evaluation" }));
        Assert.That(result.Surgery!.Plan.Layers, Has.Count.EqualTo(1));
        Assert.That(result.Student, Is.EqualTo(CheckpointTraining.FinalCheckpointPath(Path.Combine(_dir, "run"))));
        Assert.That(result.Training!.Runs[0].Steps, Is.EqualTo(Distillation.Steps));

        // The teacher (it has a tokenizer) is the reference row, the distilled student the second.
        Assert.That(result.Evaluations.Select(e => e.ModelName), Is.EqualTo(new[] { "teacher", "student" }));
        Assert.That(result.Report!.ToMarkdown(), Does.Contain("heldout"));

        // By hand: the same build, distillation and evaluation give the same figures.
        SurgeryResult surgery = await Chain().BuildAsync(Path.Combine(_dir, "student-by-hand"));
        Assert.That(surgery.Plan, Is.EqualTo(result.Surgery.Plan));
        CheckpointTrainingResult trained = await CheckpointTraining.DistillAsync(
            _teacher, surgery.Student.Directory, _tokens, Distillation.ToTrainingOptions(Path.Combine(_dir, "run-by-hand")), Distillation.ToSettings(), Split with { Device = "cpu" });
        Assert.That(result.Training.FinalLoss, Is.EqualTo(trained.FinalLoss));
        using LlamaForCausalLM model = ModelCheckpoint.Load(trained.FinalCheckpoint);
        ModelEvaluation byHand = await Evaluator.EvaluateAsync(
            model, TokenizerFiles.Load(trained.FinalCheckpoint), [TaskSpec.Text("heldout", _text)],
            new EvaluationOptions { ModelName = "student", MaxLength = model.Config.MaxPositionEmbeddings, PrefixTokenId = model.Config.BosTokenId ?? model.Config.EosTokenIds[0] });
        Assert.That(result.Evaluations[1].Tasks[0].Metrics[MetricNames.BitsPerByte].Value, Is.EqualTo(byHand.Tasks[0].Metrics[MetricNames.BitsPerByte].Value));
    }

    [Test]
    public async Task A_pipeline_is_a_value_that_starts_from_an_existing_student_and_trains_it()
    {
        SurgeryResult surgery = await Chain().BuildAsync(Path.Combine(_dir, "student"));
        StudentPipeline evaluateOnly = StudentPipeline.From(surgery).Evaluate(new EvaluationSuite { Text = [_text], IncludeTeacher = false });

        // Configuring a training stage returns a new pipeline; the first still only evaluates the built student.
        StudentPipeline train = evaluateOnly.Train(_tokens, Schedule, Path.Combine(_dir, "train"));
        StudentPipelineResult evaluated = await evaluateOnly.RunAsync();
        Assert.That(evaluated.Training, Is.Null);
        Assert.That(evaluated.Student, Is.EqualTo(surgery.Student.Directory));
        Assert.That(evaluated.Evaluations.Select(e => e.ModelName), Is.EqualTo(new[] { "student" }));

        var logger = new ListLogger();
        StudentPipelineResult trained = await train.RunWith(Split with { Device = "cpu" }).LogTo(logger).RunAsync();
        Assert.That(trained.Training!.Runs[0].Steps, Is.EqualTo(Schedule.Steps));
        // No progress object: the log says how training goes, from the first step to the last.
        Assert.That(logger.Lines, Has.Some.StartsWith("Step 1/").And.Some.StartsWith($"Step {Schedule.Steps}/{Schedule.Steps}: loss"));
        Assert.That(trained.Student, Is.EqualTo(CheckpointTraining.FinalCheckpointPath(Path.Combine(_dir, "train"))));
        Assert.That(trained.Evaluations[0].Tasks[0].Metrics[MetricNames.BitsPerByte].Value,
            Is.Not.EqualTo(evaluated.Evaluations[0].Tasks[0].Metrics[MetricNames.BitsPerByte].Value), "the evaluation saw the trained student");
    }

    [Test]
    public void Bad_options_are_refused_before_anything_runs_and_name_the_option()
    {
        string student = Path.Combine(_dir, "student");
        var ex = Assert.ThrowsAsync<ArgumentException>(() => Chain().BuildStudent(student)
            .Distill(_tokens, Distillation with { Steps = 0, Alpha = 2 }, Path.Combine(_dir, "run")).RunAsync());
        Assert.That(ex!.Message, Does.Contain("DistillationOptions.steps").And.Contain("DistillationOptions.alpha"));
        Assert.That(Directory.Exists(student), Is.False, "nothing was built");

        ex = Assert.ThrowsAsync<ArgumentException>(() => Chain().BuildStudent(student).Evaluate(new EvaluationSuite { Tasks = new Dictionary<string, string> { ["trivia"] = _text } }).RunAsync());
        Assert.That(ex!.Message, Does.Contain("EvaluationSuite.tasks.trivia: unknown task"));

        var noTeacher = Assert.ThrowsAsync<InvalidOperationException>(() => StudentPipeline.ForStudent(_teacher).Distill(_tokens, Distillation, Path.Combine(_dir, "run")).RunAsync());
        Assert.That(noTeacher!.Message, Does.Contain("DistilledFrom"));
    }

    [Test]
    public void The_stage_records_validate_in_one_place_with_the_callers_names()
    {
        Assert.That(new DistillationOptions().Validate(), Is.Empty);
        Assert.That(
            new DistillationOptions { MinLearningRate = 1, LearningRate = 0.1, EvalBatches = -1, Device = "tpu" }.Validate(key => "distillation." + key),
            Is.EqualTo(new[]
            {
                "distillation.min_learning_rate: must be in [0, distillation.learning_rate]",
                "distillation.eval_batches: must not be negative",
                "distillation.device: 'tpu' is not auto, cpu, cuda or cuda:N",
            }));
        Assert.That(new EvaluationSuite().Validate(), Is.EqualTo(new[] { "evaluation: give tasks or text files (or leave evaluation out)" }));
        Assert.That(new EvaluationSuite { Text = ["a.txt"], MaxLength = 0 }.Validate(), Is.EqualTo(new[] { "max_length: must be at least 1" }));

        // The trainer's options: the minimum learning rate defaults to a tenth of the peak.
        TrainingOptions training = new DistillationOptions { LearningRate = 2e-3 }.ToTrainingOptions("out");
        Assert.That((training.MinLearningRate, training.OutputDir), Is.EqualTo((2e-4, "out")));
        Assert.That(new DistillationOptions { MinLearningRate = 0 }.ToTrainingOptions("out").MinLearningRate, Is.Zero);
    }

    private sealed class ListProgress<T>(List<T> items) : IProgress<T>
    {
        public void Report(T value) => items.Add(value);
    }
}
