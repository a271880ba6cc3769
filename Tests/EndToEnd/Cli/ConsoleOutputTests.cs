using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ModelSurgery.Cli;

namespace ModelSurgery.Tests.Cli;

/// <summary>What the command line prints while it works: log lines a person can read and progress with honest totals.</summary>
public sealed partial class ConsoleOutputTests
{
    [Test]
    public void Log_lines_carry_time_level_category_and_message_but_no_event_id()
    {
        var writer = new StringWriter();
        var entry = new LogEntry<string>(LogLevel.Warning, "run", new EventId(1186878405, "Started"), "step\ndone", null, (state, _) => state);
        new ConsoleLogFormatter().Write(in entry, null, writer);
        string line = writer.ToString();
        Assert.That(LogLine().IsMatch(line), Is.True, line);
        Assert.That(line, Does.EndWith("warn: run: step done" + Environment.NewLine).And.Not.Contain("1186878405"));
    }

    [Test]
    public void A_bar_without_a_known_total_shows_a_count_not_a_percentage_or_an_eta()
    {
        var writer = new StringWriter();
        using (var bar = new ConsoleProgressBar(writer, "tokenize"))
        {
            bar.Report(256, 0, "documents");
        }

        string text = writer.ToString();
        Assert.That(text, Does.StartWith("tokenize 256 elapsed ").And.Contain("documents"));
        Assert.That(text, Does.Not.Contain("%").And.Not.Contain("eta").And.Not.Contain("/0"));
    }

    [Test]
    public void A_bar_with_a_total_shows_the_share_the_count_and_an_eta()
    {
        var writer = new StringWriter();
        using (var bar = new ConsoleProgressBar(writer, "build"))
        {
            bar.Report(2500, 10000, "tensors");
        }

        Assert.That(writer.ToString(), Does.Contain("build [").And.Contain(" 25.0% 2,500/10,000 ").And.Contain(" eta "));
    }

    [GeneratedRegex(@"^\d\d:\d\d:\d\d warn: run: ")]
    private static partial Regex LogLine();
}
