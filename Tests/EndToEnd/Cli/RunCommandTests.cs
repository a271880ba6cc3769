using System.Text.Json.Nodes;
using ModelSurgery.Tests.Training;

namespace ModelSurgery.Tests.Cli;

public sealed class RunCommandTests
{
    private string _dir = null!;
    private string _recipe = null!;

    [SetUp]
    public async Task SetUp()
    {
        _dir = Directory.CreateTempSubdirectory("run-cli").FullName;
        _recipe = await RecipeFixture.CreateAsync(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task Run_prints_a_line_per_step_and_the_evaluation_table_and_a_rerun_skips()
    {
        string work = Path.Combine(_dir, "work");
        (int code, string output, string error) = await CliRunner.RunAsync(["run", _recipe, "--work", work]);
        Assert.That(code, Is.Zero, error);
        Assert.That(output, Does.Contain("[1/8] vocabulary").And.Contain("[6/8] distillation").And.Contain("[7/8] evaluation").And.Contain("[8/8] export_job"));
        Assert.That(output, Does.Contain("| teacher").And.Contain("| student"));
        Assert.That(File.Exists(Path.Combine(work, "07-evaluation", "step.json")), Is.True);

        (code, output, error) = await CliRunner.RunAsync(["run", _recipe, "--work", work]);
        Assert.That(code, Is.Zero, error);
        Assert.That(output.Split('\n').Count(l => l.Contains("skipped", StringComparison.Ordinal)), Is.EqualTo(8));
    }

    [Test]
    public async Task The_default_work_folder_sits_beside_the_recipe()
    {
        (int code, _, string error) = await CliRunner.RunAsync(["run", _recipe]);
        Assert.That(code, Is.Zero, error);
        Assert.That(File.Exists(Path.Combine(_dir, "tiny.recipe.work", "06-distillation", "step.json")), Is.True);
    }

    [Test]
    public async Task An_invalid_recipe_fails_naming_the_field()
    {
        JsonObject recipe = RecipeFixture.Recipe();
        recipe["distillation"]!["temperature"] = 0;
        string path = RecipeFixture.WriteRecipe(_dir, recipe);
        (int code, _, string error) = await CliRunner.RunAsync(["run", path]);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(error, Does.Contain("distillation.temperature"));
    }

    [TestCase("evaluation", "text", "evaluation.text")]
    [TestCase("data", "corpus", "data.corpus")]
    public async Task A_missing_file_fails_before_the_first_step(string section, string key, string field)
    {
        JsonObject recipe = RecipeFixture.Recipe();
        recipe[section] ??= new JsonObject();
        recipe[section]![key] = new JsonArray("no-such-file.jsonl");
        string path = RecipeFixture.WriteRecipe(_dir, recipe);
        string work = Path.Combine(_dir, "missing-file-work");
        (int code, _, string error) = await CliRunner.RunAsync(["run", path, "--work", work]);
        Assert.That(code, Is.EqualTo(1), error);
        Assert.That(error, Does.Contain(field).And.Contain("no-such-file.jsonl"));
        Assert.That(Directory.Exists(work) ? Directory.GetFiles(work, "step.json", SearchOption.AllDirectories) : [], Is.Empty, "no step ran");
    }

    [Test]
    public async Task A_dry_run_prints_the_resolved_recipe_and_the_plan_estimate_and_runs_nothing()
    {
        (int code, string output, string error) = await CliRunner.RunAsync(["run", _recipe, "distillation.steps=7", "plan.layer_selection=position-prior", "--dry-run"]);
        Assert.That(code, Is.Zero, error);
        Assert.That(output, Does.Contain("\"steps\": 7").And.Contain("\"layer_selection\": \"position-prior\""), "the resolved recipe, overrides applied");
        Assert.That(output, Does.Contain("teacher: ").And.Contain("student: ").And.Contain("parameters"), "the plan estimate:\n" + output);
        Assert.That(output, Does.Contain("distillation: 7 steps"));
        Assert.That(Directory.Exists(Path.Combine(_dir, "tiny.recipe.work")), Is.False, "a dry run writes nothing");
    }

    [Test]
    public async Task The_schema_is_printed_without_a_recipe()
    {
        (int code, string output, string error) = await CliRunner.RunAsync(["run", "--schema"]);
        Assert.That(code, Is.Zero, error);
        Assert.That(System.Text.Json.Nodes.JsonNode.Parse(output)!["properties"]!["plan"], Is.Not.Null);
    }

    [TestCase]
    [TestCase("{recipe}", "steps")]
    [TestCase("missing.recipe.json")]
    [TestCase("{recipe}", "--bogus")]
    [TestCase("{recipe}", "--work")]
    public async Task Usage_errors_exit_2(params string[] args)
    {
        (int code, _, _) = await CliRunner.RunAsync(["run", .. args.Select(a => a.Replace("{recipe}", _recipe, StringComparison.Ordinal))]);
        Assert.That(code, Is.EqualTo(2));
    }
}
