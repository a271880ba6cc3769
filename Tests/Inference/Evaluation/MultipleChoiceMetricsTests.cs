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
        Assert.That(value.ToString(), Is.EqualTo("0.7500 ± 0.2500"));
        Assert.That(new MetricValue(3.4772, double.NaN).ToString(), Is.EqualTo("3.4772"), "no '± NaN' where there is no standard error");
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
    public void A_group_pools_its_subtasks_as_the_harness_does()
    {
        // Subject x: scores {1, 1, 0, 0}, mean 1/2, sample variance 1/3, se^2 = 1/12; subject y: {1, 0, 0}, mean 1/3,
        // sample variance 1/3, se^2 = 1/9. Size-weighted mean (2 + 1) / 7 = 3/7. pooled_sample_stderr:
        // ((4 - 1) * 4 / 12 + (3 - 1) * 3 / 9) / (7 - 2) = (1 + 2/3) / 5 = 1/3, then sqrt((1/3) / 7) = sqrt(1/21).
        // (The stderr of the 7 scores concatenated would be sqrt(2/7) / sqrt(7) = 0.2020, not 0.2182.)
        MultipleChoicePrediction Right() => new(0, 0, 0, 0);
        MultipleChoicePrediction Wrong() => new(1, 1, 1, 0);
        var (group, subtasks) = MultipleChoiceMetrics.AggregateGroups(
            [Right(), Right(), Right(), Wrong(), Wrong(), Wrong(), Wrong()],
            ["x", "x", "y", "x", "x", "y", "y"]);

        Assert.That(subtasks.Select(s => (s.Subtask, s.Size)), Is.EqualTo(new[] { ("x", 4), ("y", 3) }));
        Assert.That(subtasks[0].Metrics[MetricNames.Accuracy].StandardError, Is.EqualTo(Math.Sqrt(1.0 / 12)).Within(1e-12));
        Assert.That(group[MetricNames.Accuracy].Value, Is.EqualTo(3.0 / 7).Within(1e-12));
        Assert.That(group[MetricNames.Accuracy].StandardError, Is.EqualTo(Math.Sqrt(1.0 / 21)).Within(1e-12));
        Assert.That(group[MetricNames.NormalizedAccuracy], Is.EqualTo(group[MetricNames.Accuracy]));

        // Unequal means weigh by size: (0.9 * 10 + 0.1 * 30) / 40 = 0.3.
        Assert.That(MultipleChoiceMetrics.Pool([new(0.9, 0.1), new(0.1, 0.05)], [10, 30]).Value, Is.EqualTo(0.3).Within(1e-12));
    }

    [Test]
    public void A_group_with_a_single_document_subtask_has_no_standard_error_like_the_harness_n_a()
    {
        MetricValue pooled = MultipleChoiceMetrics.Pool([new(1, double.NaN), new(0.5, 0.5)], [1, 2]);
        Assert.That(pooled.Value, Is.EqualTo(2.0 / 3).Within(1e-12));
        Assert.That(pooled.StandardError, Is.NaN);
        Assert.That(() => MultipleChoiceMetrics.Pool([new(1, 0)], [1, 2]), Throws.ArgumentException.With.Message.Contains("2 sizes for 1 subtasks"));
    }

    [Test]
    public void Gold_outside_the_choices_is_rejected()
    {
        var ex = Assert.Throws<ArgumentException>(() => MultipleChoiceMetrics.Predict(["a", "b"], [-1, -2], 2));
        Assert.That(ex!.Message, Does.Contain("Gold index 2"));
    }
}
