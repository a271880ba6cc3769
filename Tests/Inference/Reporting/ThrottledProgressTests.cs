using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Tests.Reporting;

/// <summary>Progress reaches the reader in order, at a readable rate, and never without its last report.</summary>
public sealed class ThrottledProgressTests
{
    [Test]
    public void A_stopped_clock_passes_the_first_each_whole_percent_and_the_last()
    {
        var clock = new ManualClock();
        var seen = new List<(string Stage, long Done)>();
        var throttle = new ThrottledProgress<(string Stage, long Done, long? Total)>(new Collect(seen), p => p, time: clock);

        for (long i = 0; i <= 1000; i++)
        {
            throttle.Report(("a", i, 1000));
        }

        // 1% of 1000 is 10: 0, 10, 20, ..., 1000; the end is not repeated.
        throttle.Report(("a", 1000, 1000));
        Assert.That(seen.Select(s => s.Done), Is.EqualTo(Enumerable.Range(0, 101).Select(i => i * 10L)));
    }

    [Test]
    public void Time_passing_lets_reports_through_and_late_ones_are_dropped()
    {
        var clock = new ManualClock();
        var seen = new List<(string Stage, long Done)>();
        var throttle = new ThrottledProgress<(string Stage, long Done, long? Total)>(new Collect(seen), p => p, TimeSpan.FromMilliseconds(100), clock);

        throttle.Report(("a", 1, null));
        throttle.Report(("a", 2, null)); // no total, no time passed: held back
        clock.Advance(TimeSpan.FromMilliseconds(100));
        throttle.Report(("a", 3, null));
        clock.Advance(TimeSpan.FromMilliseconds(100));
        throttle.Report(("a", 2, null)); // arrives late from another thread: dropped, never shown going backwards
        throttle.Report(("b", 0, 5)); // a new stage always shows
        throttle.Report(("b", 5, 5));
        Assert.That(seen, Is.EqualTo(new[] { ("a", 1L), ("a", 3L), ("b", 0L), ("b", 5L) }));
    }

    private sealed class Collect(List<(string, long)> seen) : IProgress<(string Stage, long Done, long? Total)>
    {
        public void Report((string Stage, long Done, long? Total) value) => seen.Add((value.Stage, value.Done));
    }

    private sealed class ManualClock : TimeProvider
    {
        private long _ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => _ticks;

        public void Advance(TimeSpan by) => _ticks += by.Ticks;
    }
}
