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
}
