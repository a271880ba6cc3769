using System.Diagnostics;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ModelSurgery.Inference.Tokenization;
using TorchSharp;
using static TorchSharp.torch;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Inference.Evaluation;

/// <summary>The scores of one task.</summary>
/// <param name="Task">Task name.</param>
/// <param name="Documents">Documents evaluated.</param>
/// <param name="FewShot">Few-shot examples per prompt.</param>
/// <param name="Metrics">Metric name to value with standard error (the task's harness metrics plus acc_bytes for multiple choice).</param>
public sealed record TaskResult(string Task, int Documents, int FewShot, IReadOnlyDictionary<string, MetricValue> Metrics)
{
    /// <summary>Bits-per-byte details for text tasks, else null.</summary>
    public BitsPerByteResult? Text { get; init; }

    /// <summary>
    /// The subtasks of a group (MMLU's subjects, named like the harness's mmlu_abstract_algebra), each scored alone;
    /// <see cref="Metrics"/> then pools them as the harness does (size-weighted mean, pooled standard error). Empty for
    /// a task without subtasks.
    /// </summary>
    public IReadOnlyList<TaskResult> Subtasks { get; init; } = [];

    /// <summary>Per-document predictions of multiple-choice tasks (not serialised).</summary>
    [JsonIgnore]
    public IReadOnlyList<MultipleChoicePrediction> Predictions { get; init; } = [];
}

/// <summary>All task results of one model.</summary>
/// <param name="ModelName">Model name.</param>
/// <param name="ParameterCount">Number of model parameters.</param>
/// <param name="Tasks">One result per task, in the order asked.</param>
public sealed record ModelEvaluation(string ModelName, long ParameterCount, IReadOnlyList<TaskResult> Tasks)
{
    /// <summary>The result of a task by name, or null.</summary>
    /// <param name="task">Task name.</param>
    /// <returns>The result.</returns>
    public TaskResult? this[string task] => Tasks.FirstOrDefault(t => t.Task == task);
}

/// <summary>Progress of an evaluation.</summary>
/// <param name="Task">The task being scored.</param>
/// <param name="TaskIndex">Its position in the task list (0-based).</param>
/// <param name="TaskCount">Number of tasks.</param>
/// <param name="Completed">Requests (or documents) of this task scored so far.</param>
/// <param name="Total">Requests of this task.</param>
/// <param name="Unit">What the counts count: log-likelihood requests, or documents of a perplexity task.</param>
public sealed record EvaluationProgress(string Task, int TaskIndex, int TaskCount, long Completed, long? Total, ProgressUnit Unit = ProgressUnit.Requests) : IProgressReport
{
    /// <summary>The task and its place in the list, e.g. <c>hellaswag (2/5)</c>.</summary>
    public string Status => $"{Task} ({TaskIndex + 1}/{TaskCount})";
}

/// <summary>Runs benchmark tasks against a causal LM, scoring as lm-evaluation-harness does.</summary>
public static partial class Evaluator
{
    /// <summary>Evaluates a model on every task.</summary>
    /// <param name="model">Causal LM: input ids [B, T] int64 to logits [B, T, V].</param>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="tasks">Tasks to run.</param>
    /// <param name="options">Batch size, few-shot k, seed, limit, model name; defaults when null.</param>
    /// <param name="progress">Receives progress per scored batch.</param>
    /// <param name="logger">Receives one line per task.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The model's results.</returns>
    public static async Task<ModelEvaluation> EvaluateAsync(
        nn.Module<Tensor, Tensor> model,
        ModelTokenizer tokenizer,
        IReadOnlyList<TaskSpec> tasks,
        EvaluationOptions? options = null,
        IProgress<EvaluationProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(tasks);
        options ??= new EvaluationOptions();
        logger ??= NullLogger.Instance;
        var scorer = new LogLikelihoodScorer(model, tokenizer, options);
        var duplicate = tasks.GroupBy(t => t.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"Task name '{duplicate.Key}' appears more than once.", nameof(tasks));
        }

        var results = new List<TaskResult>();
        for (int t = 0; t < tasks.Count; t++)
        {
            TaskSpec spec = tasks[t];
            var watch = Stopwatch.StartNew();
            TaskResult result = spec.Format == TaskFormat.Text
                ? await EvaluateTextAsync(scorer, spec, options, t, tasks.Count, progress, cancellationToken).ConfigureAwait(false)
                : await EvaluateMultipleChoiceAsync(scorer, spec, options, t, tasks.Count, progress, cancellationToken).ConfigureAwait(false);
            results.Add(result);
            if (logger.IsEnabled(LogLevel.Information))
            {
                string metrics = string.Join(", ", result.Metrics.Select(m => $"{m.Key} {m.Value}"));
                LogTask(logger, options.ModelName, spec.Name, metrics, result.Documents, result.FewShot, watch.Elapsed.TotalSeconds);
            }
        }

        long parameters = model.parameters().Sum(p => p.numel());
        return new ModelEvaluation(options.ModelName, parameters, results);
    }

    /// <summary>Builds a multiple-choice task's prompts (with few-shot examples) without scoring them.</summary>
    /// <param name="spec">The task.</param>
    /// <param name="options">Few-shot k, seed, limit and delimiters.</param>
    /// <returns>One item per evaluated document.</returns>
    public static IReadOnlyList<MultipleChoiceItem> BuildItems(TaskSpec spec, EvaluationOptions options)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        IReadOnlyList<TaskDocument> all = TaskReader.Read(spec.Format, spec.DataPath);
        IReadOnlyList<TaskDocument> docs = options.Limit is int limit ? [.. all.Take(limit)] : all;
        int k = spec.FewShot ?? options.FewShot;
        bool separate = spec.FewShotPath is not null;
        IReadOnlyList<TaskDocument> pool = k == 0 ? [] : separate ? TaskReader.Read(spec.Format, spec.FewShotPath!) : all;

        // MMLU's harness config takes the first k dev examples; other tasks sample.
        bool firstN = separate && spec.Format == TaskFormat.Mmlu;
        IReadOnlyList<string> prompts = FewShotPrompts.Build(
            docs, pool, poolIsDocs: !separate, k, options.Seed, firstN, options.TargetDelimiter, options.FewShotDelimiter, spec.DrawsExtraFewShot);
        return [.. docs.Select((d, i) => new MultipleChoiceItem(prompts[i], d.Choices, d.Gold) { Group = d.Group })];
    }

    /// <summary>Scores multiple-choice items and aggregates acc, acc_norm and acc_bytes.</summary>
    /// <param name="scorer">The scorer.</param>
    /// <param name="items">The items.</param>
    /// <param name="progress">Receives the requests scored so far after each batch.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>Per-document predictions.</returns>
    public static async Task<IReadOnlyList<MultipleChoicePrediction>> ScoreItemsAsync(
        LogLikelihoodScorer scorer, IReadOnlyList<MultipleChoiceItem> items, IProgress<LogLikelihoodProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(scorer);
        ArgumentNullException.ThrowIfNull(items);
        string delimiter = scorer.Options.TargetDelimiter;
        LogLikelihoodRequest[] requests = [.. items.SelectMany(i => i.Choices.Select(c => new LogLikelihoodRequest(i.Context, delimiter + c)))];
        IReadOnlyList<LogLikelihoodResult> results = await scorer.ScoreAsync(requests, progress, cancellationToken).ConfigureAwait(false);
        var predictions = new List<MultipleChoicePrediction>(items.Count);
        int next = 0;
        foreach (MultipleChoiceItem item in items)
        {
            double[] lls = [.. results.Skip(next).Take(item.Choices.Count).Select(r => r.LogLikelihood)];
            next += item.Choices.Count;
            predictions.Add(MultipleChoiceMetrics.Predict(item.Choices, lls, item.Gold));
        }

        return predictions;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Model} {Task}: {Metrics} ({Documents} documents, {FewShot}-shot, {Seconds:F1} s)")]
    private static partial void LogTask(ILogger logger, string model, string task, string metrics, int documents, int fewShot, double seconds);

    private static async Task<TaskResult> EvaluateMultipleChoiceAsync(
        LogLikelihoodScorer scorer, TaskSpec spec, EvaluationOptions options, int index, int count, IProgress<EvaluationProgress>? progress, CancellationToken cancellationToken)
    {
        IReadOnlyList<MultipleChoiceItem> items = BuildItems(spec, options);
        if (items.Count == 0)
        {
            throw new InvalidDataException($"{spec.DataPath}: task '{spec.Name}' has no documents.");
        }

        int total = items.Sum(i => i.Choices.Count);
        // Relayed synchronously so the caller sees reports in order, before the task's result.
        var requestProgress = progress is null ? null : new SynchronousProgress<LogLikelihoodProgress>(p => progress.Report(new EvaluationProgress(spec.Name, index, count, p.Completed, total)));
        IReadOnlyList<MultipleChoicePrediction> predictions = await ScoreItemsAsync(scorer, items, requestProgress, cancellationToken).ConfigureAwait(false);
        string[] reported = [.. spec.Metrics.Append(MetricNames.ByteNormalizedAccuracy).Distinct()];
        int fewShot = spec.FewShot ?? options.FewShot;
        if (items.All(i => i.Group is null))
        {
            IReadOnlyDictionary<string, MetricValue> all = MultipleChoiceMetrics.Aggregate(predictions);
            return new TaskResult(spec.Name, items.Count, fewShot, reported.ToDictionary(m => m, m => all[m])) { Predictions = predictions };
        }

        // A group of subtasks (MMLU subjects): each subject is scored alone, the group pools them as the harness does.
        var (group, subtasks) = MultipleChoiceMetrics.AggregateGroups(predictions, [.. items.Select(i => i.Group ?? string.Empty)]);
        return new TaskResult(spec.Name, items.Count, fewShot, reported.ToDictionary(m => m, m => group[m]))
        {
            Predictions = predictions,
            Subtasks = [.. subtasks.Select(s => new TaskResult($"{spec.Name}_{s.Subtask}", s.Size, fewShot, reported.ToDictionary(m => m, m => s.Metrics[m])))],
        };
    }

    private static async Task<TaskResult> EvaluateTextAsync(
        LogLikelihoodScorer scorer, TaskSpec spec, EvaluationOptions options, int index, int count, IProgress<EvaluationProgress>? progress, CancellationToken cancellationToken)
    {
        IReadOnlyList<string> texts = TaskReader.ReadTexts(spec.DataPath);
        if (options.Limit is int limit)
        {
            texts = [.. texts.Take(limit)];
        }

        double nll = 0;
        long bytes = 0;
        int tokens = 0;
        BitsPerByteResult? last = null;
        for (int i = 0; i < texts.Count; i++)
        {
            last = await scorer.ScoreTextAsync(texts[i], cancellationToken).ConfigureAwait(false);
            nll += last.TotalNllNats;
            bytes += last.Bytes;
            tokens += last.Tokens;
            progress?.Report(new EvaluationProgress(spec.Name, index, count, i + 1, texts.Count, ProgressUnit.Documents));
        }

        if (last is null)
        {
            throw new InvalidDataException($"{spec.DataPath}: task '{spec.Name}' has no text.");
        }

        // Summed over documents, as the harness's weighted bits_per_byte aggregation does.
        var text = new BitsPerByteResult(nll, bytes, tokens, last.ContextLength, last.Stride);
        var metrics = new Dictionary<string, MetricValue>
        {
            [MetricNames.BitsPerByte] = new(text.BitsPerByte, double.NaN),
            [MetricNames.TokenPerplexity] = new(text.TokenPerplexity, double.NaN),
        };
        return new TaskResult(spec.Name, texts.Count, 0, metrics) { Text = text };
    }
}
