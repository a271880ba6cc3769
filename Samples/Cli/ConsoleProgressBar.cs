using System.Diagnostics;
using System.Globalization;

namespace ModelSurgery.Cli;

/// <summary>
/// Draws a single progress line (bar, count, rate, ETA and a status text) on standard error. When the output is
/// redirected it prints a plain line at most every few seconds instead of redrawing.
/// </summary>
public sealed class ConsoleProgressBar : IDisposable
{
    private readonly TextWriter _writer;
    private readonly string _label;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly bool _interactive = !Console.IsErrorRedirected;
    private readonly Lock _gate = new();
    private TimeSpan _lastDraw = TimeSpan.FromDays(-1);
    private bool _drewAny;
    private bool _disposed;

    /// <summary>Creates a progress line with a label.</summary>
    public ConsoleProgressBar(TextWriter writer, string label)
    {
        _writer = writer;
        _label = label;
    }

    /// <summary>Reports <paramref name="done"/> of <paramref name="total"/> units, with an optional status text.</summary>
    public void Report(double done, double total, string? status = null)
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            TimeSpan now = _clock.Elapsed;
            bool finished = total > 0 && done >= total;
            TimeSpan interval = _interactive ? TimeSpan.FromMilliseconds(100) : TimeSpan.FromSeconds(5);
            if (!finished && now - _lastDraw < interval)
            {
                return;
            }

            _lastDraw = now;
            string line;
            if (total <= 0)
            {
                // No known total (documents streamed from a corpus, a recipe step): a count, never a 0% bar or an ETA.
                line = string.Create(CultureInfo.InvariantCulture, $"{_label} {done:N0} elapsed {FormatTime(now)} {status}");
                Draw(line);
                return;
            }

            double fraction = Math.Clamp(done / total, 0, 1);
            const int width = 24;
            int filled = (int)Math.Round(fraction * width);
            string bar = new string('#', filled) + new string('-', width - filled);
            double rate = now.TotalSeconds > 0 ? done / now.TotalSeconds : 0;
            string eta = rate > 0 && total > done ? FormatTime(TimeSpan.FromSeconds((total - done) / rate)) : "--:--";
            line = string.Create(CultureInfo.InvariantCulture, $"{_label} [{bar}] {fraction * 100,5:F1}% {done:N0}/{total:N0} elapsed {FormatTime(now)} eta {eta} {status}");
            Draw(line);
        }
    }

    private void Draw(string line)
    {
        if (_interactive)
        {
            _writer.Write("\r" + line.PadRight(Math.Min(Console.WindowWidth > 0 ? Console.WindowWidth - 1 : 120, 160)));
        }
        else
        {
            _writer.WriteLine(line);
        }

        _drewAny = true;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        lock (_gate)
        {
            if (_interactive && _drewAny && !_disposed)
            {
                _writer.WriteLine();
            }

            _disposed = true;
        }
    }

    private static string FormatTime(TimeSpan t) =>
        t.TotalHours >= 1 ? t.ToString(@"h\:mm\:ss", CultureInfo.InvariantCulture) : t.ToString(@"mm\:ss", CultureInfo.InvariantCulture);
}
