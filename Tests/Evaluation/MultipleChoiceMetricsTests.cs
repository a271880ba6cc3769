using ModelSurgery.Inference.Evaluation;

namespace ModelSurgery.Tests.Evaluation;

public sealed class MultipleChoiceMetricsTests
{
    [Test]
    public void Length_normalisation_can_pick_a_different_answer_than_acc()
    {
        // acc: -1.0 > -2.0 picks "a"; acc_norm: -1.0 / 1 = -1.0 < -2.0 / 4 = -0.5 picks "bbbb".
        MultipleChoicePrediction p = MultipleChoiceMetrics.Predict(["a", "bbbb"], [-1.0, -2.0], gold: 1);
        Assert.That((p.Predicted, p.PredictedNormalized, p.PredictedByteNormalized), Is.EqualTo((0, 1, 1)));
    }

    [Test]
    public void Acc_norm_counts_characters_like_python_len_and_acc_bytes_counts_utf8_bytes()
    {
        // "éé" is 2 characters but 4 bytes; "abc" is 3 of each.
        // acc_norm: -2.2 / 2 = -1.1 < -3.0 / 3 = -1.0 picks "abc"; acc_bytes: -2.2 / 4 = -0.55 > -1.0 picks "éé".
        MultipleChoicePrediction p = MultipleChoiceMetrics.Predict(["éé", "abc"], [-2.2, -3.0], gold: 0);
        Assert.That((p.Predicted, p.PredictedNormalized, p.PredictedByteNormalized), Is.EqualTo((0, 1, 0)));
        Assert.That(MultipleChoiceMetrics.CharacterCount("a😀"), Is.EqualTo(2));
    }

    [Test]
    public void Ties_go_to_the_first_choice_like_numpy_argmax()
    {
        Assert.That(MultipleChoiceMetrics.Predict(["x", "y", "z"], [-1, -0.5, -0.5], 0).Predicted, Is.EqualTo(1));
    }

    [Test]
    public void Standard_error_is_sample_std_over_sqrt_n()
    {
        // Scores 1, 0, 1, 1: mean 0.75; squared deviations 3 * 0.0625 + 0.5625 = 0.75; / (n - 1) = 0.25; std 0.5; / sqrt(4) = 0.25.
        MetricValue value = MultipleChoiceMetrics.Mean([1, 0, 1, 1]);
        Assert.That(value.Value, Is.EqualTo(0.75));
        Assert.That(value.StandardError, Is.EqualTo(0.25).Within(1e-12));
        Assert.That(MultipleChoiceMetrics.MeanStandardError([1]), Is.NaN);
    }

    [Test]
    public void Aggregate_reports_acc_acc_norm_and_acc_bytes()
    {
        IReadOnlyDictionary<string, MetricValue> metrics = MultipleChoiceMetrics.Aggregate(
        [
            new MultipleChoicePrediction(0, 1, 1, 1),
            new MultipleChoicePrediction(1, 1, 0, 1),
        ]);
        Assert.That(metrics[MetricNames.Accuracy].Value, Is.EqualTo(0.5));
        Assert.That(metrics[MetricNames.NormalizedAccuracy].Value, Is.EqualTo(1.0));
        Assert.That(metrics[MetricNames.ByteNormalizedAccuracy].Value, Is.EqualTo(0.5));
        Assert.That(metrics[MetricNames.Accuracy].StandardError, Is.EqualTo(0.5).Within(1e-12)); // std of {0, 1} = 0.7071 / sqrt 2
    }

    [Test]
    public void Gold_outside_the_choices_is_rejected()
    {
        var ex = Assert.Throws<ArgumentException>(() => MultipleChoiceMetrics.Predict(["a", "b"], [-1, -2], 2));
        Assert.That(ex!.Message, Does.Contain("Gold index 2"));
    }
}
