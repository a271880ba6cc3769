namespace ModelSurgery.Inference.Reporting;

/// <summary>
/// The one estimate of the time left that the library's logs and the command line's bars show: the rate since the
/// work (or its resumption) started, applied to what is left. Work done before a resume is not counted in the rate, so a
/// resumed run does not look faster than it is.
/// </summary>
public static class ProgressEta
{
    /// <summary>The time left, or null while there is no rate yet (nothing done since the start).</summary>
    /// <param name="doneSinceStart">Units done since the clock started.</param>
    /// <param name="elapsed">Time since the clock started.</param>
    /// <param name="remaining">Units still to do.</param>
    /// <returns>The estimate; zero when nothing remains.</returns>
    public static TimeSpan? Remaining(long doneSinceStart, TimeSpan elapsed, long remaining)
    {
        if (remaining <= 0)
        {
            return TimeSpan.Zero;
        }

        if (doneSinceStart <= 0 || elapsed <= TimeSpan.Zero)
        {
            return null;
        }

        return TimeSpan.FromSeconds(elapsed.TotalSeconds / doneSinceStart * remaining);
    }

    /// <summary>A time span as the tool and the logs print it: <c>mm:ss</c>, or <c>h:mm:ss</c> from an hour on.</summary>
    /// <param name="time">The span.</param>
    /// <returns>The text.</returns>
    public static string Format(TimeSpan time) =>
        time.ToString(time.TotalHours >= 1 ? @"h\:mm\:ss" : @"mm\:ss", System.Globalization.CultureInfo.InvariantCulture);
}
