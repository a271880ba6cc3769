using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Surgery.Scoring.Metrics;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Scoring;

public sealed class ScoringMathTests
{
    [Test]
    public void Block_influence_is_zero_for_unchanged_direction_and_two_for_reversal()
    {
        using var scope = torch.NewDisposeScope();
        Tensor x = torch.randn([2, 5, 8], generator: new Generator(1)); // [N, T, D]

        Assert.Multiple(() =>
        {
            Assert.That(LayerSimilarity.BlockInfluence(x, x * 3), Is.EqualTo(0).Within(1e-12));
            Assert.That(LayerSimilarity.BlockInfluence(x, -x), Is.EqualTo(2).Within(1e-12));
        });
    }

    [Test]
    public void Angular_distance_is_half_for_orthogonal_states_and_windows_cover_the_span()
    {
        using var scope = torch.NewDisposeScope();
        Tensor e0 = torch.tensor(new float[] { 1, 0 }).view(1, 1, 2);
        Tensor e1 = torch.tensor(new float[] { 0, 1 }).view(1, 1, 2);

        double[] distances = LayerSimilarity.AngularDistances([e0, e1, e1 * 2, e0], span: 1);
        double[] span2 = LayerSimilarity.AngularDistances([e0, e1, e1 * 2, e0], span: 2);

        Assert.Multiple(() =>
        {
            Assert.That(distances, Is.EqualTo(Values(0.5, 0.0, 0.5)).Within(1e-9));
            Assert.That(span2, Is.EqualTo(Values(0.5, 0.5)).Within(1e-9));
            Assert.That(LayerSimilarity.LayerScoresFromWindows(distances, layers: 3, span: 1), Is.EqualTo(distances));
            Assert.That(LayerSimilarity.LayerScoresFromWindows([0.4, 0.1, 0.3], layers: 4, span: 2), Is.EqualTo(Values(0.4, 0.1, 0.1, 0.3)));
            Assert.That(() => LayerSimilarity.AngularDistances([e0, e1], span: 2), Throws.ArgumentException);
        });
    }

    [Test]
    public void Position_prior_ranks_ends_highest_and_middle_lowest()
    {
        double[] prior = PositionPriorMetric.LayerScores(5);

        Assert.That(prior, Is.EqualTo(Values(1.0, 0.5, 0.0, 0.5, 1.0)));
    }

    [Test]
    public void Uniform_stride_keeps_evenly_spread_layers_for_every_count()
    {
        double[] scores = UniformStrideMetric.LayerScores(9);
        int[] Top(int k) => [.. Enumerable.Range(0, 9).OrderByDescending(i => scores[i]).Take(k).Order()];

        Assert.Multiple(() =>
        {
            Assert.That(Top(2), Is.EqualTo(Values(0, 8)));
            Assert.That(Top(3), Is.EqualTo(Values(0, 4, 8)));
            Assert.That(Top(5), Is.EqualTo(Values(0, 2, 4, 6, 8)));
            Assert.That(scores.Distinct().Count(), Is.EqualTo(9));
        });
    }

    [Test]
    public void Calibration_windows_are_seeded_slices_of_the_stream()
    {
        int[] stream = [.. Enumerable.Range(100, 50)];

        var first = CalibrationData.FromTokenStream(stream, sequenceCount: 4, sequenceLength: 6, seed: 9);
        var again = CalibrationData.FromTokenStream(stream, sequenceCount: 4, sequenceLength: 6, seed: 9);
        var other = CalibrationData.FromTokenStream(stream, sequenceCount: 4, sequenceLength: 6, seed: 10);

        Assert.Multiple(() =>
        {
            Assert.That(again.Tokens, Is.EqualTo(first.Tokens));
            Assert.That(other.Tokens, Is.Not.EqualTo(first.Tokens));
            for (int s = 0; s < 4; s++)
            {
                long start = first.Tokens[s * 6];
                Assert.That(first.Tokens.Skip(s * 6).Take(6), Is.EqualTo(Enumerable.Range((int)start, 6).Select(t => (long)t)));
            }

            Assert.That(() => CalibrationData.FromTokenStream([1, 2], 1, 3, 0), Throws.ArgumentException.With.Message.Contains("2 tokens"));
            Assert.That(first.Batches(3).ToList(), Is.EqualTo(Values((0, 3), (3, 1))));
        });
    }

    [Test]
    public void Calibration_takes_64_bit_ids_as_token_files_return_them_and_names_an_id_out_of_range()
    {
        int[] narrow = [.. Enumerable.Range(100, 50)];
        long[] wide = [.. narrow.Select(t => (long)t)];

        var fromInt = CalibrationData.FromTokenStream(narrow, sequenceCount: 4, sequenceLength: 6, seed: 3);
        var fromLong = CalibrationData.FromTokenStream(wide, sequenceCount: 4, sequenceLength: 6, seed: 3);

        Assert.Multiple(() =>
        {
            Assert.That(fromLong.Tokens, Is.EqualTo(fromInt.Tokens));
            wide[17] = (long)int.MaxValue + 1;
            Assert.That(() => CalibrationData.FromTokenStream(wide, 4, 6, 3),
                Throws.ArgumentException.With.Message.Contains("Token 17").And.Message.Contains("2147483648"));
            wide[17] = -1;
            Assert.That(() => CalibrationData.FromTokenStream(wide, 4, 6, 3), Throws.ArgumentException.With.Message.Contains("Token 17").And.Message.Contains("-1"));
            Assert.That(() => CalibrationData.FromTokenStream(new long[] { 1, 2 }, 1, 3, 0), Throws.ArgumentException.With.Message.Contains("2 tokens"));
        });
    }

    [Test]
    public void Registry_resolves_names_and_rejects_unknown_ones_listing_the_known()
    {
        Assert.Multiple(() =>
        {
            Assert.That(ScoringMetrics.Get("angular-3").Name, Is.EqualTo(ScoringMetrics.AngularN));
            Assert.That(AngularDistanceMetric.Span("angular-3", 1), Is.EqualTo(3));
            Assert.That(AngularDistanceMetric.Span("angular-n", 2), Is.EqualTo(2));
            Assert.That(ScoringMetrics.Get("taylor").Needs, Is.EqualTo(MetricNeeds.Weights | MetricNeeds.Gradients));
            Assert.That(() => ScoringMetrics.Get("magic"), Throws.ArgumentException.With.Message.Contains("magic").And.Message.Contains("wanda"));
            Assert.That(new ScoringOptions { Metrics = ["l1", "magic"], BatchSize = 0 }.Validate(), Is.EqualTo(new[]
            {
                "metrics: unknown metric 'magic' (known: " + string.Join(", ", ScoringMetrics.All.Select(m => m.Name)) + ")",
                "batch_size: must be at least 1, got 0",
            }));
            Assert.That(() => new ScoringOptions { Metrics = ["l1"], BatchSize = 0 }.ThrowIfInvalid(), Throws.ArgumentException.With.Message.Contains("ScoringOptions.batch_size"));
        });
    }

    [Test]
    public void Memory_estimate_counts_gradients_only_for_gradient_metrics()
    {
        var config = ScoringToyModels.Config();
        long parameters = ModelSurgery.Inference.Configuration.LlamaTensorLayout.CountParameters(config).Total;

        MemoryEstimate taylor = WholeModelScoring.Estimate(config, 2, 8, backward: true, parameterGradients: true, modelInMemory: false);
        MemoryEstimate skip = WholeModelScoring.Estimate(config, 2, 8, backward: false, parameterGradients: false, modelInMemory: true);

        Assert.Multiple(() =>
        {
            Assert.That(taylor.Weights, Is.EqualTo(parameters * 4));
            Assert.That(taylor.Gradients, Is.EqualTo(parameters * 4));
            Assert.That(skip.Weights + skip.Gradients, Is.Zero);
            Assert.That(skip.Activations, Is.LessThan(taylor.Activations));
        });
    }

    private static T[] Values<T>(params T[] values) => values;
}
