using ModelSurgery.Inference.Reporting;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Surgery.Scoring.Reports;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training;
using ScottPlot;
using ScottPlot.Plottables;

namespace ModelSurgery.Tests.Reporting;

/// <summary>What the charts show, checked on the plot before it is rendered.</summary>
public sealed class ChartContentTests
{
    private static Bar[] BarsOf(Plot plot) => [.. plot.GetPlottables<BarPlot>().Single().Bars];

    [Test]
    public void Close_bars_carry_their_values_and_an_axis_that_starts_below_the_lowest_and_says_so()
    {
        double[] values = [2.374, 2.405];
        double? baseline = Charts.BaselineFor(values);
        Plot plot = Charts.BarsPlot("brown bits_per_byte", "bits_per_byte", ["teacher", "student"], values, baseline: baseline);

        Bar[] bars = BarsOf(plot);
        Assert.That(bars.Select(b => b.Label), Is.EqualTo(new[] { "2.374", "2.405" }));
        Assert.That(baseline, Is.Not.Null.And.LessThan(2.374).And.GreaterThan(2.374 / 2));
        Assert.That(bars.Select(b => b.ValueBase), Has.All.EqualTo(baseline!.Value));

        // The difference is visible: the taller bar is drawn at least 1.5 times as tall as the shorter one.
        Assert.That((bars[1].Value - bars[1].ValueBase) / (bars[0].Value - bars[0].ValueBase), Is.GreaterThan(1.5));
        Assert.That(plot.Axes.Left.Label.Text, Does.Contain("axis starts at").And.Contain("not 0"));
    }

    [Test]
    public void Values_far_apart_keep_a_zero_based_axis()
    {
        Assert.That(Charts.BaselineFor([0.2, 0.9]), Is.Null);
        Plot plot = Charts.BarsPlot("acc", "acc", ["a", "b"], [0.2, 0.9], [0.01, 0.02]);
        Assert.That(BarsOf(plot).Select(b => b.ValueBase), Has.All.EqualTo(0));
        Assert.That(BarsOf(plot).Select(b => b.Label), Is.EqualTo(new[] { "0.200", "0.900" }));
        Assert.That(plot.Axes.Left.Label.Text, Is.EqualTo("acc"));
    }

    [Test]
    public void Perplexities_spanning_orders_of_magnitude_are_drawn_on_a_log_axis()
    {
        double[] perplexities = [180, 8400];
        Assert.That(Charts.NeedsLogAxis(perplexities), Is.True);
        Assert.That(Charts.NeedsLogAxis([2.374, 2.405]), Is.False);

        Plot plot = Charts.BarsPlot("token_perplexity", "token_perplexity", ["teacher", "random"], perplexities, logY: true);
        Bar[] bars = BarsOf(plot);
        Assert.That(bars.Select(b => b.Value), Is.EqualTo(perplexities.Select(Math.Log10)).Within(1e-12));
        Assert.That(bars.Select(b => b.Label), Is.EqualTo(new[] { "180", "8,400" }));
        Assert.That(plot.Axes.Left.Label.Text, Does.Contain("log scale"));
        var ticks = (ScottPlot.TickGenerators.NumericAutomatic)plot.Axes.Left.TickGenerator;
        Assert.That(ticks.LabelFormatter(3), Is.EqualTo("1E+03").Or.EqualTo("1000"));
    }

    [Test]
    public void Layer_curves_label_whole_layers_only()
    {
        var scores = new ImportanceScores { Metric = "l2", Layers = [0.5, 1.0, 0.25, 0.75] };
        Plot plot = scores.LayerCurves();
        var ticks = plot.Axes.Bottom.TickGenerator as ScottPlot.TickGenerators.NumericAutomatic;
        Assert.That(ticks, Is.Not.Null);
        Assert.That(ticks!.IntegerTicksOnly, Is.True);
        Assert.That(plot.GetPlottables<Scatter>().Single().LegendText, Is.EqualTo("layer score"));
    }

    [Test]
    public void The_coverage_chart_marks_the_chosen_cut_off()
    {
        var statistics = new VocabularyStatistics { TotalTokens = 100, Counts = [50, 20, 15, 10, 5, 0] };
        Plot plot = statistics.CoverageChart(keptTokens: 3);
        VerticalLine marker = plot.GetPlottables<VerticalLine>().Single();
        Assert.That(marker.X, Is.EqualTo(3));
        Assert.That(marker.LabelText, Does.Contain("kept 3 tokens").And.Contain("85.0 %"));
        Assert.That(statistics.CoverageChart().GetPlottables<VerticalLine>(), Is.Empty);
    }
}
