namespace ModelSurgery.Inference.Reporting;

/// <summary>
/// Passes progress reports on at a rate people can read: the first report of each stage, then one whenever
/// <see cref="Interval"/> has passed or the count has moved by at least 1% of the total, and always the stage's last
/// (count reaching the total). Reports that go backwards within a stage (late ones from another thread) are dropped,
/// so the receiver sees each stage's counts in order.
/// </summary>
/// <typeparam name="T">The progress record.</typeparam>
public sealed class ThrottledProgress<T> : IProgress<T>
{
    /// <summary>The default least time between two forwarded reports of a stage.</summary>
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromMilliseconds(100);

    private readonly IProgress<T> _target;
    private readonly Func<T, (string Stage, long Completed, long? Total)> _position;
    private readonly TimeProvider _time;
    private readonly Lock _gate = new();
    private string? _stage;
    private long _completed;
    private long _lastTimestamp;
    private bool _finished;

    /// <summary>Creates a throttle in front of <paramref name="target"/>.</summary>
    /// <param name="target">Receives the reports that pass.</param>
    /// <param name="position">Reads a report's stage, count and total (null when unknown).</param>
    /// <param name="interval">Least time between reports; <see cref="DefaultInterval"/> when null.</param>
    /// <param name="time">The clock (tests pass a manual one); the system clock when null.</param>
    public ThrottledProgress(IProgress<T> target, Func<T, (string Stage, long Completed, long? Total)> position, TimeSpan? interval = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(position);
        _target = target;
        _position = position;
        Interval = interval ?? DefaultInterval;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>The least time between two forwarded reports of one stage (the first, 1% steps and the last pass regardless).</summary>
    public TimeSpan Interval { get; }

    /// <inheritdoc />
    public void Report(T value)
    {
        (string stage, long completed, long? total) = _position(value);
        lock (_gate)
        {
            long now = _time.GetTimestamp();
            bool finished = total is { } t && completed >= t;
            bool pass;
            if (stage != _stage)
            {
                pass = true;
            }
            else if (completed < _completed || (_finished && completed == _completed))
            {
                // Out of order, or the stage's end reported twice.
                pass = false;
            }
            else
            {
                bool onePercent = total is > 0 && (completed - _completed) * 100 >= total.Value;
                pass = finished || onePercent || _time.GetElapsedTime(_lastTimestamp, now) >= Interval;
            }

            if (!pass)
            {
                return;
            }

            _stage = stage;
            _completed = completed;
            _finished = finished;
            _lastTimestamp = now;
            // Forwarded under the lock, so two threads cannot pass reports to the target out of order.
            _target.Report(value);
        }
    }
}
