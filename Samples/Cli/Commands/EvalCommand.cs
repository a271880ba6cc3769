using System.CommandLine;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Cli.Commands;

/// <summary>
/// <c>modelsurgery eval --model &lt;dir&gt; [--model &lt;dir&gt; ...] --task &lt;name&gt;=&lt;file.jsonl&gt; ... [--perplexity &lt;text file&gt;]
/// [--few-shot K] [--limit N] [--batch-size B] [--out report.md]</c>. The first model is the reference the others are compared with.
/// </summary>
internal static class EvalCommand
{
    public static Command Create(CliContext context)
    {
        var models = new Option<string[]>("--model") { Description = "Checkpoint folder (with its tokenizer), or name=folder to name it in the report; repeat for several. The first is the reference.", Required = true, AllowMultipleArgumentsPerToken = false };
        var tasks = new Option<string[]>("--task") { Description = "name=file.jsonl; names arc_easy, arc_challenge, hellaswag, piqa, boolq, mmlu, or any other name for the generic {context, choices, answer} format." };
        var perplexity = new Option<string[]>("--perplexity") { Description = "A text file (.txt, or .jsonl with a \"text\" field) scored for bits per byte and token perplexity." };
        var fewShot = new Option<int>("--few-shot") { Description = "Few-shot examples per prompt.", DefaultValueFactory = _ => 0 };
        var limit = new Option<int?>("--limit") { Description = "Score at most this many documents per task." };
        var batchSize = new Option<int>("--batch-size") { Description = "Requests per forward pass (1 turns batching off).", DefaultValueFactory = _ => 8 };
        var output = new Option<string?>("--out") { Description = "Write the comparison as Markdown here, with .json and .png beside it." };
        var device = CommonOptions.Device();
        var command = new Command("eval", "Evaluate and compare models: multiple-choice benchmarks scored as lm-evaluation-harness does, bits per byte.")
        {
            models, tasks, perplexity, fewShot, limit, batchSize, output, device,
        };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var specs = new List<TaskSpec>();
            foreach (string task in parsed.GetValue(tasks) ?? [])
            {
                specs.Add(ParseTask(task));
            }

            foreach (string text in parsed.GetValue(perplexity) ?? [])
            {
                specs.Add(TaskSpec.Text(Path.GetFileNameWithoutExtension(text), text));
            }

            if (specs.Count == 0)
            {
                throw new UsageException("give at least one --task or --perplexity.");
            }

            if (parsed.GetValue(fewShot) < 0 || parsed.GetValue(batchSize) < 1 || parsed.GetValue(limit) is < 1)
            {
                throw new UsageException(parsed.GetValue(fewShot) < 0
                    ? $"--few-shot must not be negative, got {parsed.GetValue(fewShot)}."
                    : parsed.GetValue(batchSize) < 1 ? $"--batch-size must be positive, got {parsed.GetValue(batchSize)}." : $"--limit must be positive, got {parsed.GetValue(limit)}.");
            }

            IReadOnlyList<(string Name, string Directory)> named = NamedModels(parsed.GetValue(models)!);
            string? reportPath = parsed.GetValue(output);
            using OutputGuard guard = new OutputGuard()
                .Inputs(named.Select(m => m.Directory), "--model", InputKind.Model)
                .Inputs(specs.Select(s => s.DataPath), "--task/--perplexity").Inputs(specs.Select(s => s.FewShotPath).OfType<string>(), "--task")
                .File(reportPath, "--out")
                .File(reportPath is null ? null : Path.ChangeExtension(reportPath, ".json"), "--out (its .json)")
                .File(reportPath is null ? null : Path.ChangeExtension(reportPath, ".png"), "--out (its .png)");
            var evaluations = new List<ModelEvaluation>();
            foreach ((string modelName, string modelDir) in named)
            {
                var tokenizer = CliTokenizer.TryLoad(modelDir) ?? throw new UsageException($"{modelDir} has no tokenizer (tokenizer.json or tokenizer.model); evaluation needs one.");
                using LlamaForCausalLM lm = ModelCheckpoint.Load(modelDir, new ModelLoadOptions { Device = parsed.GetValue(device)! });
                var options = new EvaluationOptions
                {
                    ModelName = modelName,
                    BatchSize = parsed.GetValue(batchSize),
                    FewShot = parsed.GetValue(fewShot),
                    Limit = parsed.GetValue(limit),
                    MaxLength = lm.Config.MaxPositionEmbeddings,
                    PrefixTokenId = lm.Config.BosTokenId,
                };
                using var bar = context.CreateProgressBar(options.ModelName, ProgressUnit.Examples);
                ModelEvaluation evaluation = await Evaluator.EvaluateAsync(
                    lm,
                    tokenizer,
                    specs,
                    options,
                    bar,
                    cancellationToken: cancellationToken).ConfigureAwait(false);
                evaluations.Add(evaluation);
            }

            var report = new EvaluationReport(evaluations);
            await context.Output.WriteLineAsync(report.ToMarkdown()).ConfigureAwait(false);
            if (parsed.GetValue(output) is { } path)
            {
                report.WriteMarkdown(path);
                report.WriteJson(Path.ChangeExtension(path, ".json"));
                foreach ((string task, string metric) in report.Columns)
                {
                    report.WriteBarChart(ChartPath(path, task, metric), task, metric);
                }

                await context.Output.WriteLineAsync($"wrote {path}").ConfigureAwait(false);
            }

            return ExitCodes.Success;
        });
        return command;
    }

    /// <summary>Where <c>eval --out</c> draws one task metric: <c>report.md</c> -> <c>report.arc_easy.acc.png</c>.</summary>
    internal static string ChartPath(string markdownPath, string task, string metric)
    {
        string safe = string.Concat($"{task}.{metric}".Select(c => char.IsLetterOrDigit(c) || c is '.' or '-' or '_' ? c : '_'));
        return Path.ChangeExtension(markdownPath, null) + "." + safe + ".png";
    }

    private static TaskSpec ParseTask(string text)
    {
        int eq = text.IndexOf('=', StringComparison.Ordinal);
        if (eq <= 0 || eq == text.Length - 1)
        {
            throw new UsageException($"--task '{text}': expected name=file.jsonl.");
        }

        string name = text[..eq], path = text[(eq + 1)..];
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"--task {name}: no such file {path}.", path);
        }

        return TaskSpec.ForHarnessTask(name, path) ?? new TaskSpec(name, TaskFormat.Generic, path);
    }

    /// <summary>
    /// The models as named in the report: <c>name=folder</c> names one; otherwise the folder's name, with its parent's
    /// when the name alone says nothing (<c>run-a/final</c> for a training run's <c>checkpoints/final</c>); names are unique.
    /// </summary>
    internal static IReadOnlyList<(string Name, string Directory)> NamedModels(IEnumerable<string> arguments)
    {
        var named = new List<(string Name, string Directory)>();
        foreach (string argument in arguments)
        {
            int equals = argument.IndexOf('=', StringComparison.Ordinal);
            (string name, string directory) = equals > 0 && !Directory.Exists(argument)
                ? (argument[..equals], argument[(equals + 1)..])
                : (DefaultName(argument), argument);
            if (named.Any(m => m.Name == name))
            {
                throw new UsageException($"--model: two models are named '{name}' in the report; name them with name=folder.");
            }

            named.Add((name, directory));
        }

        return named;
    }

    private static string DefaultName(string directory)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
        string name = Path.GetFileName(full);
        if (name is "final" or "best" or "last" && Path.GetDirectoryName(full) is { } parent)
        {
            // checkpoints/final of a run: the run's folder says which model it is.
            string owner = Path.GetFileName(parent) == "checkpoints" ? Path.GetDirectoryName(parent) ?? parent : parent;
            name = $"{Path.GetFileName(owner)}/{name}";
        }

        return name;
    }
}
