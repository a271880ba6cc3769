using System.Text.Json.Nodes;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Training.Distillation;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Tests.Training;

public sealed class RecipeFileTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("recipe-file").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private const string Json = """
        {
          "teacher": "teacher",
          "data": { "corpus": ["a.jsonl", "b.jsonl"], "validation_fraction": 0.05 },
          "scoring": { "metrics": ["l2", "block-influence"], "calibration_sequences": 8 },
          "plan": { "layers": 3, "layer_selection": "top-scores", "neuron_fraction": 0.5, "budget_parameters": null },
          "distillation": { "kd_loss": "jsd", "steps": 300, "learning_rate": 0.001, "device": "cpu" }
        }
        """;

    private const string Yaml = """
        # The same recipe in YAML.
        teacher: teacher
        data:
          corpus: [a.jsonl, "b.jsonl"]
          validation_fraction: 0.05
        scoring:
          metrics:
            - l2
            - block-influence
          calibration_sequences: 8
        plan:
          layers: 3
          layer_selection: top-scores
          neuron_fraction: 0.5
          budget_parameters: ~
        distillation:
          kd_loss: jsd
          steps: 300
          learning_rate: 1e-3
          device: 'cpu'
        """;

    private string Write(string name, string text)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    [Test]
    public void Yaml_and_json_give_the_same_recipe()
    {
        JsonObject fromJson = RecipeFile.Read(Write("r.json", Json));
        JsonObject fromYaml = RecipeFile.Read(Write("r.yaml", Yaml));
        Assert.That(JsonNode.DeepEquals(fromJson, fromYaml), Is.True, fromYaml.ToJsonString());

        DistillationRecipe recipe = DistillationRecipe.Load(Path.Combine(_dir, "r.yaml"));
        Assert.That(recipe.Plan.LayerSelection, Is.EqualTo(LayerSelection.TopScores));
        Assert.That(recipe.Distillation.KdLoss, Is.EqualTo(DistillationDivergence.JensenShannon));
        Assert.That(recipe.Distillation.LearningRate, Is.EqualTo(1e-3));
        Assert.That(recipe.Teacher, Is.EqualTo("teacher"));
    }

    [Test]
    public void Quoted_yaml_scalars_stay_strings()
    {
        JsonObject root = RecipeFile.Read(Write("q.yml", "teacher: '123'\ndata:\n  field: \"true\"\n  separator_id: 7\n"));
        Assert.That(root["teacher"]!.GetValue<string>(), Is.EqualTo("123"));
        Assert.That(root["data"]!["field"]!.GetValue<string>(), Is.EqualTo("true"));
        Assert.That(root["data"]!["separator_id"]!.GetValue<long>(), Is.EqualTo(7));
    }

    [Test]
    public void Overrides_set_values_create_sections_and_index_lists()
    {
        DistillationRecipe recipe = DistillationRecipe.Load(Write("r.json", Json),
            ["distillation.steps=12", "plan.layer_selection=position-prior", "data.corpus.1=c.jsonl", "evaluation.text=[\"h.jsonl\"]", "distillation.device = cuda:1"]);
        Assert.That(recipe.Distillation.Steps, Is.EqualTo(12));
        Assert.That(recipe.Plan.LayerSelection, Is.EqualTo(LayerSelection.PositionPrior));
        Assert.That(recipe.Data.Corpus, Is.EqualTo(new[] { "a.jsonl", "c.jsonl" }));
        Assert.That(recipe.Evaluation!.Text, Is.EqualTo(new[] { "h.jsonl" }));
        Assert.That(recipe.Distillation.Device, Is.EqualTo("cuda:1"));
    }

    [TestCase("steps", "write it as key=value")]
    [TestCase("=3", "write it as key=value")]
    [TestCase("distillation..steps=3", "has an empty part")]
    [TestCase("teacher.name=x", "teacher is a value, not a section")]
    [TestCase("data.corpus.5=x", "data.corpus is a list of 2")]
    public void Malformed_overrides_are_errors_naming_the_override(string assignment, string expected)
    {
        var ex = Assert.Throws<InvalidDataException>(() => RecipeFile.Read(Write("r.json", Json), [assignment]));
        Assert.That(ex!.Message, Does.Contain($"override '{assignment}'").And.Contain(expected));
    }

    [Test]
    public void An_override_is_validated_like_the_file()
    {
        var ex = Assert.Throws<InvalidDataException>(() => DistillationRecipe.Load(Write("r.json", Json), ["distillation.kd_loss=kx"]));
        Assert.That(ex!.Message, Does.Contain("distillation.kd_loss").And.Contain("'kx' is not one of kl, rkl, jsd"));
    }

    [TestCase("r.yaml", "teacher: [unclosed\n", "not valid YAML at line")]
    [TestCase("r.yaml", "- a\n- b\n", "one YAML mapping")]
    [TestCase("r.json", "{ \"teacher\": ", "not valid JSON at line")]
    [TestCase("r.json", "[1, 2]", "a JSON object")]
    public void Malformed_files_are_errors_naming_the_file(string name, string text, string expected)
    {
        string path = Write(name, text);
        var ex = Assert.Throws<InvalidDataException>(() => RecipeFile.Read(path));
        Assert.That(ex!.Message, Does.StartWith(path).And.Contain(expected));
    }

    [Test]
    public void The_schema_is_generated_from_the_records_and_lists_the_choices()
    {
        JsonNode schema = JsonNode.Parse(DistillationRecipe.JsonSchema())!;
        JsonNode plan = schema["properties"]!["plan"]!;
        Assert.That(plan["properties"]!["layer_selection"]!["enum"]!.AsArray().Select(n => n!.GetValue<string>()), Is.EqualTo(new[] { "position-prior", "top-scores" }));
        Assert.That(plan["properties"]!["neuron_fraction"], Is.Not.Null, "plan is PlanTargets");
        Assert.That(schema["properties"]!["scoring"]!["properties"]!["calibration_sequences"], Is.Not.Null, "scoring is ScoringOptions");
        Assert.That(schema["properties"]!["distillation"]!["properties"]!["kd_loss"]!["enum"]!.AsArray().Select(n => n!.GetValue<string>()), Is.EqualTo(new[] { "kl", "rkl", "jsd" }));
        Assert.That(schema["required"]!.AsArray().Select(n => n!.GetValue<string>()), Is.SupersetOf(new[] { "teacher", "data", "plan", "distillation" }));
        Assert.That(schema["properties"]!["base_directory"], Is.Null, "not a recipe key");
    }

    [Test]
    public void The_committed_schema_is_the_generated_one()
    {
        string committed = Path.Combine(Support.DotnetCli.FindRepositoryRoot(Path.Combine("Samples", "pipelines", "recipe.schema.json")), "Samples", "pipelines", "recipe.schema.json");
        Assert.That(File.ReadAllText(committed).ReplaceLineEndings("\n"), Is.EqualTo(DistillationRecipe.JsonSchema()),
            "regenerate with: dotnet run --project Samples/Cli -- run --schema > Samples/pipelines/recipe.schema.json");
    }

    [Test]
    public void The_sample_recipes_in_json_and_yaml_are_the_same_recipe()
    {
        string folder = Path.Combine(Support.DotnetCli.FindRepositoryRoot(Path.Combine("Samples", "pipelines", "distill.recipe.yaml")), "Samples", "pipelines");
        DistillationRecipe json = DistillationRecipe.Load(Path.Combine(folder, "distill.recipe.json"));
        DistillationRecipe yaml = DistillationRecipe.Load(Path.Combine(folder, "distill.recipe.yaml"));
        Assert.That(yaml.ToJson(), Is.EqualTo(json.ToJson()));
    }
}
