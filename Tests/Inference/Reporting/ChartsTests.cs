using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Tests.Reporting;

public sealed class ChartsTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("charts").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static void AssertPng(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        Assert.That(bytes.Take(8).ToArray(), Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }));
        Assert.That(bytes, Has.Length.GreaterThan(1000));
    }

    [Test]
    public void Lines_bars_and_heat_maps_are_written_as_png_without_temp_files()
    {
        string lines = Path.Combine(_dir, "loss.png");
        Charts.Lines(lines, "Loss", "step", "loss", [new LineSeries("train", [1, 2, 3], [3, 2, 1.5]), new LineSeries("val", [1, 3], [3.1, 1.7])], logY: true);
        string bars = Path.Combine(_dir, "bars.png");
        Charts.Bars(bars, "Accuracy", "acc", ["teacher", "student"], [0.6, 0.5], [0.01, 0.02]);
        string heat = Path.Combine(_dir, "heat.png");
        Charts.HeatMap(heat, "Head importance", "head", "layer", new double[,] { { 1, 2 }, { 3, 4 } });

        AssertPng(lines);
        AssertPng(bars);
        AssertPng(heat);
        Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(3));
    }

    [Test]
    public void Bars_can_start_from_a_baseline_below_every_bar()
    {
        string zoomed = Path.Combine(_dir, "zoomed.png");
        Charts.Bars(zoomed, "Bits per byte", "bpb", ["a", "b"], [2.388, 2.392], [0.002, 0.001], baseline: 2.38);
        AssertPng(zoomed);
        Assert.That(() => Charts.Bars(Path.Combine(_dir, "bad.png"), "t", "y", ["a", "b"], [2.388, 2.392], [0.002, 0.001], baseline: 2.387),
            Throws.ArgumentException.With.Message.Contains("baseline"));
        Assert.That(() => Charts.Bars(Path.Combine(_dir, "bad.png"), "t", "y", ["a"], [1.0], baseline: double.NaN), Throws.ArgumentException);
        Assert.That(File.Exists(Path.Combine(_dir, "bad.png")), Is.False);
    }

    [Test]
    public void Mismatched_series_lengths_are_rejected_with_the_series_name()
    {
        var ex = Assert.Throws<ArgumentException>(() =>
            Charts.Lines(Path.Combine(_dir, "x.png"), "t", "x", "y", [new LineSeries("broken", [1, 2], [1])]));
        Assert.That(ex!.Message, Does.Contain("broken"));
        Assert.That(Directory.GetFiles(_dir), Is.Empty);
    }
}
