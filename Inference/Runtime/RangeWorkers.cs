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
/// and builds its tasks. Here a region allocates nothing, and a worker still spinning from the previous region
/// (for a short while) starts at once, as OpenMP's threads do. One region runs at a time: a region started while another
/// runs (another thread's, or one started inside a range) runs on <c>Parallel.For</c> instead, so nothing waits on
/// itself. An exception in a range is rethrown on the calling thread after every range has run; the workers live on.
/// Workers beyond torch's thread count of a region take no ranges of it. Since one region runs at a time, every region
/// is the same reused object: a region allocates nothing.
/// </remarks>
internal static class RangeWorkers
{
    // How long a worker keeps checking for the next region before it sleeps. Measured on a loaded 2-core machine
    // (decode-profile, bf16, step time against Parallel.For's): 50 us 0.88-0.94 in five runs, no spin 0.91-0.95 in four,
    // 0.5 ms 0.88-1.59 (median 1.17) in five: a longer spin takes the core from LibTorch's threads.
    private static readonly long SpinTicks = Stopwatch.Frequency / 20000; // 50 us

    private static readonly Lock s_startLock = new();
    private static Worker[] s_workers = [];
    private static readonly Region s_region = new();

    /// <summary>
    /// For tests: called on a background worker after it read a region's operands and before it takes a range, so a test
    /// can hold a worker there and let the next region begin (the interleaving the region's compare-and-swap guards).
    /// </summary>
    internal static Action? AfterWorkerReadOperands { get; set; }
    private static int s_busy;
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
            s_region.Begin(count, perRange, ranges, threads - 1, body);
            Interlocked.Increment(ref s_generation);
            foreach (Worker worker in workers)
            {
                worker.WakeIfSleeping();
            }

            s_region.RunRanges(participant: -1);
            s_region.WaitForAll();
            s_region.EndAndThrowIfFailed();
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

    /// <summary>
    /// The one region, reused: its operands, and a state word holding the region's number (high 32 bits) and the next
    /// range to take (low 32 bits). A range is taken by a compare-and-swap of that word, so a thread that read the
    /// operands of one region can take a range only of that region: the swap fails once the region's last range is taken,
    /// which happens before its owner writes the next region's operands. A worker late for a finished region takes nothing.
    /// </summary>
    private sealed class Region
    {
        private long _state;
        private long _count;
        private long _perRange;
        private int _ranges;
        private int _participants;
        private Action<long, long>? _body;
        private int _pending;
        private Exception? _error;

        public static void RunRange(long count, long perRange, int r, Action<long, long> body)
        {
            long first = r * perRange;
            long end = Math.Min(first + perRange, count);
            if (first < end)
            {
                body(first, end);
            }
        }

        // By the owner, with no region running: the operands first, then the state word that publishes them.
        public void Begin(long count, long perRange, int ranges, int participants, Action<long, long> body)
        {
            (_count, _perRange, _ranges, _participants, _body, _pending, _error) = (count, perRange, ranges, participants, body, ranges, null);
            long number = (Volatile.Read(ref _state) >> 32) + 1;
            Volatile.Write(ref _state, (number & uint.MaxValue) << 32);
        }

        // Takes and runs ranges until none is left; participant is a worker's index (workers at or beyond the region's
        // participants take none), -1 for the owner.
        public void RunRanges(int participant)
        {
            while (true)
            {
                long state = Volatile.Read(ref _state);
                int next = (int)(state & uint.MaxValue);
                (long count, long perRange, int ranges, Action<long, long>? body) = (_count, _perRange, _ranges, _body);
                if (next >= ranges || participant >= Volatile.Read(ref _participants) || body is null)
                {
                    return;
                }

                if (participant >= 0)
                {
                    AfterWorkerReadOperands?.Invoke();
                }

                if (Interlocked.CompareExchange(ref _state, state + 1, state) != state)
                {
                    continue; // another thread took it, or a new region began: read again
                }

                try
                {
                    RunRange(count, perRange, next, body);
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

        // By the owner once every range has run: lets go of the body (and what it holds), then rethrows a range's exception.
        public void EndAndThrowIfFailed()
        {
            _body = null;
            Exception? error = Interlocked.Exchange(ref _error, null);
            if (error is not null)
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
                s_region.RunRanges(_index);
            }
        }
    }
}
