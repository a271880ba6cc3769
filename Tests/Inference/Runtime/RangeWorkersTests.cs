using System.Collections.Concurrent;
using ModelSurgery.Inference.Runtime;

namespace ModelSurgery.Tests.Inference;

/// <summary>
/// The kernels' fork and join runs every range once, on no more threads than asked, rethrows a range's exception after
/// the region and keeps working, and lets a region started inside a range run instead of waiting on itself.
/// </summary>
public sealed class RangeWorkersTests
{
    [Test]
    public void Many_regions_cover_every_index_once_on_at_most_the_threads_asked([Values(1, 2, 3)] int threads)
    {
        for (int region = 0; region < 200; region++)
        {
            long count = 1 + (region * 37 % 101);
            int ranges = 1 + (region % 9);
            long perRange = (count + ranges - 1) / ranges;
            var seen = new int[count];
            var threadIds = new ConcurrentDictionary<int, bool>();
            RangeWorkers.Run(count, perRange, ranges, threads, (first, end) =>
            {
                threadIds.TryAdd(Environment.CurrentManagedThreadId, true);
                for (long i = first; i < end; i++)
                {
                    Interlocked.Increment(ref seen[i]);
                }
            });
            Assert.That(seen, Is.All.EqualTo(1), $"region {region}");
            Assert.That(threadIds.Count, Is.LessThanOrEqualTo(threads), $"region {region}");
        }
    }

    [Test]
    public void An_exception_in_a_range_reaches_the_caller_after_every_range_ran_and_the_next_region_runs()
    {
        var ran = new int[8];
        Assert.Throws<InvalidOperationException>(() => RangeWorkers.Run(8, 1, 8, 2, (first, _) =>
        {
            Interlocked.Increment(ref ran[first]);
            if (first == 3)
            {
                throw new InvalidOperationException("range 3");
            }
        }));
        Assert.That(ran, Is.All.EqualTo(1), "the other ranges still ran, once");

        long sum = 0;
        RangeWorkers.Run(100, 10, 10, 2, (first, end) => Interlocked.Add(ref sum, end - first));
        Assert.That(sum, Is.EqualTo(100));
    }

    [Test]
    public void A_region_started_inside_a_range_runs_rather_than_waiting_on_itself()
    {
        long inner = 0;
        RangeWorkers.Run(4, 1, 4, 2, (_, _) => RangeWorkers.Run(10, 5, 2, 2, (first, end) => Interlocked.Add(ref inner, end - first)));
        Assert.That(inner, Is.EqualTo(40));
    }

    [Test]
    public void Regions_from_several_threads_at_once_all_complete()
    {
        long total = 0;
        Parallel.For(0, 8, _ =>
        {
            for (int i = 0; i < 50; i++)
            {
                RangeWorkers.Run(64, 8, 8, 2, (first, end) => Interlocked.Add(ref total, end - first));
            }
        });
        Assert.That(total, Is.EqualTo(8L * 50 * 64));
    }

    [Test]
    public void A_region_allocates_nothing_on_the_calling_thread_once_the_workers_run()
    {
        s_total = 0;
        RangeWorkers.Run(64, 8, 8, 2, s_addToTotal); // starts the worker (and JIT-compiles what a region runs)
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 200; i++)
        {
            RangeWorkers.Run(64, 8, 8, 2, s_addToTotal);
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(Interlocked.Read(ref s_total), Is.EqualTo(201L * 64));
        Assert.That(allocated, Is.Zero);
    }

    [Test]
    public void A_worker_late_for_a_region_takes_no_range_of_the_next_one([Values(2, 3)] int threads)
    {
        // Regions of different shapes back to back, so a worker that read one region's operands meets the next region's
        // state: every index of every region runs exactly once, and only while its own region runs.
        s_strangers = 0;
        for (int region = 0; region < 2000; region++)
        {
            RunRegionChecked(region, 1 + (region % 13), 1 + (region % 5), threads, onFirstRange: null);
        }

        Assert.That(Volatile.Read(ref s_strangers), Is.Zero);
    }

    [Test]
    public void A_worker_held_after_reading_a_region_takes_no_range_of_the_next_one()
    {
        // In every region the caller holds its first range until a worker has read the region's operands with a range
        // still free; every third such worker then sleeps before taking it, long enough for the caller to finish that
        // region and begin the next. The worker must then take nothing of the new region with the old operands.
        s_strangers = 0;
        int caller = Environment.CurrentManagedThreadId;
        int reads = 0;
        RangeWorkers.AfterWorkerReadOperands = () =>
        {
            if (Interlocked.Increment(ref reads) % 3 == 0)
            {
                Thread.Sleep(1);
            }
        };
        try
        {
            for (int region = 0; region < 300; region++)
            {
                int readsBefore = Volatile.Read(ref reads);
                RunRegionChecked(region, 2 + (region % 11), 2 + (region % 4), 3, onFirstRange: () =>
                {
                    if (Environment.CurrentManagedThreadId == caller)
                    {
                        // A bound against a hang only: a worker wakes within microseconds.
                        SpinWait.SpinUntil(() => Volatile.Read(ref reads) > readsBefore, TimeSpan.FromSeconds(10));
                    }
                });
            }
        }
        finally
        {
            RangeWorkers.AfterWorkerReadOperands = null;
        }

        Thread.Sleep(20); // a worker still held from the last region wakes and must take nothing
        Assert.That(Volatile.Read(ref s_strangers), Is.Zero);
        Assert.That(Volatile.Read(ref reads), Is.GreaterThanOrEqualTo(300), "a worker read every region's operands");
    }

    // Runs region number `region` over `count` indices in `ranges` ranges with s_current set to it, counting in
    // s_strangers every range run while another region is current, and checks that every index ran once.
    private static void RunRegionChecked(int region, long count, int ranges, int threads, Action? onFirstRange)
    {
        long perRange = (count + ranges - 1) / ranges;
        var seen = new int[count];
        Volatile.Write(ref s_current, region);
        RangeWorkers.Run(count, perRange, ranges, threads, (first, end) =>
        {
            if (Volatile.Read(ref s_current) != region)
            {
                Interlocked.Increment(ref s_strangers);
            }

            if (first == 0)
            {
                onFirstRange?.Invoke();
            }

            for (long i = first; i < end; i++)
            {
                Interlocked.Increment(ref seen[i]);
            }
        });
        Volatile.Write(ref s_current, -1);
        Assert.That(seen, Is.All.EqualTo(1), $"region {region}");
    }

    private static int s_current = -1;
    private static int s_strangers;
    private static readonly Action<long, long> s_addToTotal = (first, end) => Interlocked.Add(ref s_total, end - first);
    private static long s_total;

    [Test]
    public void The_parallel_for_switch_covers_every_index_once_too()
    {
        AppContext.SetSwitch(KernelOperands.ParallelForSwitch, true);
        try
        {
            var seen = new int[1000];
            KernelOperands.ForEachRange(1000, 8, 4, 2, (first, end) =>
            {
                for (long i = first; i < end; i++)
                {
                    Interlocked.Increment(ref seen[i]);
                }
            });
            Assert.That(seen, Is.All.EqualTo(1));
        }
        finally
        {
            AppContext.SetSwitch(KernelOperands.ParallelForSwitch, false);
        }
    }
}
