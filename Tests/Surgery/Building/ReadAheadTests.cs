using ModelSurgery.Surgery.Building;

namespace ModelSurgery.Tests.Building;

/// <summary>The builder's read-ahead pipeline: order, its bound on items in flight, and how failures cross it.</summary>
public sealed class ReadAheadTests
{
    [Test]
    public async Task Items_arrive_in_order_with_at_most_two_in_flight()
    {
        int finished = 0, produced = 0, mostInFlight = 0;
        IEnumerable<int> Produce()
        {
            for (int i = 0; i < 40; i++)
            {
                // Counted when the item exists: everything produced and not yet finished by the consumer is in flight.
                produced++;
                mostInFlight = Math.Max(mostInFlight, produced - Volatile.Read(ref finished));
                yield return i;
            }
        }

        var seen = new List<int>();
        await foreach (int item in StudentBuilder.ReadAheadAsync(Produce(), CancellationToken.None))
        {
            seen.Add(item);

            // A slow consumer gives the producer every chance to run further ahead than the bound allows.
            await Task.Yield();
            Thread.Sleep(1);
            Volatile.Write(ref finished, finished + 1);
        }

        Assert.That(seen, Is.EqualTo(Enumerable.Range(0, 40)));
        Assert.That(mostInFlight, Is.InRange(1, StudentBuilder.ChunksInFlight));
    }

    [Test]
    public void A_producer_failure_reaches_the_consumer_unchanged()
    {
        static IEnumerable<int> Produce()
        {
            yield return 1;
            throw new InvalidDataException("damaged tensor");
        }

        var ex = Assert.ThrowsAsync<InvalidDataException>(async () =>
        {
            await foreach (int item in StudentBuilder.ReadAheadAsync(Produce(), CancellationToken.None))
            {
                Assert.That(item, Is.EqualTo(1));
            }
        });
        Assert.That(ex!.Message, Is.EqualTo("damaged tensor"));
    }

    [Test]
    public void A_consumer_that_stops_stops_the_producer()
    {
        int produced = 0;
        IEnumerable<int> Produce()
        {
            for (int i = 0; i < 1000; i++)
            {
                Interlocked.Increment(ref produced);
                yield return i;
            }
        }

        using var cancellation = new CancellationTokenSource();
        Assert.CatchAsync<OperationCanceledException>(async () =>
        {
            await foreach (int item in StudentBuilder.ReadAheadAsync(Produce(), cancellation.Token))
            {
                if (item == 3)
                {
                    await cancellation.CancelAsync();
                }
            }
        });

        // The enumeration has returned, so the producer has stopped: at most the bound beyond the item in hand.
        Assert.That(Volatile.Read(ref produced), Is.LessThanOrEqualTo(4 + StudentBuilder.ChunksInFlight));
    }
}
