using System.Globalization;

namespace ModelSurgery.Inference.Evaluation;

/// <summary>A multiple-choice question ready to score.</summary>
/// <param name="Context">Full prompt (description, few-shot examples and the question).</param>
/// <param name="Choices">Answer texts without the target delimiter.</param>
/// <param name="Gold">Index of the correct choice.</param>
public sealed record MultipleChoiceItem(string Context, IReadOnlyList<string> Choices, int Gold)
{
    /// <summary>The subtask the document belongs to (MMLU subject), or null for a task without subtasks.</summary>
    public string? Group { get; init; }
}

/// <summary>A metric's mean over documents and its standard error.</summary>
/// <param name="Value">Mean of the per-document scores.</param>
/// <param name="StandardError">Sample standard deviation / sqrt(n) (the harness's mean_stderr); NaN below two documents.</param>
public sealed record MetricValue(double Value, double StandardError)
{
    /// <inheritdoc />
    /// <remarks>Without a standard error (corpus-level metrics such as bits per byte, or a single document) the value stands alone.</remarks>
    public override string ToString() => double.IsNaN(StandardError)
        ? Value.ToString("F4", CultureInfo.InvariantCulture)
        : string.Create(CultureInfo.InvariantCulture, $"{Value:F4} ± {StandardError:F4}");
}

/// <summary>Per-document predictions of a multiple-choice task.</summary>
/// <param name="Predicted">argmax of the log-likelihoods.</param>
/// <param name="PredictedNormalized">argmax of log-likelihood / character count of the choice (acc_norm).</param>
/// <param name="PredictedByteNormalized">argmax of log-likelihood / UTF-8 byte count of the choice (acc_bytes).</param>
/// <param name="Gold">The correct choice.</param>
public sealed record MultipleChoicePrediction(int Predicted, int PredictedNormalized, int PredictedByteNormalized, int Gold);

/// <summary>Multiple-choice metrics computed exactly as lm-evaluation-harness's <c>process_results</c> and <c>mean_stderr</c>.</summary>
public static class MultipleChoiceMetrics
{
    /// <summary>
    /// Picks the answers from the choices' log-likelihoods. acc_norm divides by the choice's length in characters
    /// (Python's <c>len(choice)</c>, i.e. Unicode code points, as the harness does); acc_bytes by its UTF-8 bytes.
    /// Ties go to the first choice, like numpy's argmax.
    /// </summary>
    /// <param name="choices">Choice texts without the target delimiter.</param>
    /// <param name="logLikelihoods">One log-likelihood per choice.</param>
    /// <param name="gold">Correct choice index.</param>
    /// <returns>The predictions.</returns>
    public static MultipleChoicePrediction Predict(IReadOnlyList<string> choices, IReadOnlyList<double> logLikelihoods, int gold)
    {
        ArgumentNullException.ThrowIfNull(choices);
        ArgumentNullException.ThrowIfNull(logLikelihoods);
        if (choices.Count == 0 || choices.Count != logLikelihoods.Count)
        {
            throw new ArgumentException($"Expected one log-likelihood per choice but got {logLikelihoods.Count} for {choices.Count} choices.", nameof(logLikelihoods));
        }

        if (gold < 0 || gold >= choices.Count)
        {
            throw new ArgumentException($"Gold index {gold} is outside the {choices.Count} choices.", nameof(gold));
        }

        return new MultipleChoicePrediction(
            ArgMax(logLikelihoods.Count, i => logLikelihoods[i]),
            ArgMax(logLikelihoods.Count, i => logLikelihoods[i] / CharacterCount(choices[i])),
            ArgMax(logLikelihoods.Count, i => logLikelihoods[i] / System.Text.Encoding.UTF8.GetByteCount(choices[i])),
            gold);
    }

    /// <summary>Length of a string as Python's <c>len</c> counts it (code points; a surrogate pair is one).</summary>
    /// <param name="text">The text.</param>
    /// <returns>Code point count.</returns>
    public static int CharacterCount(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int count = 0;
        foreach (System.Text.Rune _ in text.EnumerateRunes())
        {
            count++;
        }

        return count;
    }

    /// <summary>Mean and harness standard error of per-document scores.</summary>
    /// <param name="scores">One score per document (e.g. 1 correct, 0 wrong).</param>
    /// <returns>The metric value.</returns>
    public static MetricValue Mean(IReadOnlyList<double> scores)
    {
        ArgumentNullException.ThrowIfNull(scores);
        if (scores.Count == 0)
        {
            throw new ArgumentException("Cannot average zero scores.", nameof(scores));
        }

        double mean = scores.Average();
        return new MetricValue(mean, MeanStandardError(scores));
    }

    /// <summary>The harness's <c>mean_stderr</c>: sample standard deviation (n - 1) divided by sqrt(n).</summary>
    /// <param name="scores">Per-document scores.</param>
    /// <returns>The standard error, NaN for fewer than two scores.</returns>
    public static double MeanStandardError(IReadOnlyList<double> scores)
    {
        ArgumentNullException.ThrowIfNull(scores);
        int n = scores.Count;
        if (n < 2)
        {
            return double.NaN;
        }

        return MathNet.Numerics.Statistics.Statistics.StandardDeviation(scores) / Math.Sqrt(n);
    }

    /// <summary>acc, acc_norm and acc_bytes over a task's predictions.</summary>
    /// <param name="predictions">One prediction per document.</param>
    /// <returns>Metric name to value.</returns>
    public static IReadOnlyDictionary<string, MetricValue> Aggregate(IReadOnlyList<MultipleChoicePrediction> predictions)
    {
        ArgumentNullException.ThrowIfNull(predictions);
        return new Dictionary<string, MetricValue>
        {
            [MetricNames.Accuracy] = Mean([.. predictions.Select(p => p.Predicted == p.Gold ? 1.0 : 0.0)]),
            [MetricNames.NormalizedAccuracy] = Mean([.. predictions.Select(p => p.PredictedNormalized == p.Gold ? 1.0 : 0.0)]),
            [MetricNames.ByteNormalizedAccuracy] = Mean([.. predictions.Select(p => p.PredictedByteNormalized == p.Gold ? 1.0 : 0.0)]),
        };
    }

    /// <summary>
    /// A group's metric from its subtasks', as the harness aggregates a group such as mmlu over its subjects: the mean
    /// weighted by subtask size (<c>aggregate_subtask_metrics</c> with weight_by_size) and the pooled standard error
    /// <c>sqrt(sum((n_i - 1) * n_i * se_i^2) / (N - g) / N)</c> (<c>pooled_sample_stderr</c>), with N the documents and
    /// g the subtasks. The error is NaN when a subtask has none (a single document), as the harness reports N/A.
    /// </summary>
    /// <param name="subtasks">Each subtask's metric value.</param>
    /// <param name="sizes">Each subtask's document count.</param>
    /// <returns>The group's value.</returns>
    public static MetricValue Pool(IReadOnlyList<MetricValue> subtasks, IReadOnlyList<int> sizes)
    {
        ArgumentNullException.ThrowIfNull(subtasks);
        ArgumentNullException.ThrowIfNull(sizes);
        if (subtasks.Count == 0 || subtasks.Count != sizes.Count)
        {
            throw new ArgumentException($"Expected one size per subtask but got {sizes.Count} sizes for {subtasks.Count} subtasks.", nameof(sizes));
        }

        if (sizes.Any(n => n < 1))
        {
            throw new ArgumentException("Every subtask needs at least one document.", nameof(sizes));
        }

        double total = sizes.Sum(n => (double)n);
        double mean = subtasks.Select((m, i) => m.Value * sizes[i]).Sum() / total;
        if (subtasks.Any(m => double.IsNaN(m.StandardError)))
        {
            return new MetricValue(mean, double.NaN);
        }

        double pooledVariance = subtasks.Select((m, i) => (sizes[i] - 1.0) * m.StandardError * m.StandardError * sizes[i]).Sum() / (total - subtasks.Count);
        return new MetricValue(mean, Math.Sqrt(pooledVariance / total));
    }

    /// <summary>
    /// acc, acc_norm and acc_bytes of each subtask and of the group they form (<see cref="Pool"/>), for tasks such as
    /// MMLU that the harness reports as a group of subjects.
    /// </summary>
    /// <param name="predictions">One prediction per document.</param>
    /// <param name="groups">Each document's subtask.</param>
    /// <returns>The group's metrics, and each subtask's size and metrics in order of first appearance.</returns>
    public static (IReadOnlyDictionary<string, MetricValue> Group, IReadOnlyList<(string Subtask, int Size, IReadOnlyDictionary<string, MetricValue> Metrics)> Subtasks) AggregateGroups(
        IReadOnlyList<MultipleChoicePrediction> predictions, IReadOnlyList<string> groups)
    {
        ArgumentNullException.ThrowIfNull(predictions);
        ArgumentNullException.ThrowIfNull(groups);
        if (predictions.Count != groups.Count)
        {
            throw new ArgumentException($"Expected one group per prediction but got {groups.Count} for {predictions.Count}.", nameof(groups));
        }

        var subtasks = predictions.Select((p, i) => (Prediction: p, Group: groups[i]))
            .GroupBy(x => x.Group, StringComparer.Ordinal)
            .Select(g => (Subtask: g.Key, Size: g.Count(), Metrics: Aggregate([.. g.Select(x => x.Prediction)])))
            .ToList();
        int[] sizes = [.. subtasks.Select(s => s.Size)];
        var group = subtasks[0].Metrics.Keys.ToDictionary(
            metric => metric,
            metric => Pool([.. subtasks.Select(s => s.Metrics[metric])], sizes));
        return (group, subtasks);
    }

    private static int ArgMax(int count, Func<int, double> value)
    {
        int best = 0;
        for (int i = 1; i < count; i++)
        {
            if (value(i) > value(best))
            {
                best = i;
            }
        }

        return best;
    }
}

/// <summary>Metric names as the harness reports them.</summary>
public static class MetricNames
{
    /// <summary>Accuracy of argmax log-likelihood.</summary>
    public const string Accuracy = "acc";

    /// <summary>Accuracy of argmax log-likelihood per character of the choice.</summary>
    public const string NormalizedAccuracy = "acc_norm";

    /// <summary>Accuracy of argmax log-likelihood per UTF-8 byte of the choice.</summary>
    public const string ByteNormalizedAccuracy = "acc_bytes";

    /// <summary>Bits per UTF-8 byte of a text.</summary>
    public const string BitsPerByte = "bits_per_byte";

    /// <summary>Token-level perplexity of a text.</summary>
    public const string TokenPerplexity = "token_perplexity";
}
