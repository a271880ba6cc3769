using ModelSurgery.Surgery.Building;

namespace ModelSurgery.Tests.Building;

/// <summary>The builder's read-ahead pipeline: order, its bound on items in flight, and how failures and stops cross it.</summary>
public sealed class ReadAheadTests
{
    /// <summary>
    /// Workers that finish out of order (random delays) still deliver in order, and never hold more than the bound: one
    /// item per worker plus the one the caller has.
    /// </summary>
    [TestCase(1, 1)]
    [TestCase(2, 2)]
    [TestCase(4, 3)]
    public async Task Items_arrive_in_order_with_at_most_one_per_worker_and_one_in_hand_in_flight(int workers, int seed)
    {
        const int count = 60;
        int finished = 0, started = 0, mostInFlight = 0;
        using var full = new ManualResetEventSlim();
        int Produce(int k, CancellationToken stop)
        {
            // Counted when an item is begun: everything begun and not yet finished by the caller is in flight.
            int begun = Interlocked.Increment(ref started);
            InterlockedMax(ref mostInFlight, begun - Volatile.Read(ref finished));
            if (begun == ReadAhead.ItemsInFlight(workers))
            {
                full.Set();
            }

            Thread.Sleep(new Random(seed * 1000 + k).Next(0, 3));
            return k;
        }

        var seen = new List<int>();
        await foreach (int item in ReadAhead.RunAsync(count, Produce, workers, CancellationToken.None))
        {
            seen.Add(item);
            if (item == 0)
            {
                // While the caller holds item 0, every worker can begin one more: the pipeline fills up to its bound.
                Assert.That(full.Wait(TimeSpan.FromMinutes(2)), Is.True, "the workers never ran ahead of the caller");
            }

            // A slow caller gives the workers every chance to run further ahead than the bound allows.
            await Task.Yield();
            Thread.Sleep(1);
            Interlocked.Increment(ref finished);
        }

        Assert.That(seen, Is.EqualTo(Enumerable.Range(0, count)));
        Assert.That(mostInFlight, Is.EqualTo(ReadAhead.ItemsInFlight(workers)));
    }

    [Test]
    public async Task No_items_means_no_work()
    {
        int calls = 0;
        await foreach (int _ in ReadAhead.RunAsync(0, (k, _) => Interlocked.Increment(ref calls), 3, CancellationToken.None))
        {
            Assert.Fail("no item expected");
        }

        Assert.That(calls, Is.Zero);
    }

    [TestCase(1)]
    [TestCase(3)]
    public void A_worker_failure_reaches_the_caller_unchanged(int workers)
    {
        static int Produce(int k, CancellationToken stop) => k == 4 ? throw new InvalidDataException("damaged tensor") : k;

        var seen = new List<int>();
        var ex = Assert.ThrowsAsync<InvalidDataException>(async () =>
        {
            await foreach (int item in ReadAhead.RunAsync(10, Produce, workers, CancellationToken.None))
            {
                seen.Add(item);
            }
        });
        Assert.That(ex!.Message, Is.EqualTo("damaged tensor"));
        // The failure stops the pipeline at once, so some of the items before it may not arrive; none after it does.
        Assert.That(seen, Is.EqualTo(Enumerable.Range(0, seen.Count)));
        Assert.That(seen, Has.Count.LessThanOrEqualTo(4));
    }

    /// <summary>
    /// Item 0 is slow and stops when the pipeline stops; item 2 fails meanwhile. The caller, waiting for item 0, is told of
    /// the failure, not of item 0's cancellation.
    /// </summary>
    [Test]
    public void A_later_failure_is_reported_while_an_earlier_item_is_stopped()
    {
        using var failed = new ManualResetEventSlim();
        int Produce(int k, CancellationToken stop)
        {
            if (k == 2)
            {
                failed.Set();
                throw new InvalidDataException("tensor 2 is damaged");
            }

            if (k == 0)
            {
                // Waits until the failure has stopped the pipeline, then stops as a read would.
                failed.Wait(CancellationToken.None);
                stop.WaitHandle.WaitOne();
                stop.ThrowIfCancellationRequested();
            }

            return k;
        }

        var ex = Assert.ThrowsAsync<InvalidDataException>(async () =>
        {
            await foreach (int _ in ReadAhead.RunAsync(6, Produce, 3, CancellationToken.None))
            {
            }
        });
        Assert.That(ex!.Message, Is.EqualTo("tensor 2 is damaged"));
    }

    [TestCase(1)]
    [TestCase(3)]
    public void A_caller_that_is_cancelled_stops_the_workers(int workers)
    {
        int produced = 0;
        int Produce(int k, CancellationToken stop)
        {
            Interlocked.Increment(ref produced);
            return k;
        }

        using var cancellation = new CancellationTokenSource();
        Assert.CatchAsync<OperationCanceledException>(async () =>
        {
            await foreach (int item in ReadAhead.RunAsync(1000, Produce, workers, cancellation.Token))
            {
                if (item == 3)
                {
                    await cancellation.CancelAsync();
                }
            }
        });

        // The enumeration has returned, so the workers have stopped: at most the bound beyond the item in hand.
        int after = Volatile.Read(ref produced);
        Assert.That(after, Is.LessThanOrEqualTo(4 + ReadAhead.ItemsInFlight(workers)));
        Thread.Sleep(20);
        Assert.That(Volatile.Read(ref produced), Is.EqualTo(after), "no worker runs on after the enumeration returned");
    }

    [Test]
    public void A_caller_failure_stops_the_workers_and_is_not_hidden()
    {
        int produced = 0;
        int Produce(int k, CancellationToken stop)
        {
            Interlocked.Increment(ref produced);
            return k;
        }

        var ex = Assert.ThrowsAsync<IOException>(async () =>
        {
            await foreach (int item in ReadAhead.RunAsync(1000, Produce, 2, CancellationToken.None))
            {
                if (item == 5)
                {
                    throw new IOException("disk full");
                }
            }
        });
        Assert.That(ex!.Message, Is.EqualTo("disk full"));
        Assert.That(Volatile.Read(ref produced), Is.LessThanOrEqualTo(6 + ReadAhead.ItemsInFlight(2)));
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int seen = Volatile.Read(ref target);
        while (value > seen && Interlocked.CompareExchange(ref target, value, seen) is int actual && actual != seen)
        {
            seen = actual;
        }
    }
}
