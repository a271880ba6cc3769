using System.Globalization;
using System.Text.Json;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Surgery.Scoring.Reports;
using ModelSurgery.Tests.Planning;

namespace ModelSurgery.Tests.Scoring;

/// <summary>Score reports: CSV, rank agreement between metrics and charts, all apart from the scores themselves.</summary>
public sealed class ScoreReportTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("score-reports").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void Csv_holds_every_score_exactly_under_a_header_and_quoted_metric_and_source()
    {
        var scores = new ImportanceScores
        {
            Metric = "taylor, \"first\" order",
            Source = "toy model\nline two",
            Layers = [0.5, -1.25, 1.0 / 3],
            Heads = ScoreMatrix.FromRows([[1, 2], [3, 4], [5, 1e-300]]),
            KvGroups = ScoreMatrix.FromRows([[1], [2], [3]]),
            Neurons = ScoreMatrix.FromRows([[0.1, 0.2, 0.3], [0, -0.0, double.MaxValue], [7, 8, 9]]),
            HiddenChannels = [Math.PI, Math.E],
            Tokens = [double.NaN, 1, 2],
        };
        string path = Path.Combine(_dir, "scores.csv");

        scores.SaveCsv(path);

        string[] lines = File.ReadAllLines(path);
        Assert.That(lines[..3], Is.EqualTo(new[] { "# metric: \"taylor, \\u0022first\\u0022 order\"", "# source: \"toy model\\nline two\"", "component,layer,index,score" }));
        Assert.That(JsonSerializer.Deserialize<string>(lines[0]["# metric: ".Length..]), Is.EqualTo(scores.Metric));
        Assert.That(JsonSerializer.Deserialize<string>(lines[1]["# source: ".Length..]), Is.EqualTo(scores.Source));
        var cells = lines[3..].Select(line => line.Split(',')).ToLookup(f => f[0], f => (Layer: f[1], Index: f[2], Score: double.Parse(f[3], CultureInfo.InvariantCulture)));
        Assert.Multiple(() =>
        {
            Assert.That(cells["layer"].Select(c => (c.Layer, c.Index)), Is.EqualTo(new[] { ("0", ""), ("1", ""), ("2", "") }));
            Assert.That(cells["layer"].Select(c => c.Score), Is.EqualTo(scores.Layers));
            Assert.That(cells["head"].Select(c => c.Score), Is.EqualTo(scores.Heads.Values), "rows of a matrix in row-major order");
            Assert.That(cells["head"].Last(), Is.EqualTo(("2", "1", 1e-300)));
            Assert.That(cells["kv_group"].Select(c => c.Score), Is.EqualTo(scores.KvGroups.Values));
            Assert.That(cells["neuron"].Select(c => c.Score), Is.EqualTo(scores.Neurons.Values));
            Assert.That(cells["hidden_channel"].Select(c => (c.Layer, c.Index, c.Score)), Is.EqualTo(new[] { ("", "0", Math.PI), ("", "1", Math.E) }));
            Assert.That(cells["token"].Select(c => c.Score), Is.EqualTo(scores.Tokens));
            Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1), "no temp file is left behind");
        });
    }

    [Test]
    public void Spearman_is_one_for_the_same_order_and_minus_one_for_the_reverse()
    {
        Assert.That(RankAgreement.Spearman([1, 2, 3, 4], [10, 20, 30, 1000]), Is.EqualTo(1).Within(1e-12));
        Assert.That(RankAgreement.Spearman([1, 2, 3, 4], [4, 3, 2, -7]), Is.EqualTo(-1).Within(1e-12));
    }

    [Test]
    public void Spearman_averages_tied_ranks()
    {
        // Hand computation: ranks of a are [1, 2.5, 2.5, 4], of b [1, 2, 3, 4]; centred they are [-1.5, 0, 0, 1.5] and
        // [-1.5, -0.5, 0.5, 1.5], so rho = 4.5 / sqrt(4.5 * 5) = 0.948683...
        double rho = RankAgreement.Spearman([1, 2, 2, 3], [1, 2, 3, 4]);
        Assert.That(rho, Is.EqualTo(4.5 / Math.Sqrt(4.5 * 5)).Within(1e-12));

        // A three-way tie: ranks [1, 3, 3, 3, 5], centred [-2, 0, 0, 0, 2] against [-2, -1, 0, 1, 2]: rho = 8 / sqrt(8 * 10).
        Assert.That(RankAgreement.Spearman([1, 2, 2, 2, 3], [1, 2, 3, 4, 5]), Is.EqualTo(8 / Math.Sqrt(80)).Within(1e-12));

        // -0 ties with 0: ranks [1.5, 1.5, 3], centred [-0.5, -0.5, 1] against [-1, 0, 1]: rho = 1.5 / sqrt(1.5 * 2).
        Assert.That(RankAgreement.Spearman([-0.0, 0.0, 1], [1, 2, 3]), Is.EqualTo(1.5 / Math.Sqrt(3)).Within(1e-12));
        Assert.That(RankAgreement.Spearman([5, 5, 5], [1, 2, 3]), Is.NaN, "a constant vector has no rank correlation");
        Assert.That(RankAgreement.Spearman([1, 2, 3], [5, 5, 5]), Is.NaN, "a constant vector has no rank correlation");
    }

    [Test]
    public void Spearman_refuses_nan_short_and_mismatched_inputs()
    {
        Assert.Multiple(() =>
        {
            Assert.That(() => RankAgreement.Spearman([1, double.NaN, 3], [1, 2, 3]), Throws.ArgumentException.With.Message.Contains("a[1] is NaN"));
            Assert.That(() => RankAgreement.Spearman([1, 2, 3], [1, 2, double.NaN]), Throws.ArgumentException.With.Message.Contains("b[2] is NaN"));
            Assert.That(() => RankAgreement.Spearman([1], [1]), Throws.ArgumentException.With.Message.Contains("at least two values"));
            Assert.That(() => RankAgreement.Spearman([1, 2], [1, 2, 3]), Throws.ArgumentException.With.Message.Contains("2 vs 3"));
        });
    }

    [Test]
    public void Spearman_on_matrices_uses_all_cells_and_checks_shapes()
    {
        var a = ScoreMatrix.FromRows([[1, 2], [3, 4]]);
        var b = ScoreMatrix.FromRows([[4, 3], [2, 1]]);
        Assert.That(RankAgreement.Spearman(a, b), Is.EqualTo(-1).Within(1e-12));
        var ex = Assert.Throws<ArgumentException>(() => RankAgreement.Spearman(a, ScoreMatrix.FromRows([[1, 2, 3, 4]])));
        Assert.That(ex!.Message, Does.Contain("[2, 2] vs [1, 4]"));
    }

    [Test]
    public void Heat_map_and_layer_curves_are_drawn_as_png()
    {
        ImportanceScores scores = PlanningFixtures.Scores(PlanningFixtures.Toy());
        string heat = Path.Combine(_dir, "heads.png");
        string curves = Path.Combine(_dir, "layers.png");
        scores.DrawHeadHeatMap(heat);
        scores.DrawLayerCurves(curves);
        Assert.That(File.ReadAllBytes(heat).Take(4).ToArray(), Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47 }));
        Assert.That(File.ReadAllBytes(curves).Take(4).ToArray(), Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47 }));
        Assert.Throws<InvalidOperationException>(() => (scores with { Heads = null }).DrawHeadHeatMap(heat));
    }
}
