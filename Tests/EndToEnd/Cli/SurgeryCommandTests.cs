using ModelSurgery.Cli;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Tests.Modeling;

namespace ModelSurgery.Tests.Cli;

/// <summary>score, plan, build and prune, end to end through the command line.</summary>
public sealed class SurgeryCommandTests
{
    private string _dir = null!;
    private string _teacher = null!;
    private string _tokens = null!;

    [OneTimeSetUp]
    public async Task CreateTeacher()
    {
        _dir = Directory.CreateTempSubdirectory("surgery-cli").FullName;
        _teacher = Path.Combine(_dir, "teacher");
        LlamaConfig config = TinyModels.Config(heads: 8, kvHeads: 4, layers: 4) with { BosTokenId = 1, EosTokenIds = [2] };
        using (LlamaForCausalLM model = TinyModels.Create(config, seed: 11))
        {
            await ModelCheckpoint.SaveAsync(model, _teacher);
        }

        _tokens = Path.Combine(_dir, "ids.txt");
        await File.WriteAllTextAsync(_tokens, string.Join(' ', TinyModels.RandomIds(600, config.VocabSize, seed: 2)));
    }

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_dir, recursive: true);

    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await Program.RunAsync(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public async Task Score_plan_build_writes_scores_a_valid_plan_and_a_loadable_student()
    {
        string scores = Path.Combine(_dir, "scores");
        var score = await Run("score", "--model", _teacher, "--tokens", _tokens, "--sequences", "4", "--length", "32", "--metric", "l2", "--metric", "activation", "--metric", "block-influence", "--out", scores);
        Assert.That(score.Code, Is.EqualTo(0), score.Err);
        Assert.That(File.Exists(Path.Combine(scores, "l2.json")) && File.Exists(Path.Combine(scores, "l2.csv")) && File.Exists(Path.Combine(scores, "l2-heads.png")), Is.True);
        Assert.That(File.Exists(Path.Combine(scores, "block-influence-layers.png")), Is.True);
        Assert.That(score.Out, Does.Contain("spearman(heads) l2 vs activation"));

        string plan = Path.Combine(_dir, "plan.json");
        var planned = await Run("plan", "--model", _teacher, "--scores", Path.Combine(scores, "block-influence.json"), "--scores", Path.Combine(scores, "l2.json"),
            "--layers", "2", "--layer-selection", "top-scores", "--kv-groups", "2", "--neurons", "32", "--hidden", "16", "--out", plan);
        Assert.That(planned.Code, Is.EqualTo(0), planned.Err);
        SurgeryPlan loadedPlan = SurgeryPlan.Load(plan);
        Assert.That(loadedPlan.Validate(), Is.Empty);
        ImportanceScores layerScores = ImportanceScores.Load(Path.Combine(scores, "block-influence.json"));
        int[] topTwo = [.. layerScores.Layers!.Select((s, i) => (s, i)).OrderByDescending(x => x.s).ThenBy(x => x.i).Take(2).Select(x => x.i).Order()];
        Assert.That(loadedPlan.Layers.Select(l => l.TeacherLayer), Is.EqualTo(topTwo));

        string student = Path.Combine(_dir, "student");
        var built = await Run("build", "--model", _teacher, "--plan", plan, "--out", student, "--read-workers", "3");
        Assert.That(built.Code, Is.EqualTo(0), built.Err);
        Assert.That(built.Out, Does.Match(@"MB of the teacher needed and [0-9.]+ MB read \([0-9.]+ x\) by 3 read workers"));
        using LlamaForCausalLM model = ModelCheckpoint.Load(student, new ModelLoadOptions { Device = "cpu" });
        Assert.That(model.Config, Is.EqualTo(loadedPlan.Student with { TorchDtype = "float32" }).Using<LlamaConfig>((a, b) => a.ToJson() == b.ToJson()));
        Assert.That(built.Err, Does.Contain("estimate:"));
    }

    [Test]
    public async Task Prune_does_all_three_and_keeps_scores_and_plan_beside_the_student()
    {
        string output = Path.Combine(_dir, "pruned");
        var pruned = await Run("prune", "--model", _teacher, "--tokens", _tokens, "--sequences", "4", "--length", "32", "--layers", "3", "--heads-per-group", "1", "--neuron-fraction", "0.5", "--out", output);
        Assert.That(pruned.Code, Is.EqualTo(0), pruned.Err);
        SurgeryPlan plan = SurgeryPlan.Load(Path.Combine(output, "surgery", "plan.json"));
        Assert.That(plan.Layers.Select(l => l.TeacherLayer), Is.EqualTo(new[] { 0, 2, 3 }), "the paper's prior keeps the first and the last layer");
        Assert.That(File.Exists(Path.Combine(output, "surgery", "l2.json")), Is.True);
        using LlamaForCausalLM model = ModelCheckpoint.Load(output, new ModelLoadOptions { Device = "cpu" });
        Assert.That(model.Config.NumAttentionHeads, Is.EqualTo(4));
        Assert.That(model.Config.IntermediateSize, Is.EqualTo(32));
    }

    [Test]
    public async Task Plan_with_a_budget_lists_candidates_and_meets_the_budget()
    {
        string plan = Path.Combine(_dir, "budget.json");
        long teacherParameters = LlamaTensorLayout.CountParameters(LlamaConfig.Load(Path.Combine(_teacher, "config.json"))).Total;
        string scores = Path.Combine(_dir, "budget-scores");
        Assert.That((await Run("score", "--model", _teacher, "--metric", "random", "--out", scores)).Code, Is.EqualTo(0));

        var result = await Run("plan", "--model", _teacher, "--scores", Path.Combine(scores, "random.json"), "--budget", (teacherParameters / 2).ToString(System.Globalization.CultureInfo.InvariantCulture), "--out", plan);

        Assert.That(result.Code, Is.EqualTo(0), result.Err);
        Assert.That(result.Out, Does.Contain("shapes meet the budget"));
        Assert.That(SurgeryPlan.Load(plan).ParameterCount.Total, Is.EqualTo(teacherParameters / 2).Within(5).Percent);
    }

    [Test]
    public async Task Plan_cuts_kv_groups_and_query_heads_per_group_together()
    {
        string scores = Path.Combine(_dir, "gqa-scores");
        Assert.That((await Run("score", "--model", _teacher, "--metric", "random", "--out", scores)).Code, Is.EqualTo(0));
        string plan = Path.Combine(_dir, "gqa.json");

        var result = await Run("plan", "--model", _teacher, "--scores", Path.Combine(scores, "random.json"), "--kv-groups", "3", "--heads-per-group", "1", "--out", plan);

        Assert.That(result.Code, Is.EqualTo(0), result.Err);
        SurgeryPlan loaded = SurgeryPlan.Load(plan);
        Assert.Multiple(() =>
        {
            // The teacher has 8 query heads in 4 KV groups of 2: keeping 3 groups with 1 query head each leaves 3 and 3.
            Assert.That(loaded.Student.NumKeyValueHeads, Is.EqualTo(3));
            Assert.That(loaded.Student.NumAttentionHeads, Is.EqualTo(3));
            Assert.That(loaded.Layers.All(l => l.QueryHeads.Count == 3 && l.KvHeads.Count == 3), Is.True);
            Assert.That(loaded.Layers.All(l => l.QueryHeads.Select(h => h / 2).SequenceEqual(l.KvHeads)), Is.True, "each kept query head lies in its kept KV group");
        });
    }

    [TestCase("--layers", "2", "--keep-layers", "0,1")]
    [TestCase("--kv-groups", "5")]
    [TestCase("--heads-per-group", "3")]
    [TestCase("--layer-selection", "best")]
    [TestCase("--layers", "9")]
    public async Task Contradictory_or_impossible_targets_are_usage_errors(params string[] targets)
    {
        var result = await Run(["plan", "--model", _teacher, "--out", Path.Combine(_dir, "never.json"), .. targets]);
        Assert.That(result.Code, Is.EqualTo(2));
        Assert.That(result.Err.Trim().Split('\n')[0], Does.StartWith("error: "));
        Assert.That(File.Exists(Path.Combine(_dir, "never.json")), Is.False);
    }

    [TestCase(new[] { "plan", "--layer-selection", "best" }, "--layer-selection: 'best' is not one of position-prior, top-scores")]
    [TestCase(new[] { "score", "--metric", "activation" }, "--metric activation runs the model on calibration text: give --tokens")]
    [TestCase(new[] { "score", "--metric", "l2", "--batch-size", "0" }, "--batch-size: must be at least 1")]
    [TestCase(new[] { "score", "--metric", "l2", "--device", "tpu" }, "--device: 'tpu' is not auto, cpu, cuda or cuda:N")]
    public async Task Option_errors_name_the_option_in_its_command_line_spelling(string[] args, string expected)
    {
        var result = await Run([args[0], "--model", _teacher, "--out", Path.Combine(_dir, "never-" + args[0]), .. args[1..]]);
        Assert.That(result.Code, Is.EqualTo(2), result.Err);
        Assert.That(result.Err, Does.Contain(expected));
        Assert.That(result.Err, Does.Not.Contain("(Parameter").And.Not.Contain("   at "));
    }

    [Test]
    public async Task An_invalid_hand_edited_plan_fails_naming_the_field()
    {
        SurgeryPlan plan = PlanBuilder.Identity(LlamaConfig.Load(Path.Combine(_teacher, "config.json")));
        string path = Path.Combine(_dir, "broken.json");
        File.WriteAllText(path, plan.ToJson().Replace("\"teacher_layer\": 3", "\"teacher_layer\": 7", StringComparison.Ordinal));

        var result = await Run("build", "--model", _teacher, "--plan", path, "--out", Path.Combine(_dir, "never"));

        Assert.That(result.Code, Is.EqualTo(1));
        Assert.That(result.Err, Does.Contain("layers[3].teacher_layer"));
        Assert.That(result.Err.Trim().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(Directory.Exists(Path.Combine(_dir, "never")), Is.False);
    }
}
