using System.Globalization;
using System.Text;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Tests.Support;

namespace ModelSurgery.Tests.Scoring;

/// <summary>The registry is the one list of metrics: names are unique, every plugin is in it, and the docs and the CLI list exactly it.</summary>
public sealed class ScoringMetricsTests
{
    [Test]
    public void Names_are_unique_and_each_resolves_to_its_metric()
    {
        IReadOnlyList<IImportanceMetric> all = ScoringMetrics.BuiltIn;
        Assert.Multiple(() =>
        {
            Assert.That(all.Select(m => m.Name), Is.Unique);
            Assert.That(all.Select(m => m.Name), Is.EqualTo(new[]
            {
                ScoringMetrics.L1, ScoringMetrics.L2, ScoringMetrics.Activation, ScoringMetrics.Wanda, ScoringMetrics.Taylor, ScoringMetrics.LearnedMask,
                ScoringMetrics.Random, ScoringMetrics.BlockInfluence, ScoringMetrics.AngularN, ScoringMetrics.SkipLoss, ScoringMetrics.PositionPrior, ScoringMetrics.Uniform,
            }));
            foreach (IImportanceMetric metric in all)
            {
                Assert.That(ScoringMetrics.Get(metric.Name), Is.SameAs(metric), metric.Name);
                Assert.That(all.Where(other => other.Accepts(metric.Name)), Is.EqualTo(new[] { metric }), $"only {metric.Name} accepts its name");
            }

            Assert.That(ScoringMetrics.Get("angular-7"), Is.SameAs(ScoringMetrics.Get(ScoringMetrics.AngularN)));
        });
    }

    [Test]
    public void Every_metric_plugin_in_the_library_is_registered_once()
    {
        Type[] plugins = [.. typeof(IImportanceMetric).Assembly.GetTypes().Where(t => typeof(IImportanceMetric).IsAssignableFrom(t) && t is { IsInterface: false, IsAbstract: false })];

        Assert.That(plugins, Has.Length.EqualTo(12));
        Assert.That(ScoringMetrics.BuiltIn.Select(m => m.GetType()), Is.EquivalentTo(plugins));
    }

    [Test]
    public void The_readme_metric_table_lists_exactly_the_registry()
    {
        string readme = File.ReadAllText(Path.Combine(DotnetCli.FindRepositoryRoot("ModelSurgery.sln"), "README.md")).ReplaceLineEndings("\n");
        string expected = MetricTable(ScoringMetrics.BuiltIn);

        Assert.That(readme, Does.Contain(expected), "README.md must hold this table (generated from ScoringMetrics.BuiltIn):\n" + expected);
    }

    /// <summary>The README's metric table as the registry describes it.</summary>
    internal static string MetricTable(IEnumerable<IImportanceMetric> metrics)
    {
        var table = new StringBuilder("| metric | reads | scores | computed in | what it measures |\n| --- | --- | --- | --- | --- |\n");
        foreach (IImportanceMetric m in metrics)
        {
            string pass = m switch
            {
                ILayerPassMetric => "the layer-by-layer pass",
                IWholeModelMetric => "the whole model in memory",
                _ => "no pass",
            };
            table.Append(CultureInfo.InvariantCulture, $"| `{m.Name}` | {Reads(m.Needs)} | {Units(m.Scores)} | {pass} | {m.Description.Replace("|", "\\|", StringComparison.Ordinal)} |\n");
        }

        return table.ToString();

        static string Reads(MetricNeeds needs) => needs == MetricNeeds.None
            ? "nothing"
            : string.Join(", ", Enum.GetValues<MetricNeeds>().Where(n => n != MetricNeeds.None && needs.HasFlag(n)).Select(n => n.ToString().ToLowerInvariant()));

        static string Units(ScoredUnits units) => string.Join(", ", new (ScoredUnits Unit, string Name)[]
        {
            (ScoredUnits.Layers, "layers"), (ScoredUnits.Heads, "heads"), (ScoredUnits.KvGroups, "KV groups"), (ScoredUnits.Neurons, "neurons"), (ScoredUnits.HiddenChannels, "hidden channels"),
        }.Where(u => units.HasFlag(u.Unit)).Select(u => u.Name));
    }
}
