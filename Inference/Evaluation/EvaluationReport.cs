using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Inference.Evaluation;

/// <summary>One model's metric next to the reference model's.</summary>
/// <param name="Model">Model name.</param>
/// <param name="Task">Task name.</param>
/// <param name="Metric">Metric name.</param>
/// <param name="Value">The value with its standard error.</param>
/// <param name="DifferenceToReference">Value minus the reference model's value; null for the reference or when it lacks the metric.</param>
public sealed record ReportCell(string Model, string Task, string Metric, MetricValue Value, double? DifferenceToReference);

/// <summary>Several models' evaluations side by side (teacher, students, baselines), with differences to a reference.</summary>
public sealed class EvaluationReport
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
    };

    /// <summary>Creates a report.</summary>
    /// <param name="models">Evaluations, one row each, in this order.</param>
    /// <param name="referenceModel">Name of the model the others are compared to (e.g. the teacher); null: the first.</param>
    public EvaluationReport(IReadOnlyList<ModelEvaluation> models, string? referenceModel = null)
    {
        ArgumentNullException.ThrowIfNull(models);
        if (models.Count == 0)
        {
            throw new ArgumentException("A report needs at least one model.", nameof(models));
        }

        Models = models;
        Reference = referenceModel is null
            ? models[0]
            : models.FirstOrDefault(m => m.ModelName == referenceModel)
                ?? throw new ArgumentException($"Reference model '{referenceModel}' is not among [{string.Join(", ", models.Select(m => m.ModelName))}].", nameof(referenceModel));
    }

    /// <summary>The evaluations in row order.</summary>
    public IReadOnlyList<ModelEvaluation> Models { get; }

    /// <summary>The model differences are measured against.</summary>
    public ModelEvaluation Reference { get; }

    /// <summary>(task, metric) columns in first-seen order over all models.</summary>
    public IReadOnlyList<(string Task, string Metric)> Columns =>
        [.. Models.SelectMany(m => m.Tasks.SelectMany(t => t.Metrics.Keys.Select(k => (t.Task, k)))).Distinct()];

    /// <summary>Every model's every metric with its difference to the reference.</summary>
    public IReadOnlyList<ReportCell> Cells =>
        [.. Models.SelectMany(m => m.Tasks.SelectMany(t => t.Metrics.Select(kv => new ReportCell(m.ModelName, t.Task, kv.Key, kv.Value, Difference(m, t.Task, kv.Key, kv.Value)))))];

    /// <summary>A Markdown table: model, parameters, then "value ± stderr (difference)" per task metric.</summary>
    /// <returns>The table.</returns>
    public string ToMarkdown()
    {
        IReadOnlyList<(string Task, string Metric)> columns = Columns;
        var md = new StringBuilder();
        md.Append("| Model | Parameters |");
        foreach ((string task, string metric) in columns)
        {
            md.Append(CultureInfo.InvariantCulture, $" {task} {metric} |");
        }

        md.Append('\n').Append("|---|---:|").Append(string.Concat(Enumerable.Repeat("---:|", columns.Count))).Append('\n');
        foreach (ModelEvaluation model in Models)
        {
            md.Append(CultureInfo.InvariantCulture, $"| {model.ModelName}{(ReferenceEquals(model, Reference) ? " (reference)" : string.Empty)} | {FormatCount(model.ParameterCount)} |");
            foreach ((string task, string metric) in columns)
            {
                MetricValue? value = model[task]?.Metrics.GetValueOrDefault(metric);
                md.Append(' ').Append(value is null ? "–" : FormatCell(value, Difference(model, task, metric, value))).Append(" |");
            }

            md.Append('\n');
        }

        return md.ToString();
    }

    /// <summary>The report as indented JSON: reference name, the evaluations, and the cells with differences.</summary>
    /// <returns>JSON text.</returns>
    public string ToJson() => JsonSerializer.Serialize(new { Reference = Reference.ModelName, Models, Cells }, JsonOptions);

    /// <summary>Writes <see cref="ToMarkdown"/> atomically.</summary>
    /// <param name="path">Output path.</param>
    public void WriteMarkdown(string path) => IO.AtomicFile.WriteAllText(path, ToMarkdown());

    /// <summary>Writes <see cref="ToJson"/> atomically.</summary>
    /// <param name="path">Output path.</param>
    public void WriteJson(string path) => IO.AtomicFile.WriteAllText(path, ToJson());

    /// <summary>Writes a PNG bar chart of one task metric over the models, with standard errors as error bars.</summary>
    /// <param name="path">Output PNG path.</param>
    /// <param name="task">Task name.</param>
    /// <param name="metric">Metric name (acc, acc_norm, bits_per_byte...).</param>
    public void WriteBarChart(string path, string task, string metric = MetricNames.Accuracy) => Charts.Save(BarChart(task, metric), path);

    /// <summary>
    /// The bar chart <see cref="WriteBarChart"/> draws: values written on the bars; a log axis when the values span
    /// orders of magnitude (perplexities), else an axis starting just below the lowest bar so close values differ visibly.
    /// </summary>
    /// <param name="task">Task name.</param>
    /// <param name="metric">Metric name.</param>
    /// <returns>The plot, before rendering.</returns>
    /// <exception cref="ArgumentException">No model has the metric for the task.</exception>
    public ScottPlot.Plot BarChart(string task, string metric = MetricNames.Accuracy)
    {
        var rows = Models.Where(m => m[task]?.Metrics.ContainsKey(metric) == true).ToList();
        if (rows.Count == 0)
        {
            throw new ArgumentException($"No model has metric '{metric}' for task '{task}'.", nameof(metric));
        }

        MetricValue[] values = [.. rows.Select(m => m[task]!.Metrics[metric])];
        double[] heights = [.. values.Select(v => v.Value)];
        double[] errors = [.. values.Select(v => double.IsNaN(v.StandardError) ? 0 : v.StandardError)];
        bool log = Charts.NeedsLogAxis(heights);
        return Charts.BarsPlot(
            $"{task} {metric}", metric, [.. rows.Select(m => m.ModelName)], heights, errors,
            baseline: log ? null : Charts.BaselineFor(heights, errors), logY: log);
    }

    private double? Difference(ModelEvaluation model, string task, string metric, MetricValue value)
    {
        if (ReferenceEquals(model, Reference))
        {
            return null;
        }

        MetricValue? reference = Reference[task]?.Metrics.GetValueOrDefault(metric);
        return reference is null ? null : value.Value - reference.Value;
    }

    private static string FormatCell(MetricValue value, double? difference)
    {
        var cell = new StringBuilder(value.Value.ToString("F4", CultureInfo.InvariantCulture));
        if (!double.IsNaN(value.StandardError))
        {
            cell.Append(" ± ").Append(value.StandardError.ToString("F4", CultureInfo.InvariantCulture));
        }

        if (difference is double d)
        {
            cell.Append(" (").Append(d.ToString("+0.0000;-0.0000;0.0000", CultureInfo.InvariantCulture)).Append(')');
        }

        return cell.ToString();
    }

    private static string FormatCount(long count) => count switch
    {
        >= 1_000_000_000 => (count / 1e9).ToString("F2", CultureInfo.InvariantCulture) + "B",
        >= 1_000_000 => (count / 1e6).ToString("F1", CultureInfo.InvariantCulture) + "M",
        >= 1_000 => (count / 1e3).ToString("F1", CultureInfo.InvariantCulture) + "K",
        _ => count.ToString(CultureInfo.InvariantCulture),
    };
}
