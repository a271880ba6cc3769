using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace ModelSurgery.Inference.Runtime;

/// <summary>
/// The fork and join of the decoding kernels' parallel regions: a few background threads that spin briefly between
/// regions and then sleep, and take ranges of a region from a shared counter alongside the calling thread.
/// </summary>
/// <remarks>
/// Why: a decoding step runs about fifty short regions (one per projection or attention), and an empty
/// <c>Parallel.For</c> costs 6-12 us and about two kilobytes of managed objects each, as it wakes a thread-pool thread
/// and builds its tasks. Here a region allocates one small object, and a worker still spinning from the previous region
/// (for a short while) starts at once, as OpenMP's threads do. One region runs at a time: a region started while another
/// runs (another thread's, or one started inside a range) runs on <c>Parallel.For</c> instead, so nothing waits on
/// itself. An exception in a range is rethrown on the calling thread after every range has run; the workers live on.
/// Workers beyond torch's thread count of a region take no ranges of it.
/// </remarks>
internal static class RangeWorkers
{
    // How long a worker keeps checking for the next region before it sleeps. Measured on a loaded 2-core machine
    // (decode-profile, bf16, step time against Parallel.For's): 50 us 0.88-0.94 in five runs, no spin 0.91-0.95 in four,
    // 0.5 ms 0.88-1.59 (median 1.17) in five: a longer spin takes the core from LibTorch's threads.
    private static readonly long SpinTicks = Stopwatch.Frequency / 20000; // 50 us

    private static readonly Lock s_startLock = new();
    private static Worker[] s_workers = [];
    private static int s_busy;
    private static Region? s_region;
    private static long s_generation;

    /// <summary>
    /// Runs <paramref name="body"/>(first, end) over [0, <paramref name="count"/>) in <paramref name="ranges"/>
    /// ranges of <paramref name="perRange"/> indices (the last one shorter, empty ones skipped) on at most
    /// <paramref name="threads"/> threads, the calling thread among them, and returns when all have run.
    /// </summary>
    public static void Run(long count, long perRange, int ranges, int threads, Action<long, long> body)
    {
        if (Interlocked.CompareExchange(ref s_busy, 1, 0) != 0)
        {
            RunOnParallelFor(count, perRange, ranges, threads, body);
            return;
        }

        try
        {
            Worker[] workers = WorkersFor(threads - 1);

            // A region object per call (no reuse): a worker that picks up a finished one late finds no range left in it.
            var region = new Region(count, perRange, ranges, threads - 1, body);
            Volatile.Write(ref s_region, region);
            Interlocked.Increment(ref s_generation);
            foreach (Worker worker in workers)
            {
                worker.WakeIfSleeping();
            }

            region.RunRanges();
            region.WaitForAll();
            Volatile.Write(ref s_region, null);
            region.ThrowIfFailed();
        }
        finally
        {
            Volatile.Write(ref s_busy, 0);
        }
    }

    /// <summary>
    /// The same ranges as <see cref="Run"/> on <c>Parallel.For</c>: for a region started while another runs, and for
    /// the <see cref="KernelOperands.ParallelForSwitch"/> switch.
    /// </summary>
    public static void RunOnParallelFor(long count, long perRange, int ranges, int threads, Action<long, long> body) =>
        Parallel.For(0, ranges, new ParallelOptions { MaxDegreeOfParallelism = threads }, r => Region.RunRange(count, perRange, r, body));

    private static Worker[] WorkersFor(int count)
    {
        Worker[] workers = Volatile.Read(ref s_workers);
        if (workers.Length >= count)
        {
            return workers;
        }

        lock (s_startLock)
        {
            workers = s_workers;
            if (workers.Length < count)
            {
                workers = [.. workers, .. Enumerable.Range(workers.Length, count - workers.Length).Select(i => new Worker(i))];
                Volatile.Write(ref s_workers, workers);
            }

            return workers;
        }
    }

    private sealed class Region
    {
        private readonly long _count;
        private readonly long _perRange;
        private readonly int _ranges;
        private readonly Action<long, long> _body;
        private int _next;
        private int _pending;
        private Exception? _error;

        public Region(long count, long perRange, int ranges, int participants, Action<long, long> body)
        {
            (_count, _perRange, _ranges, Participants, _body, _pending) = (count, perRange, ranges, participants, body, ranges);
        }

        // Workers with an index below this take ranges; the others (beyond torch's thread count) leave them.
        public int Participants { get; }

        public static void RunRange(long count, long perRange, int r, Action<long, long> body)
        {
            long first = r * perRange;
            long end = Math.Min(first + perRange, count);
            if (first < end)
            {
                body(first, end);
            }
        }

        public void RunRanges()
        {
            int r;
            while ((r = Interlocked.Increment(ref _next) - 1) < _ranges)
            {
                try
                {
                    RunRange(_count, _perRange, r, _body);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref _error, e, null);
                }

                Interlocked.Decrement(ref _pending);
            }
        }

        public void WaitForAll()
        {
            // The last ranges run on the workers now; a spin that never sleeps a whole millisecond waits for them.
            var spin = default(SpinWait);
            while (Volatile.Read(ref _pending) > 0)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }
        }

        public void ThrowIfFailed()
        {
            if (Volatile.Read(ref _error) is Exception error)
            {
                ExceptionDispatchInfo.Throw(error);
            }
        }
    }

    private sealed class Worker
    {
        private readonly int _index;
        private readonly object _gate = new();
        private int _sleeping;

        public Worker(int index)
        {
            _index = index;
            var thread = new Thread(Loop) { IsBackground = true, Name = $"decoding range worker {index}" };
            thread.Start();
        }

        public void WakeIfSleeping()
        {
            if (Volatile.Read(ref _sleeping) == 1)
            {
                lock (_gate)
                {
                    Monitor.Pulse(_gate);
                }
            }
        }

        private void Loop()
        {
            long seen = Volatile.Read(ref s_generation);
            while (true)
            {
                long started = Stopwatch.GetTimestamp();
                long generation;
                var spin = default(SpinWait);
                while ((generation = Volatile.Read(ref s_generation)) == seen)
                {
                    if (Stopwatch.GetTimestamp() - started > SpinTicks)
                    {
                        // Announce the sleep, then look once more: a region started in between either sees the
                        // announcement and pulses (under the lock, so not before the wait), or is seen here.
                        lock (_gate)
                        {
                            Interlocked.Exchange(ref _sleeping, 1);
                            while (Volatile.Read(ref s_generation) == seen)
                            {
                                Monitor.Wait(_gate);
                            }

                            Interlocked.Exchange(ref _sleeping, 0);
                        }

                        started = Stopwatch.GetTimestamp();
                    }
                    else
                    {
                        spin.SpinOnce(sleep1Threshold: -1);
                    }
                }

                seen = generation;
                if (Volatile.Read(ref s_region) is Region region && _index < region.Participants)
                {
                    region.RunRanges();
                }
            }
        }
    }
}
