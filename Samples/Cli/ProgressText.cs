using System.Globalization;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Cli;

/// <summary>
/// The words and numbers of a progress line, the same on a live bar and in redirected output: a share and count in the
/// bar's unit (bytes as MB), elapsed time and one ETA format (<c>mm:ss</c>, or <c>h:mm:ss</c> past an hour).
/// </summary>
internal static class ProgressText
{
    /// <summary>
    /// <c>25.0% 2,500/10,000 steps elapsed 00:02 eta 00:06 status</c> with a total; <c>256 documents elapsed 00:02 status</c>
    /// without one (a count, never <c>n/0</c>, a percentage or an ETA). The ETA is the bar's <see cref="ProgressEta"/>
    /// estimate, <c>--:--</c> while there is no rate yet.
    /// </summary>
    public static string Summary(long done, long? total, ProgressUnit unit, TimeSpan elapsed, TimeSpan? eta, string? status)
    {
        string tail = string.IsNullOrEmpty(status) ? string.Empty : " " + status;
        if (total is not > 0)
        {
            return Invariant($"{Count(done, unit)} elapsed {Time(elapsed)}{tail}");
        }

        long all = total.Value;
        double fraction = Math.Clamp((double)done / all, 0, 1);
        string remaining = done >= all ? Time(TimeSpan.Zero) : eta is { } e ? Time(e) : "--:--";
        return Invariant($"{fraction * 100,5:F1}% {Count(done, all, unit)} elapsed {Time(elapsed)} eta {remaining}{tail}");
    }

    /// <summary>A text bar of <paramref name="width"/> characters for redirected output.</summary>
    public static string Bar(long done, long total, int width = 24)
    {
        int filled = (int)Math.Round(Math.Clamp((double)done / total, 0, 1) * width);
        return new string('#', filled) + new string('-', width - filled);
    }

    /// <summary>Elapsed time or ETA: <c>mm:ss</c>, or <c>h:mm:ss</c> from an hour on.</summary>
    public static string Time(TimeSpan t) => ProgressEta.Format(t);

    private static string Count(long done, ProgressUnit unit) =>
        unit == ProgressUnit.Bytes ? Invariant($"{Megabytes(done)} MB") : Invariant($"{done:N0} {Name(unit)}");

    private static string Count(long done, long total, ProgressUnit unit) =>
        unit == ProgressUnit.Bytes ? Invariant($"{Megabytes(done)}/{Megabytes(total)} MB") : Invariant($"{done:N0}/{total:N0} {Name(unit)}");

    private static string Megabytes(long bytes) => (bytes / 1e6).ToString("N1", CultureInfo.InvariantCulture);

    private static string Name(ProgressUnit unit) => unit switch
    {
        ProgressUnit.Steps => "steps",
        ProgressUnit.Tokens => "tokens",
        ProgressUnit.Documents => "documents",
        ProgressUnit.Examples => "examples",
        ProgressUnit.Tensors => "tensors",
        ProgressUnit.Windows => "windows",
        ProgressUnit.Requests => "requests",
        _ => unit.ToString().ToLowerInvariant(),
    };

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
