using ModelSurgery.Surgery.Scoring;

// Expected values read best as inline literal arrays in assertions.
#pragma warning disable CA1861

namespace ModelSurgery.Tests.Planning;

public sealed class ImportanceScoresTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("scores").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static ImportanceScores Awkward() => new()
    {
        Metric = "taylor, \"first\" order",
        Source = "toy model\nline two",
        Layers = [0.5, -1.25, 1.0 / 3],
        Heads = ScoreMatrix.FromRows([[1, 2], [3, 4], [5, 1e-300]]),
        Neurons = ScoreMatrix.FromRows([[0.1, 0.2, 0.3], [0, -0.0, double.MaxValue], [7, 8, 9]]),
        HiddenChannels = [Math.PI, Math.E],
        Tokens = [double.NaN, 1, 2],
    };

    [Test]
    public void Json_round_trip_is_exact_and_uses_stable_field_names()
    {
        ImportanceScores scores = Awkward();
        string path = Path.Combine(_dir, "scores.json");
        scores.Save(path);
        ImportanceScores back = ImportanceScores.Load(path);

        Assert.That(back, Is.EqualTo(scores));
        string text = File.ReadAllText(path);
        foreach (string key in new[] { "format_version", "metric", "source", "layers", "heads", "neurons", "hidden_channels", "tokens" })
        {
            Assert.That(text, Does.Contain($"\"{key}\":"), key);
        }

        Assert.That(text, Does.Not.Contain("kv_groups"), "absent components are omitted");
        string nl = Environment.NewLine;
        Assert.That(text, Does.Contain($"\"heads\": [{nl}    [1,2],{nl}    [3,4],{nl}    [5,1E-300]{nl}  ],"), "matrix rows are written one per line");
        Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1), "no temp file is left behind");
    }

    [Test]
    public void Csv_round_trip_is_exact()
    {
        ImportanceScores scores = Awkward() with { KvGroups = ScoreMatrix.FromRows([[1], [2], [3]]) };
        string path = Path.Combine(_dir, "scores.csv");
        scores.SaveCsv(path);
        ImportanceScores back = ImportanceScores.LoadCsv(path);

        Assert.That(back, Is.EqualTo(scores));
        Assert.That(File.ReadAllLines(path)[2], Is.EqualTo("component,layer,index,score"));
        Assert.That(File.ReadAllLines(path), Does.Contain("head,2,1,1E-300"));
    }

    [Test]
    public void Incomplete_csv_is_rejected_with_the_file_and_cell()
    {
        string csv = "# metric: \"m\"\ncomponent,layer,index,score\nhead,0,0,1\nhead,0,1,2\nhead,1,0,3\n";
        var ex = Assert.Throws<InvalidDataException>(() => ImportanceScores.FromCsv(csv, "x.csv"));
        Assert.That(ex!.Message, Does.Contain("x.csv").And.Contain("head layer 1 index 1 is missing"));

        var bad = Assert.Throws<InvalidDataException>(() => ImportanceScores.FromCsv("# metric: \"m\"\ncomponent,layer,index,score\nhead,0,zero,1\n", "y.csv"));
        Assert.That(bad!.Message, Does.Contain("y.csv:3").And.Contain("index 'zero'"));
    }

    [Test]
    public void Matrices_covering_different_layer_counts_are_rejected()
    {
        string json = """{"format_version":1,"metric":"m","layers":[1,2],"heads":[[1],[2],[3]]}""";
        var ex = Assert.Throws<InvalidDataException>(() => ImportanceScores.FromJson(json, "s.json"));
        Assert.That(ex!.Message, Does.Contain("s.json").And.Contain("heads covers 3 layers but layers covers 2"));
    }

    [Test]
    public void Shape_errors_name_the_component_and_the_config_key()
    {
        var config = PlanningFixtures.Toy();
        ImportanceScores scores = PlanningFixtures.Scores(config) with { Neurons = ScoreMatrix.Create(4, 47, (_, _) => 0) };
        IReadOnlyList<string> errors = scores.ShapeErrors(config);
        Assert.That(errors, Has.Count.EqualTo(1));
        Assert.That(errors[0], Does.StartWith("neurons: 47 columns, expected 48 (intermediate_size)"));
        Assert.That(PlanningFixtures.Scores(config).ShapeErrors(config), Is.Empty);
    }

    [Test]
    public void Spearman_is_one_for_the_same_order_and_minus_one_for_the_reverse()
    {
        Assert.That(ImportanceScores.SpearmanCorrelation([1, 2, 3, 4], [10, 20, 30, 1000]), Is.EqualTo(1).Within(1e-12));
        Assert.That(ImportanceScores.SpearmanCorrelation([1, 2, 3, 4], [4, 3, 2, -7]), Is.EqualTo(-1).Within(1e-12));
    }

    [Test]
    public void Spearman_averages_tied_ranks()
    {
        // Hand computation: ranks of a are [1, 2.5, 2.5, 4], of b [1, 2, 3, 4]; centred they are [-1.5, 0, 0, 1.5] and
        // [-1.5, -0.5, 0.5, 1.5], so rho = 4.5 / sqrt(4.5 * 5) = 0.948683...
        double rho = ImportanceScores.SpearmanCorrelation([1, 2, 2, 3], [1, 2, 3, 4]);
        Assert.That(rho, Is.EqualTo(4.5 / Math.Sqrt(4.5 * 5)).Within(1e-12));
        Assert.That(ImportanceScores.SpearmanCorrelation([5, 5, 5], [1, 2, 3]), Is.NaN, "a constant vector has no rank correlation");
    }

    [Test]
    public void Spearman_on_matrices_uses_all_cells_and_checks_shapes()
    {
        var a = ScoreMatrix.FromRows([[1, 2], [3, 4]]);
        var b = ScoreMatrix.FromRows([[4, 3], [2, 1]]);
        Assert.That(ImportanceScores.SpearmanCorrelation(a, b), Is.EqualTo(-1).Within(1e-12));
        var ex = Assert.Throws<ArgumentException>(() => ImportanceScores.SpearmanCorrelation(a, ScoreMatrix.FromRows([[1, 2, 3, 4]])));
        Assert.That(ex!.Message, Does.Contain("[2, 2] vs [1, 4]"));
        Assert.Throws<ArgumentException>(() => ImportanceScores.SpearmanCorrelation([1, 2], [1, 2, 3]));
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
