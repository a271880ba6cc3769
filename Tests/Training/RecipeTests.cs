using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Training;
using ModelSurgery.Training.Distillation;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Tests.Training;

public sealed class RecipeTests
{
    private string _dir = null!;
    private string _recipe = null!;
    private string _work = null!;

    [SetUp]
    public async Task SetUp()
    {
        _dir = Directory.CreateTempSubdirectory("recipe").FullName;
        _recipe = await RecipeFixture.CreateAsync(_dir);
        _work = Path.Combine(_dir, "work");
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private string StepDir(string name) => Path.Combine(_work, $"{RecipeRunner.StepNames.ToList().IndexOf(name) + 1:D2}-{name}");

    private Dictionary<string, DateTime> StepStamps() =>
        RecipeRunner.StepNames.ToDictionary(n => n, n => File.GetLastWriteTimeUtc(Path.Combine(StepDir(n), RecipeRunner.StepFileName)));

    private static RecipeStepStatus[] Statuses(RecipeSummary summary) => [.. summary.Steps.Select(s => s.Status)];

    [Test]
    public async Task A_recipe_runs_every_step_and_a_rerun_skips_them_all()
    {
        var reports = new List<RecipeProgress>();
        RecipeSummary first = await RecipeRunner.RunAsync(_recipe, _work, new Inline(reports.Add));

        Assert.That(first.Steps.Select(s => s.Name), Is.EqualTo(RecipeRunner.StepNames));
        Assert.That(Statuses(first), Is.All.EqualTo(RecipeStepStatus.Ran));
        Assert.That(RecipeRunner.StepNames.Select(n => File.Exists(Path.Combine(StepDir(n), RecipeRunner.StepFileName))), Is.All.True);

        // Each step's outputs: a compressed teacher, a token file in its vocabulary, scores, a plan, the student, its distillation, a report.
        LlamaConfig compressed = LlamaConfig.Load(Path.Combine(first["vocabulary"].Outputs["teacher"], "config.json"));
        Assert.That(compressed.VocabSize, Is.LessThan(1001));
        Assert.That(File.Exists(first["data"].Outputs["tokens"]), Is.True);
        Assert.That(long.Parse(first["data"].Outputs["token_count"], System.Globalization.CultureInfo.InvariantCulture), Is.GreaterThan(500));
        Assert.That(File.Exists(Path.Combine(StepDir("scoring"), "scores.json")), Is.True);
        Assert.That(File.Exists(Path.Combine(StepDir("plan"), "plan.json")), Is.True);
        LlamaConfig student = LlamaConfig.Load(Path.Combine(StepDir("build"), "student", "config.json"));
        Assert.That((student.NumHiddenLayers, student.NumKeyValueHeads, student.NumAttentionHeads, student.IntermediateSize, student.VocabSize),
            Is.EqualTo((1, 1, 2, 32, compressed.VocabSize)));
        Assert.That(first.StudentCheckpoint, Is.EqualTo(Path.Combine(StepDir("distillation"), "checkpoints", "final")));
        Assert.That(File.Exists(Path.Combine(first.StudentCheckpoint, "tokenizer.json")), Is.True);
        Assert.That(TrainingLines(), Is.EqualTo(6));
        Assert.That(File.Exists(Path.Combine(StepDir("evaluation"), "report.md")), Is.True);
        Assert.That(first.EvaluationTable, Does.Contain("teacher").And.Contain("student").And.Contain("eval"));

        // Progress says what it counts: the caller shows it without guessing from the step's name.
        List<RecipeProgress> running = [.. reports.Where(r => !r.StepFinished && r.Completed > 0)];
        Assert.That(running.Where(r => r.Step == "data").Select(r => r.Unit), Is.Not.Empty.And.All.EqualTo(ProgressUnit.Documents));
        Assert.That(running.Where(r => r.Step == "vocabulary" && r.Status.StartsWith("building", StringComparison.Ordinal)).Select(r => r.Unit), Is.Not.Empty.And.All.EqualTo(ProgressUnit.Bytes));
        List<RecipeProgress> training = [.. running.Where(r => r.Step == "distillation")];
        Assert.That(training.Select(r => (r.Unit, r.Total)), Is.Not.Empty.And.All.EqualTo((ProgressUnit.Steps, (long?)6)));
        Assert.That(training[^1].Completed, Is.EqualTo(6));
        // The evaluator's own units: log-likelihood requests of a multiple-choice task, documents of a text task.
        Assert.That(running.Where(r => r.Step == "evaluation").Select(r => r.Unit), Is.Not.Empty.And.All.AnyOf(ProgressUnit.Requests, ProgressUnit.Documents));
        Assert.That(running.Where(r => r.Total is not null), Is.All.Matches<RecipeProgress>(r => r.Completed <= r.Total));

        Dictionary<string, DateTime> stamps = StepStamps();
        DateTime studentWritten = File.GetLastWriteTimeUtc(Path.Combine(first.StudentCheckpoint, "config.json"));
        RecipeSummary second = await RecipeRunner.RunAsync(_recipe, _work);
        Assert.That(Statuses(second), Is.All.EqualTo(RecipeStepStatus.Skipped));
        Assert.That(StepStamps(), Is.EqualTo(stamps));
        Assert.That(File.GetLastWriteTimeUtc(Path.Combine(second.StudentCheckpoint, "config.json")), Is.EqualTo(studentWritten));
        Assert.That(second.EvaluationTable, Is.EqualTo(first.EvaluationTable));

        // A step left without step.json (interrupted) is redone from an empty folder.
        File.Delete(Path.Combine(StepDir("evaluation"), RecipeRunner.StepFileName));
        File.WriteAllText(Path.Combine(StepDir("evaluation"), "partial.tmp"), "left over");
        RecipeSummary third = await RecipeRunner.RunAsync(_recipe, _work);
        Assert.That(third["evaluation"].Status, Is.EqualTo(RecipeStepStatus.Ran));
        Assert.That(Statuses(third).Take(6), Is.All.EqualTo(RecipeStepStatus.Skipped));
        Assert.That(File.Exists(Path.Combine(StepDir("evaluation"), "partial.tmp")), Is.False);
    }

    [Test]
    public async Task Changing_the_plan_targets_reruns_the_plan_and_every_later_step_only()
    {
        await RecipeRunner.RunAsync(_recipe, _work);
        Dictionary<string, DateTime> stamps = StepStamps();

        JsonObject recipe = RecipeFixture.Recipe();
        recipe["plan"]!["layers"] = 2;
        RecipeFixture.WriteRecipe(_dir, recipe);
        RecipeSummary changed = await RecipeRunner.RunAsync(_recipe, _work);

        Assert.That(Statuses(changed), Is.EqualTo(new[]
        {
            RecipeStepStatus.Skipped, RecipeStepStatus.Skipped, RecipeStepStatus.Skipped,
            RecipeStepStatus.Ran, RecipeStepStatus.Ran, RecipeStepStatus.Ran, RecipeStepStatus.Ran, RecipeStepStatus.Ran,
        }));
        Dictionary<string, DateTime> after = StepStamps();
        Assert.That(new[] { "vocabulary", "data", "scoring" }.Select(n => after[n]), Is.EqualTo(new[] { "vocabulary", "data", "scoring" }.Select(n => stamps[n])));
        Assert.That(LlamaConfig.Load(Path.Combine(changed.StudentCheckpoint, "config.json")).NumHiddenLayers, Is.EqualTo(2));
        Assert.That(TrainingLines(), Is.EqualTo(6), "the distillation started over for the new student");
    }

    [Test]
    public async Task An_interrupted_distillation_resumes_from_its_last_checkpoint()
    {
        using var cancel = new CancellationTokenSource();
        var progress = new Inline(p =>
        {
            if (p.Step == "distillation" && p.Completed >= 3 && !p.StepFinished)
            {
                cancel.Cancel();
            }
        });
        Assert.That(async () => await RecipeRunner.RunAsync(_recipe, _work, progress, cancellationToken: cancel.Token), Throws.InstanceOf<OperationCanceledException>());
        Assert.That(File.Exists(Path.Combine(StepDir("distillation"), RecipeRunner.StepFileName)), Is.False);
        Assert.That(Directory.Exists(Path.Combine(StepDir("distillation"), "checkpoints", "last")), Is.True);
        Assert.That(Directory.Exists(StepDir("evaluation")), Is.False);

        var steps = new List<long>();
        RecipeSummary resumed = await RecipeRunner.RunAsync(_recipe, _work, new Inline(p =>
        {
            if (p.Step == "distillation" && !p.StepFinished && p.Total > 0)
            {
                steps.Add(p.Completed);
            }
        }));
        Assert.That(Statuses(resumed).Take(5), Is.All.EqualTo(RecipeStepStatus.Skipped));
        Assert.That(resumed["distillation"].Status, Is.EqualTo(RecipeStepStatus.Resumed));
        Assert.That(resumed["evaluation"].Status, Is.EqualTo(RecipeStepStatus.Ran));
        Assert.That(steps, Is.Not.Empty);
        Assert.That(steps[0], Is.GreaterThan(1), "continued after the saved step, not from step 1");
        Assert.That(steps[^1], Is.EqualTo(6));
        Assert.That(TrainingLines(), Is.EqualTo(6));
    }

    [Test]
    public async Task Without_vocabulary_compression_the_data_tokenizer_travels_into_the_student()
    {
        // The teacher folder holds no tokenizer; data.tokenizer names the folder that does.
        string tokenizer = Path.Combine(_dir, "tokenizer");
        Directory.CreateDirectory(tokenizer);
        File.Move(Path.Combine(_dir, "teacher", "tokenizer.json"), Path.Combine(tokenizer, "tokenizer.json"));
        JsonObject recipe = RecipeFixture.Recipe();
        recipe.Remove("vocabulary");
        recipe["data"]!["tokenizer"] = "tokenizer";
        RecipeFixture.WriteRecipe(_dir, recipe);

        RecipeSummary summary = await RecipeRunner.RunAsync(_recipe, _work);
        Assert.That(summary["vocabulary"].Status, Is.EqualTo(RecipeStepStatus.NotInRecipe));
        Assert.That(Directory.Exists(StepDir("vocabulary")), Is.False);
        Assert.That(LlamaConfig.Load(Path.Combine(summary.StudentCheckpoint, "config.json")).VocabSize, Is.EqualTo(1001));
        Assert.That(File.Exists(Path.Combine(summary.StudentCheckpoint, "tokenizer.json")), Is.True);
        Assert.That(summary.EvaluationTable, Does.Contain("student").And.Not.Contain("teacher"), "a teacher without a tokenizer is not evaluated");
    }

    [TestCase("\"plan\": {\"neuron_fraction\": 1.5}", "plan.neuron_fraction")]
    [TestCase("\"plan\": {\"layers\": 0}", "plan.layers")]
    [TestCase("\"plan\": {\"budget_parameters\": 0}", "plan.budget_parameters")]
    [TestCase("\"plan\": {}, \"scoring\": {\"batch_size\": 0}", "scoring.batch_size")]
    [TestCase("\"plan\": {}, \"scoring\": {\"device\": \"tpu\"}", "scoring.device")]
    [TestCase("\"plan\": {}, \"build\": {\"pad_vocab_to_multiple\": 0}", "build.pad_vocab_to_multiple")]
    [TestCase("\"plan\": {\"layer_selection\": \"best\"}", "plan.layer_selection")]
    [TestCase("\"plan\": {\"layerz\": 1}", "plan")]
    [TestCase("\"plan\": {}, \"vocabulary\": {\"keep\": 10, \"coverage\": 0.9}", "vocabulary")]
    [TestCase("\"plan\": {}, \"scoring\": {\"metrics\": [\"nope\"]}", "scoring.metrics")]
    [TestCase("\"plan\": {}, \"evaluation\": {\"tasks\": {\"trivia\": \"t.jsonl\"}}", "evaluation.tasks.trivia")]
    [TestCase("\"plan\": {\"layers\": \"two\"}", "plan.layers")]
    public void Validation_errors_name_the_field(string planAndMore, string field)
    {
        string json = "{\"teacher\": \"t\", \"data\": {\"corpus\": [\"c.jsonl\"]}, \"distillation\": {\"kd_loss\": \"kl\"}, " + planAndMore + "}";
        Assert.That(() => DistillationRecipe.Parse(json, _dir, "bad.recipe.json"),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains(field).And.Message.Contains("bad.recipe.json"));
    }

    [Test]
    public void Validation_reports_the_distillation_fields()
    {
        string json = "{\"teacher\": \"t\", \"data\": {\"corpus\": []}, \"plan\": {}, \"distillation\": {\"temperature\": 0, \"steps\": 0}}";
        Assert.That(() => DistillationRecipe.Parse(json, _dir),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("distillation.temperature").And.Message.Contains("distillation.steps").And.Message.Contains("data.corpus"));
    }

    [TestCase("\"plan\": {\"layer_selection\": \"best\"}", "'plan.layer_selection': 'best' is not one of position-prior, top-scores")]
    [TestCase("\"plan\": {}, \"distillation\": {\"kd_loss\": \"kx\"}", "'distillation.kd_loss': 'kx' is not one of kl, rkl, jsd")]
    [TestCase("\"plan\": {\"layerz\": 1}", "unknown key 'plan.layerz'")]
    [TestCase("\"plan\": {\"layers\": \"two\"}", "'plan.layers' should be a whole number")]
    [TestCase("\"plan\": {}, \"scoring\": {\"metrics\": \"l2\"}", "'scoring.metrics' should be a list")]
    public void Json_errors_name_the_field_in_the_recipe_words_without_dotnet_types(string planAndMore, string expected)
    {
        string json = "{\"teacher\": \"t\", \"data\": {\"corpus\": [\"c.jsonl\"]}, " + planAndMore + (planAndMore.Contains("distillation", StringComparison.Ordinal) ? "}" : ", \"distillation\": {}}");
        var ex = Assert.Throws<InvalidDataException>(() => DistillationRecipe.Parse(json, _dir, "bad.recipe.json"));
        Assert.That(ex!.Message, Does.StartWith("bad.recipe.json: ").And.Contain(expected));
        Assert.That(ex.Message, Does.Not.Contain("System.").And.Not.Contain("ModelSurgery.").And.Not.Contain("Path:"));
    }

    [Test]
    public void The_distillation_and_evaluation_sections_are_the_pipeline_records_with_their_optional_keys()
    {
        string json = "{\"teacher\": \"t\", \"data\": {\"corpus\": [\"c.jsonl\"]}, \"plan\": {}, "
            + "\"distillation\": {\"steps\": 7, \"min_learning_rate\": 0.0002, \"warmup_fraction\": 0.1, \"eval_batches\": 2}, "
            + "\"evaluation\": {\"text\": [\"h.txt\"], \"max_length\": 64, \"include_teacher\": false}}";
        DistillationRecipe recipe = DistillationRecipe.Parse(json, _dir);
        Assert.That(recipe.Distillation, Is.EqualTo(new DistillationOptions { Steps = 7, MinLearningRate = 2e-4, WarmupFraction = 0.1, EvalBatches = 2 }));
        TrainingOptions training = recipe.Distillation.ToTrainingOptions("out");
        Assert.That((training.Steps, training.MinLearningRate, training.WarmupFraction, training.EvalBatches), Is.EqualTo(((long?)7, 2e-4, 0.1, 2)));
        Assert.That((recipe.Evaluation!.MaxLength, recipe.Evaluation.IncludeTeacher, recipe.Evaluation.Text), Is.EqualTo(((int?)64, false, new[] { "h.txt" })));

        var ex = Assert.Throws<InvalidDataException>(() => DistillationRecipe.Parse(json.Replace("0.1,", "1.5,", StringComparison.Ordinal), _dir));
        Assert.That(ex!.Message, Does.Contain("distillation.warmup_fraction: must be in [0, 1)"));
    }

    [Test]
    public void The_distillation_section_carries_the_whole_schedule_and_round_trips_through_json()
    {
        string json = "{\"teacher\": \"t\", \"data\": {\"corpus\": [\"c.jsonl\"]}, \"plan\": {}, "
            + "\"distillation\": {\"tokens\": 65536, \"grad_accum\": 4, \"weight_decay\": 0.05, \"grad_clip\": 0, \"precision\": \"bf16\", "
            + "\"max_non_finite_steps\": 3, \"eval_every\": 0, \"checkpoint_every\": 0}}";
        DistillationRecipe recipe = DistillationRecipe.Parse(json, _dir);
        var expected = new DistillationOptions
        {
            Tokens = 65536, GradAccum = 4, WeightDecay = 0.05, GradClip = 0, Precision = TrainingPrecision.Bf16, MaxNonFiniteSteps = 3, EvalEvery = 0, CheckpointEvery = 0,
        };
        Assert.That(recipe.Distillation, Is.EqualTo(expected));
        Assert.That(DistillationRecipe.Parse(recipe.ToJson(), _dir).Distillation, Is.EqualTo(expected), "written and read back");

        // The trainer runs what the record says: steps from the token budget (batch_size 8 x seq_len 128 x grad_accum 4 per step).
        TrainingOptions training = recipe.Distillation.ToTrainingOptions("out");
        Assert.That((training.Steps, training.Tokens, training.TotalSteps()), Is.EqualTo(((long?)null, (long?)65536, 65536L / (8 * 128 * 4))));
        Assert.That(
            (training.GradAccumulation, training.WeightDecay, training.GradClip, training.Precision, training.MaxNonFiniteSteps, training.EvalEvery, training.CheckpointEvery),
            Is.EqualTo((4, 0.05, 0.0, TrainingPrecision.Bf16, 3, 0, 0)));

        // Neither steps nor tokens: the record's step count.
        Assert.That(new DistillationOptions().ToTrainingOptions("out").TotalSteps(), Is.EqualTo(TrainingStageOptions.DefaultSteps));
    }

    [TestCase("\"steps\": 10, \"tokens\": 1000", "distillation.steps: give distillation.steps or distillation.tokens, not both")]
    [TestCase("\"tokens\": 0", "distillation.tokens: must be at least 1")]
    [TestCase("\"grad_accum\": 0", "distillation.grad_accum: must be at least 1")]
    [TestCase("\"weight_decay\": -0.1", "distillation.weight_decay: must not be negative")]
    [TestCase("\"grad_clip\": -1", "distillation.grad_clip: must not be negative")]
    [TestCase("\"max_non_finite_steps\": 0", "distillation.max_non_finite_steps: must be at least 1")]
    [TestCase("\"eval_every\": -1", "distillation.eval_every: must not be negative")]
    [TestCase("\"checkpoint_every\": -1", "distillation.checkpoint_every: must not be negative")]
    [TestCase("\"precision\": \"fp16\"", "'distillation.precision': 'fp16' is not one of fp32, bf16")]
    public void An_invalid_schedule_key_is_refused_naming_it(string keys, string expected)
    {
        string json = "{\"teacher\": \"t\", \"data\": {\"corpus\": [\"c.jsonl\"]}, \"plan\": {}, \"distillation\": {" + keys + "}}";
        var ex = Assert.Throws<InvalidDataException>(() => DistillationRecipe.Parse(json, _dir, "bad.recipe.json"));
        Assert.That(ex!.Message, Does.StartWith("bad.recipe.json: ").And.Contain(expected));
    }

    [Test]
    public void The_distillation_section_takes_the_command_line_keys_and_resolves_their_paths()
    {
        string json = "{\"teacher\": \"t\", \"data\": {\"corpus\": [\"c.jsonl\"]}, \"plan\": {}, "
            + "\"distillation\": {\"hidden_state_plan\": \"p/plan.json\", \"hidden_weight\": 0.25, \"teacher_dtype\": \"bf16\"}}";
        DistillationRecipe recipe = DistillationRecipe.Parse(json, _dir);
        Assert.That(recipe.Distillation, Is.EqualTo(new DistillationOptions { HiddenStatePlan = "p/plan.json", HiddenWeight = 0.25, TeacherDtype = TrainingPrecision.Bf16 }));
        DistillationSettings settings = recipe.Distillation.ToSettings(recipe.Resolve);
        Assert.That((settings.PlanPath, settings.TeacherCachePath, settings.HiddenWeight, settings.TeacherDType),
            Is.EqualTo((Path.Combine(_dir, "p", "plan.json"), (string?)null, 0.25, (TorchSharp.torch.ScalarType?)TorchSharp.torch.ScalarType.BFloat16)));
        Assert.That(new DistillationOptions().ToSettings().TeacherDType, Is.Null, "fp32 is the teacher's default");

        var ex = Assert.Throws<InvalidDataException>(() => DistillationRecipe.Parse(
            json.Replace("0.25", "-1", StringComparison.Ordinal).Replace("\"hidden_state_plan\"", "\"teacher_cache\": \"c.bin\", \"hidden_state_plan\"", StringComparison.Ordinal), _dir));
        Assert.That(ex!.Message, Does.Contain("distillation.hidden_weight: must not be negative")
            .And.Contain("distillation.teacher_cache: cannot be combined with distillation.hidden_state_plan"));
    }

    [Test]
    public void Sections_are_the_library_options_records_and_round_trip_through_json()
    {
        string json = "{\"teacher\": \"t\", \"data\": {\"corpus\": [\"c.jsonl\"]}, \"scoring\": {\"metrics\": [\"l1\"], \"calibration_sequences\": 5, \"device\": \"cpu\"}, "
            + "\"plan\": {\"layers\": 2, \"layer_selection\": \"top-scores\", \"gqa_mode\": \"same-query-heads-per-group\", \"query_heads\": 2}, \"build\": {\"pad_vocab_to_multiple\": 8}, "
            + "\"distillation\": {\"kd_loss\": \"jsd\"}, \"export_job\": {\"precision\": \"fp32\"}}";
        DistillationRecipe recipe = DistillationRecipe.Parse(json, _dir);
        Assert.That(recipe.Scoring, Is.EqualTo(new ScoringOptions { Metrics = recipe.Scoring.Metrics, CalibrationSequences = 5, Device = "cpu" }));
        Assert.That(recipe.Scoring.Metrics, Is.EqualTo(new[] { "l1" }));
        Assert.That(recipe.Plan, Is.EqualTo(new PlanTargets { Layers = 2, LayerSelection = LayerSelection.TopScores, GqaMode = GqaHeadMode.SameQueryHeadsPerGroup, QueryHeads = 2 }));
        Assert.That(recipe.Build.PadVocabToMultiple, Is.EqualTo(8));
        Assert.That(recipe.Distillation, Is.EqualTo(new DistillationOptions { KdLoss = DistillationDivergence.JensenShannon }), "distillation is DistillationOptions");
        Assert.That(recipe.Distillation.ToSettings().Divergence, Is.EqualTo(DistillationDivergence.JensenShannon));
        Assert.That(recipe.ExportJob!.Precision, Is.EqualTo(TrainingPrecision.Fp32));

        string written = recipe.ToJson();
        Assert.That(written, Does.Contain("\"layer_selection\": \"top-scores\"").And.Contain("\"kd_loss\": \"jsd\"").And.Contain("\"precision\": \"fp32\""));
        DistillationRecipe again = DistillationRecipe.Parse(written, _dir);
        Assert.That(again.Plan, Is.EqualTo(recipe.Plan));
        Assert.That(again.Scoring with { Metrics = [] }, Is.EqualTo(recipe.Scoring with { Metrics = [] }));
    }

    [Test]
    public void Relative_paths_resolve_against_the_recipe_folder()
    {
        DistillationRecipe recipe = DistillationRecipe.Load(_recipe);
        Assert.That(recipe.Resolve(recipe.Teacher), Is.EqualTo(Path.Combine(_dir, "teacher")));
        Assert.That(recipe.Plan.Layers, Is.EqualTo(1));
        Assert.That(recipe.Distillation.CheckpointEvery, Is.EqualTo(2));
    }

    private int TrainingLines() => ModelSurgery.Tests.Cli.TrainCliSupport.Losses(Path.Combine(StepDir("distillation"), "metrics.jsonl")).Length;

    private sealed class Inline(Action<RecipeProgress> report) : IProgress<RecipeProgress>
    {
        public void Report(RecipeProgress value) => report(value);
    }
}
