using System.Text.RegularExpressions;
using ModelSurgery.Cli;
using ModelSurgery.Surgery.Scoring;

namespace ModelSurgery.Tests.Cli;

/// <summary>The command line lists the metric registry, so a registered metric is usable from it.</summary>
public sealed partial class ScoringMetricsHelpTests
{
    [Test]
    public async Task The_cli_help_lists_exactly_the_registry()
    {
        var output = new StringWriter();
        int code = await Program.RunAsync(["score", "--help"], output, new StringWriter());

        string help = Whitespace().Replace(output.ToString(), " ");
        Match listed = Regex.Match(help, "Metric\\(s\\) to compute: (?<names>[^;]*);");
        Assert.That(code, Is.Zero);
        Assert.That(listed.Success, Is.True, help);
        Assert.That(listed.Groups["names"].Value.Split(", "), Is.EqualTo(ScoringMetrics.All.Select(m => m.Name)));
    }

    [GeneratedRegex("\\s+")]
    private static partial Regex Whitespace();
}
