using System.Text.Json.Nodes;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Tests.Training.Export;

/// <summary>The recipe's <c>export_job</c> step: the built student, the (compressed) teacher and the recipe's token file, as a job.</summary>
public sealed class ExportJobRecipeTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("export-job-recipe").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task The_export_job_step_writes_a_job_for_the_built_student()
    {
        string recipe = await RecipeFixture.CreateAsync(_dir);
        RecipeSummary summary = await RecipeRunner.RunAsync(recipe, Path.Combine(_dir, "work"));

        RecipeStepResult step = summary["export_job"];
        Assert.That(step.Status, Is.EqualTo(RecipeStepStatus.Ran));
        string job = step.Outputs["job"];
        Assert.That(job, Is.EqualTo(Path.Combine(step.Directory, "job")));
        Assert.That(step.Outputs["world_size"], Is.EqualTo("2"));
        var root = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(job, "job.json")))!;
        // 100,000 tokens at the distillation section's 2 windows x 16 tokens per step.
        Assert.That(root["schedule"]!["total_steps"]!.GetValue<long>(), Is.EqualTo((100_000 + 31) / 32));
        Assert.That(root["optimizer"]!["lr"]!.GetValue<double>(), Is.EqualTo(0.003));
        Assert.That(root["precision"]!.GetValue<string>(), Is.EqualTo("bf16"));
        Assert.That(File.ReadAllBytes(Path.Combine(job, "student", "model.safetensors")), Is.EqualTo(File.ReadAllBytes(Path.Combine(summary["build"].Outputs["student"], "model.safetensors"))), "the student as built");
        Assert.That(File.ReadAllBytes(Path.Combine(job, "data", "tokens.bin")), Is.EqualTo(File.ReadAllBytes(summary["data"].Outputs["tokens"])));

        RecipeSummary again = await RecipeRunner.RunAsync(recipe, Path.Combine(_dir, "work"));
        Assert.That(again["export_job"].Status, Is.EqualTo(RecipeStepStatus.Skipped));
    }

    [Test]
    public void A_recipe_with_an_unknown_engine_names_the_field()
    {
        JsonObject recipe = RecipeFixture.Recipe();
        recipe["export_job"] = new JsonObject { ["engine"] = "nemo", ["nodes"] = 0 };
        InvalidDataException e = Assert.Throws<InvalidDataException>(() => DistillationRecipe.Parse(recipe.ToJsonString(), _dir))!;
        Assert.That(e.Message, Does.Contain("export_job.engine: unknown engine 'nemo'").And.Contain("export_job.nodes"));
    }
}
