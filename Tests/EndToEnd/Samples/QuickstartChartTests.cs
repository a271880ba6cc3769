using ModelSurgery.Quickstart;
using ModelSurgery.Training;
using ScottPlot;
using ScottPlot.Plottables;

namespace ModelSurgery.Tests.Samples;

/// <summary>The quickstart's charts compare like with like, checked on the plot before it is rendered.</summary>
public sealed class QuickstartChartTests
{
    [Test]
    public void Quickstart_loss_curves_compare_cross_entropy_with_cross_entropy_and_chart_the_objective_apart()
    {
        StepRecord[] teacher = [new(1, 5.0, 1e-3, 1, false), new(2, 4.0, 1e-3, 1, false)];
        StepRecord[] random = [new(1, 6.0, 1e-3, 1, false), new(2, 5.5, 1e-3, 1, false)];
        StepRecord[] inherited = [new(1, 2.0, 1e-3, 1, false), new(2, 1.8, 1e-3, 1, false)];

        Plot crossEntropy = QuickstartPipeline.LossCurves(teacher, random, teacherTokensPerStep: 100, studentTokensPerStep: 50);
        Assert.That(crossEntropy.GetPlottables<Scatter>().Select(s => s.LegendText), Is.EqualTo(new[] { "teacher", "random student" }));
        Assert.That(crossEntropy.Axes.Left.Label.Text, Does.Contain("cross-entropy"));
        Assert.That(crossEntropy.GetPlottables<Scatter>().First().Data.GetScatterPoints().Select(p => p.X), Is.EqualTo(new[] { 100.0, 200.0 }));

        Plot objective = QuickstartPipeline.ObjectiveCurve(inherited, studentTokensPerStep: 50);
        Assert.That(objective.GetPlottables<Scatter>().Single().LegendText, Does.Contain("distillation objective"));
        Assert.That(objective.Axes.Left.Label.Text, Does.Contain("KL"));
    }
}
