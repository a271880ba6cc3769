using System.Diagnostics;
using System.Text;
using ModelSurgery.Tests.Training;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Tests.Samples;

/// <summary>Runs the file-based sample <c>Samples/pipelines/distill.cs</c> with <c>dotnet run</c> on a tiny teacher.</summary>
[Category("Samples")]
public sealed class DistillScriptTests
{
    private const string Script = "Samples/pipelines/distill.cs";

    [Test]
    public async Task The_file_based_sample_runs_the_fluent_pipeline_on_a_tiny_teacher()
    {
        string root = FindRepositoryRoot();
        string dir = Directory.CreateTempSubdirectory("distill-script").FullName;
        try
        {
            await RecipeFixture.CreateAsync(dir);
            string output = Path.Combine(dir, "out");
            string text = Run(root, "run", Path.Combine(root, Script), "--", Path.Combine(dir, "teacher"), output, Path.Combine(dir, "corpus.jsonl"), "4");

            Assert.That(text, Does.Contain("distilled 4 steps").And.Contain("| teacher").And.Contain("| student"));
            Assert.That(File.Exists(Path.Combine(output, "student", "surgery_plan.json")), Is.True);
            Assert.That(File.Exists(Path.Combine(output, "distillation", "checkpoints", "final", "config.json")), Is.True);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void The_sample_recipe_is_valid_and_points_at_the_quickstart_teacher_and_brown()
    {
        string root = FindRepositoryRoot();
        DistillationRecipe recipe = DistillationRecipe.Load(Path.Combine(root, "Samples", "pipelines", "distill.recipe.json"));
        Assert.That(recipe.Resolve(recipe.Teacher), Is.EqualTo(Path.Combine(root, "artifacts", "quickstart", "teacher")));
        Assert.That(File.Exists(recipe.Resolve(recipe.Data.Corpus[0])), Is.True, "brown.jsonl");
        Assert.That(recipe.Evaluation!.Text.Select(recipe.Resolve).All(File.Exists), Is.True);
    }

    private static string FindRepositoryRoot()
    {
        for (var folder = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, Script)))
            {
                return folder.FullName;
            }
        }

        throw new DirectoryNotFoundException($"No folder above {TestContext.CurrentContext.TestDirectory} holds {Script}.");
    }

    // Runs the dotnet CLI and returns its output; fails the test with that output when it exits non-zero.
    private static string Run(string workingDirectory, params string[] arguments)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        // The test host inherits MSBuild settings of the outer build; the nested build must pick its own.
        foreach (string name in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            start.Environment.Remove(name);
        }

        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";

        using Process process = Process.Start(start) ?? throw new InvalidOperationException("dotnet did not start.");
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (output) { output.AppendLine(e.Data); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (output) { output.AppendLine(e.Data); } } };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        process.WaitForExit();

        string text;
        lock (output)
        {
            text = output.ToString();
        }

        Assert.That(process.ExitCode, Is.Zero, $"dotnet {string.Join(' ', arguments)} failed in {workingDirectory}:\n{text}");
        return text;
    }
}
