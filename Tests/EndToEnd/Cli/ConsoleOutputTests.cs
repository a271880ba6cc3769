using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using ModelSurgery.Cli;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training.Data;
using ModelSurgery.Training;
using Spectre.Console.Testing;

namespace ModelSurgery.Tests.Cli;

/// <summary>
/// What the command line prints while it works: log lines a person can read, kept whole and above the progress bars,
/// and progress with honest totals in units people read.
/// </summary>
public sealed partial class ConsoleOutputTests
{
    [Test]
    public void Log_lines_carry_time_level_category_and_message_but_no_event_id()
    {
        var writer = new StringWriter();
        ILogger logger = new CliLoggerProvider(new ConsoleUi(writer)).CreateLogger("run");
        logger.Log(LogLevel.Warning, new EventId(1186878405, "Started"), "step\ndone", null, (state, _) => state);
        string line = writer.ToString();
        Assert.That(LogLine().IsMatch(line), Is.True, line);
        Assert.That(line, Does.EndWith("warn: run: step done" + Environment.NewLine).And.Not.Contain("1186878405"));
    }

    [Test]
    public void A_bar_without_a_known_total_shows_a_count_not_a_percentage_or_an_eta()
    {
        var writer = new StringWriter();
        using (ProgressBar bar = new ConsoleUi(writer, time: new ManualClock()).StartBar("tokenize", ProgressUnit.Documents))
        {
            bar.Report(new TokenizeProgress(256, 1_000, "in/a.txt"));
            // A total of 0 is not a total (the library never sends one, but the bar does not trust it).
            bar.Report(new Counted(300, 0, ProgressUnit.Documents, "b.txt"));
        }

        string[] lines = Lines(writer);
        Assert.That(lines, Is.EqualTo(new[] { "tokenize 256 documents elapsed 00:00 1,000 tokens, a.txt", "tokenize 300 documents elapsed 00:00 b.txt" }));
    }

    [Test]
    public void A_bar_with_a_total_shows_the_share_the_count_in_its_unit_and_an_eta()
    {
        var writer = new StringWriter();
        var clock = new ManualClock();
        var ui = new ConsoleUi(writer, time: clock);
        using (ProgressBar bar = ui.StartBar("build", ProgressUnit.Steps))
        {
            bar.Report(new Counted(0, 10_000, ProgressUnit.Steps, "tensors"));
            clock.Advance(TimeSpan.FromSeconds(2));
            bar.Report(new Counted(2_500, 10_000, ProgressUnit.Steps, "tensors"));
        }

        using (ProgressBar bytes = ui.StartBar("write", ProgressUnit.Bytes))
        {
            bytes.Report(new SyntheticCheckpointProgress(3, 10, 12_345_678, 45_600_000));
        }

        string[] lines = Lines(writer);
        // No rate before a second report: no guess.
        Assert.That(lines[0], Is.EqualTo("build [------------------------]   0.0% 0/10,000 steps elapsed 00:00 eta --:-- tensors"));
        // 2,500 steps in 2 s: 7,500 more take 6 s.
        Assert.That(lines[1], Is.EqualTo("build [######------------------]  25.0% 2,500/10,000 steps elapsed 00:02 eta 00:06 tensors"));
        Assert.That(lines[2], Is.EqualTo("write [######------------------]  27.1% 12.3/45.6 MB elapsed 00:00 eta --:-- 3/10 tensors"));
    }

    [Test]
    public void The_eta_counts_only_work_done_since_the_first_report_so_a_resumed_run_does_not_look_fast()
    {
        var writer = new StringWriter();
        var clock = new ManualClock();
        var ui = new ConsoleUi(writer, plainInterval: TimeSpan.Zero, time: clock);
        using (ProgressBar bar = ui.StartBar("train", ProgressUnit.Steps))
        {
            // Resumed at step 4,999 of 10,000; the first step of this run took 1 s, the next 1,000 another second.
            clock.Advance(TimeSpan.FromSeconds(1));
            bar.Report(new TrainingProgress(5_000, 10_000, 2.5, 3e-4, 1.0, 4096, TimeSpan.Zero, false, null));
            clock.Advance(TimeSpan.FromSeconds(1));
            bar.Report(new TrainingProgress(6_000, 10_000, 2.25, 3e-4, 1.0, 4096, TimeSpan.Zero, false, 2.5));
        }

        string[] lines = Lines(writer);
        // 1,000 steps per second since the first report: 4,000 left take 4 s (not 6,000 steps in 2 s, which says 1 s).
        Assert.That(lines[^1], Does.Contain(" 6,000/10,000 steps elapsed 00:02 eta 00:04 loss 2.2500 lr 3.00E-004 4096 tokens/s val 2.5000"), string.Join('\n', lines));
        Assert.That(ProgressEta.Remaining(1_000, TimeSpan.FromSeconds(1), 4_000), Is.EqualTo(TimeSpan.FromSeconds(4)));
    }

    [Test]
    public void Redirected_progress_prints_a_line_per_interval_not_per_step_and_log_lines_stay_whole()
    {
        var writer = new StringWriter();
        var clock = new ManualClock();
        var ui = new ConsoleUi(writer, plainInterval: TimeSpan.FromSeconds(5), time: clock);
        ILogger logger = new CliLoggerProvider(ui).CreateLogger("train");
        using (ProgressBar bar = ui.StartBar("train", ProgressUnit.Steps))
        {
            for (int step = 1; step <= 10_000; step++)
            {
                // One second per thousand steps: 10 s in all, so two interval lines besides the first and the last.
                clock.Advance(TimeSpan.FromMilliseconds(1));
                bar.Report(new Counted(step, 10_000, ProgressUnit.Steps, null));
                if (step == 5_500)
                {
                    CheckpointSaved(logger, step);
                }
            }
        }

        string[] lines = Lines(writer);
        Assert.That(lines, Has.Length.EqualTo(4), string.Join('\n', lines));
        Assert.Multiple(() =>
        {
            Assert.That(lines[0], Does.Contain(" 1/10,000 steps "));
            // The first line came at 1 ms, so the next is due at 5.001 s.
            Assert.That(lines[1], Does.Contain(" 5,001/10,000 steps elapsed 00:05 "));
            Assert.That(lines[2], Does.Match(@"^\d\d:\d\d:\d\d info: train: checkpoint saved at step 5500$"));
            Assert.That(lines[3], Does.Contain(" 100.0% 10,000/10,000 steps elapsed 00:10 eta 00:00"));
        });
    }

    [Test]
    public void On_a_terminal_a_log_line_during_live_bars_is_drawn_whole_above_them()
    {
        var console = new TestConsole().Interactive().EmitAnsiSequences().Width(160);
        var ui = new ConsoleUi(new StringWriter(), console);
        ILogger logger = new CliLoggerProvider(ui).CreateLogger("build");
        using (ProgressBar bar = ui.StartBar("build", ProgressUnit.Steps))
        {
            for (int step = 1; step <= 10_000; step++)
            {
                bar.Report(new Counted(step, 10_000, ProgressUnit.Steps, "tensors"));
                if (step == 4_000)
                {
                    // The bars are on screen when the line comes, so it has to be drawn above them, not after them.
                    ui.Refresh();
                    WroteShard(logger, 1, 2);
                }
            }
        }

        IReadOnlyList<string> screen = Terminal.Screen(console.Output);
        string text = string.Join('\n', screen);
        int logRow = screen.ToList().FindIndex(l => LiveLogLine().IsMatch(l));
        int barRow = screen.ToList().FindIndex(l => l.StartsWith("build ", StringComparison.Ordinal) && l.Contains("10,000/10,000 steps", StringComparison.Ordinal));
        Assert.That(logRow, Is.GreaterThanOrEqualTo(0), text);
        Assert.That(barRow, Is.GreaterThan(logRow), text);
        Assert.That(screen[barRow], Does.Contain("100.0% 10,000/10,000 steps elapsed ").And.Contain("eta 00:00 tensors"), text);
        // One ETA: the bar's own text, no second remaining-time column beside it.
        Assert.That(Regex.Count(screen[barRow], "eta", RegexOptions.IgnoreCase), Is.EqualTo(1), text);
    }

    [Test]
    public void On_a_terminal_an_unknown_total_is_a_counter_not_a_bar()
    {
        var console = new TestConsole().Interactive().EmitAnsiSequences().Width(160);
        var ui = new ConsoleUi(new StringWriter(), console);
        using (ProgressBar bar = ui.StartBar("count", ProgressUnit.Bytes))
        {
            bar.Report(new CountingProgress(12, 3_000_000, 700_000, 1.5));
            ui.Refresh();
        }

        IReadOnlyList<string> screen = Terminal.Screen(console.Output);
        string text = string.Join('\n', screen);
        string row = screen.Single(l => l.StartsWith("count ", StringComparison.Ordinal));
        Assert.That(row, Does.Contain("3.0 MB elapsed ").And.Contain("12 documents 700,000 tokens 1.5 MB/s"), text);
        Assert.That(row, Does.Not.Contain("%").And.Not.Contain("eta").And.Not.Contain(" of ").And.Not.Contain("━"), text);
    }

    private static string[] Lines(StringWriter writer) =>
        writer.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);

    [LoggerMessage(Level = LogLevel.Information, Message = "checkpoint saved at step {Step}")]
    private static partial void CheckpointSaved(ILogger logger, int step);

    [LoggerMessage(Level = LogLevel.Information, Message = "wrote shard {Shard} of {Shards}")]
    private static partial void WroteShard(ILogger logger, int shard, int shards);

    [GeneratedRegex(@"^\d\d:\d\d:\d\d warn: run: ")]
    private static partial Regex LogLine();

    [GeneratedRegex(@"^\d\d:\d\d:\d\d info: build: wrote shard 1 of 2$")]
    private static partial Regex LiveLogLine();

    /// <summary>A report with the counts a test chooses.</summary>
    private sealed record Counted(long Completed, long? Total, ProgressUnit Unit, string? Status) : IProgressReport;

    private sealed class ManualClock : TimeProvider
    {
        private long _ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => Interlocked.Read(ref _ticks);

        public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, by.Ticks);
    }

    /// <summary>
    /// What a terminal shows after receiving the text: the cursor moves the live display uses (carriage return, line
    /// feed, cursor up, erase line) are applied; colours and cursor visibility are ignored.
    /// </summary>
    private static class Terminal
    {
        public static IReadOnlyList<string> Screen(string output)
        {
            var lines = new List<StringBuilder> { new() };
            int row = 0;
            int column = 0;
            for (int i = 0; i < output.Length; i++)
            {
                char c = output[i];
                if (c == '\u001b' && i + 1 < output.Length && output[i + 1] == '[')
                {
                    int end = i + 2;
                    while (end < output.Length && !char.IsAsciiLetter(output[end]))
                    {
                        end++;
                    }

                    string argument = output[(i + 2)..end].TrimStart('?');
                    int n = int.TryParse(argument, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int parsed) ? parsed : 1;
                    switch (output[end])
                    {
                        case 'A':
                            row = Math.Max(0, row - n);
                            break;
                        case 'B':
                            row += n;
                            break;
                        case 'K':
                            // 2: the whole line; 0 or none: from the cursor to the end.
                            Line(lines, row).Length = argument == "2" ? 0 : Math.Min(column, Line(lines, row).Length);
                            break;
                        case 'G':
                            column = n - 1;
                            break;
                        default:
                            break;
                    }

                    i = end;
                    continue;
                }

                switch (c)
                {
                    case '\r':
                        column = 0;
                        break;
                    case '\n':
                        row++;
                        column = 0;
                        break;
                    default:
                        StringBuilder line = Line(lines, row);
                        if (line.Length < column)
                        {
                            line.Append(' ', column - line.Length);
                        }

                        if (column < line.Length)
                        {
                            line[column] = c;
                        }
                        else
                        {
                            line.Append(c);
                        }

                        column++;
                        break;
                }
            }

            return [.. lines.Select(l => l.ToString().TrimEnd())];
        }

        private static StringBuilder Line(List<StringBuilder> lines, int row)
        {
            while (lines.Count <= row)
            {
                lines.Add(new StringBuilder());
            }

            return lines[row];
        }
    }
}
