using System.CommandLine;
using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Cli.Commands;

/// <summary>
/// <c>modelsurgery run &lt;recipe.json|recipe.yaml&gt; [key=value ...] [--work &lt;dir&gt;] [--dry-run] [--schema]</c>: runs a
/// distillation recipe, skipping finished steps.
/// </summary>
internal static class RunCommand
{
    public static Command Create(CliContext context)
    {
        var recipe = new Argument<string?>("recipe") { Description = "Recipe file, JSON or YAML (paths in it are relative to it).", Arity = ArgumentArity.ZeroOrOne };
        var overrides = new Argument<string[]>("overrides") { Description = "Changes to the recipe, key=value: distillation.steps=200 plan.layer_selection=top-scores data.corpus=[\"a.jsonl\"].", Arity = ArgumentArity.ZeroOrMore };
        var work = new Option<string?>("--work") { Description = "Work folder for the steps' outputs (default: <recipe name>.work beside the recipe)." };
        var dryRun = new Option<bool>("--dry-run") { Description = "Print the resolved recipe and the plan estimate, and run nothing." };
        var schema = new Option<bool>("--schema") { Description = "Print the JSON schema of recipe files (for editor completion) and exit." };
        var command = new Command("run", "Run a distillation recipe: vocabulary, data, scoring, plan, build, distillation, evaluation. A re-run skips finished steps whose inputs are unchanged and resumes an interrupted distillation.") { recipe, overrides, work, dryRun, schema };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            if (parsed.GetValue(schema))
            {
                await context.Output.WriteAsync(DistillationRecipe.JsonSchema()).ConfigureAwait(false);
                return ExitCodes.Success;
            }

            string recipePath = parsed.GetValue(recipe) ?? throw new UsageException("give the recipe file (or --schema).");
            if (!File.Exists(recipePath))
            {
                throw new UsageException($"{recipePath}: recipe file not found.");
            }

            string[] assignments = parsed.GetValue(overrides) ?? [];
            if (assignments.FirstOrDefault(a => a.IndexOf('=', StringComparison.Ordinal) <= 0) is { } bad)
            {
                throw new UsageException($"'{bad}' is neither an option of run nor a key=value override (e.g. distillation.steps=200).");
            }

            DistillationRecipe loaded = DistillationRecipe.Load(recipePath, assignments);

            if (parsed.GetValue(dryRun))
            {
                await context.Output.WriteAsync(RecipeDryRun.Describe(loaded)).ConfigureAwait(false);
                return ExitCodes.Success;
            }

            string workDir = parsed.GetValue(work)
                ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(recipePath))!, Path.GetFileNameWithoutExtension(recipePath) + ".work");
            // Re-runs into the work folder skip and resume by design; the lock keeps a second run out while one is going.
            using OutputGuard guard = new OutputGuard().Input(recipePath, "recipe").Folder(workDir, "--work", resume: true);
            using ILoggerFactory loggers = context.CreateLoggerFactory(parsed);
            ProgressBar? bar = null;
            string? current = null;
            var progress = new SynchronousProgress<RecipeProgress>(p =>
            {
                if (p.StepFinished)
                {
                    // The step's end: one line on standard output.
                    bar?.Dispose();
                    bar = null;
                    current = null;
                    int number = RecipeRunner.StepNames.ToList().IndexOf(p.Step) + 1;
                    context.Output.WriteLine($"[{number}/{RecipeRunner.StepNames.Count}] {p.Step,-12} {p.Status}");
                    return;
                }

                if (p.Step != current)
                {
                    bar?.Dispose();
                    bar = context.CreateProgressBar(p.Step, p.Unit);
                    current = p.Step;
                }

                bar!.Report(p);
            });
            await context.Output.WriteLineAsync($"recipe {Path.GetFullPath(recipePath)} -> {Path.GetFullPath(workDir)}").ConfigureAwait(false);
            RecipeSummary summary;
            try
            {
                summary = await RecipeRunner.RunAsync(loaded, workDir, progress, loggers.CreateLogger("run"), cancellationToken).ConfigureAwait(false);
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
