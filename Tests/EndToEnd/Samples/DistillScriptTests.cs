using ModelSurgery.Tests.Training;
using ModelSurgery.Training.Recipes;
using ModelSurgery.Tests.Support;

namespace ModelSurgery.Tests.Samples;

/// <summary>Runs the file-based sample <c>Samples/pipelines/distill.cs</c> with <c>dotnet run</c> on a tiny teacher.</summary>
[Category("Samples")]
public sealed class DistillScriptTests
{
    private const string Script = "Samples/pipelines/distill.cs";

    [Test]
    public async Task The_file_based_sample_runs_the_fluent_pipeline_on_a_tiny_teacher()
    {
        string root = DotnetCli.FindRepositoryRoot(Script);
        string dir = Directory.CreateTempSubdirectory("distill-script").FullName;
        try
        {
            await RecipeFixture.CreateAsync(dir);
            string output = Path.Combine(dir, "out");
            string text = DotnetCli.Run(root, "run", Path.Combine(root, Script), "--", Path.Combine(dir, "teacher"), output, Path.Combine(dir, "corpus.jsonl"), "4");

            Assert.That(text, Does.Contain("distilled 4 steps").And.Contain("| teacher").And.Contain("| student"));
            Assert.That(File.Exists(Path.Combine(output, "student", "surgery_plan.json")), Is.True);
            Assert.That(File.Exists(Path.Combine(output, "distillation", "checkpoints", "final", "config.json")), Is.True);
            string[] heldOut = File.ReadAllLines(Path.Combine(output, "heldout.jsonl"));
            Assert.That(heldOut, Is.Not.Empty);
            Assert.That(File.ReadAllLines(Path.Combine(output, "train.jsonl")).Intersect(heldOut), Is.Empty, "the evaluation text is never trained on");

            // The same command again finds the saved training state and continues from it instead of starting over.
            string again = DotnetCli.Run(root, "run", Path.Combine(root, Script), "--", Path.Combine(dir, "teacher"), output, Path.Combine(dir, "corpus.jsonl"), "4");
            Assert.That(again, Does.Contain("resuming the distillation").And.Contain("distilled 4 steps").And.Contain("| student"));
            Assert.That(again, Does.Not.Contain("built a student"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void The_sample_recipe_is_valid_and_points_at_the_quickstart_teacher_and_brown()
    {
        string root = DotnetCli.FindRepositoryRoot(Script);
        DistillationRecipe recipe = DistillationRecipe.Load(Path.Combine(root, "Samples", "pipelines", "distill.recipe.json"));
        Assert.That(recipe.Resolve(recipe.Teacher), Is.EqualTo(Path.Combine(root, "artifacts", "quickstart", "teacher")));
        Assert.That(File.Exists(recipe.Resolve(recipe.Data.Corpus[0])), Is.True, "brown.jsonl");
        Assert.That(recipe.Evaluation!.Text.Select(recipe.Resolve).All(File.Exists), Is.True);
    }
}
