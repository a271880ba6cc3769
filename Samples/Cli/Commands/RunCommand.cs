using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.Logging;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Cli.Commands;

/// <summary><c>modelsurgery run &lt;recipe.json&gt; [--work &lt;dir&gt;]</c>: runs a distillation recipe, skipping finished steps.</summary>
internal static class RunCommand
{
    public static Command Create(CliContext context)
    {
        var recipe = new Argument<string>("recipe") { Description = "Recipe JSON file (paths in it are relative to it)." };
        var work = new Option<string?>("--work") { Description = "Work folder for the steps' outputs (default: <recipe name>.work beside the recipe)." };
        var command = new Command("run", "Run a distillation recipe: vocabulary, data, scoring, plan, build, distillation, evaluation. A re-run skips finished steps whose inputs are unchanged and resumes an interrupted distillation.") { recipe, work };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            string recipePath = parsed.GetValue(recipe)!;
            if (!File.Exists(recipePath))
            {
                throw new UsageException($"{recipePath}: recipe file not found.");
            }

            string workDir = parsed.GetValue(work)
                ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(recipePath))!, Path.GetFileNameWithoutExtension(recipePath) + ".work");
            // Re-runs into the work folder skip and resume by design; the lock keeps a second run out while one is going.
            using OutputGuard guard = new OutputGuard().Input(recipePath, "recipe").Folder(workDir, "--work", resume: true);
            using ILoggerFactory loggers = CliContext.CreateLoggerFactory(parsed);
            ConsoleProgressBar? bar = null;
            string? current = null;
            var progress = new InlineProgress<RecipeProgress>(p =>
            {
                if (p.StepFinished)
                {
                    // The step's end: one line on standard output.
                    bar?.Dispose();
                    bar = null;
                    current = null;
                    int number = RecipeRunner.StepNames.ToList().IndexOf(p.Step) + 1;
                    context.Output.WriteLine($"[{number}/{RecipeRunner.StepNames.Count}] {p.Step,-12} {p.Message}");
                    return;
                }

                if (p.Step != current)
                {
                    bar?.Dispose();
                    bar = context.CreateProgressBar(p.Step);
                    current = p.Step;
                }

                bar!.Report((long)p.Completed, (long)p.Total, p.Message);
            });
            await context.Output.WriteLineAsync($"recipe {Path.GetFullPath(recipePath)} -> {Path.GetFullPath(workDir)}").ConfigureAwait(false);
            RecipeSummary summary;
            try
            {
                summary = await RecipeRunner.RunAsync(recipePath, workDir, progress, loggers.CreateLogger("run"), cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                bar?.Dispose();
            }

            await context.Output.WriteLineAsync($"student: {summary.StudentCheckpoint}").ConfigureAwait(false);
            if (summary.EvaluationTable is string table)
            {
                await context.Output.WriteLineAsync().ConfigureAwait(false);
                await context.Output.WriteLineAsync(table.TrimEnd()).ConfigureAwait(false);
            }

            return ExitCodes.Success;
        });
        return command;
    }
}
