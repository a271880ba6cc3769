using System.Globalization;

namespace ModelSurgery.Inference.Evaluation;

/// <summary>A multiple-choice question ready to score.</summary>
/// <param name="Context">Full prompt (description, few-shot examples and the question).</param>
/// <param name="Choices">Answer texts without the target delimiter.</param>
/// <param name="Gold">Index of the correct choice.</param>
public sealed record MultipleChoiceItem(string Context, IReadOnlyList<string> Choices, int Gold);

/// <summary>A metric's mean over documents and its standard error.</summary>
/// <param name="Value">Mean of the per-document scores.</param>
/// <param name="StandardError">Sample standard deviation / sqrt(n) (the harness's mean_stderr); NaN below two documents.</param>
public sealed record MetricValue(double Value, double StandardError)
{
    /// <inheritdoc />
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Value:F4} ± {StandardError:F4}");
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

        double mean = scores.Average();
        double squares = scores.Sum(s => (s - mean) * (s - mean));
        return Math.Sqrt(squares / (n - 1)) / Math.Sqrt(n);
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
