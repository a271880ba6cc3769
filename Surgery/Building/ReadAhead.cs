using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;

namespace ModelSurgery.Surgery.Building;

/// <summary>
/// Produces items 0..n-1 on background workers while the caller consumes them in order: the build reads and gathers the
/// next chunks while the current one is written. Each worker takes a slot before it takes the next index, and the caller
/// gives a slot back when it asks for the next item (it is done with the previous), so at most
/// <see cref="ItemsInFlight"/> items exist at once. Indices are taken in order, so the item the caller waits for is
/// always being produced or next to be taken, and the pipeline cannot stall. A failure on either side stops the other; a
/// worker's failure reaches the caller unchanged, even while other workers were stopped in the middle of theirs.
/// </summary>
internal static class ReadAhead
{
    /// <summary>Items in flight with <paramref name="workers"/> workers: one being produced by each, one being consumed.</summary>
    internal static int ItemsInFlight(int workers) => workers + 1;

    /// <summary>
    /// Items <c>produce(0)</c> .. <c>produce(count - 1)</c>, in order, produced on up to <paramref name="workers"/> workers.
    /// <paramref name="produce"/> gets a token that is cancelled when the pipeline stops (the caller stopped, was cancelled
    /// or another worker failed).
    /// </summary>
    internal static async IAsyncEnumerable<T> RunAsync<T>(int count, Func<int, CancellationToken, T> produce, int workers, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(produce);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        workers = Math.Max(1, Math.Min(workers, count));
        var results = new TaskCompletionSource<T>[count];
        for (int k = 0; k < count; k++)
        {
            results[k] = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        using var slots = new SemaphoreSlim(ItemsInFlight(workers));
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        int taken = -1;
        Exception? failure = null;

        void Work()
        {
            try
            {
                while (true)
                {
                    slots.Wait(stop.Token);
                    int k = Interlocked.Increment(ref taken);
                    if (k >= count)
                    {
                        return;
                    }

                    try
                    {
                        results[k].SetResult(produce(k, stop.Token));
                    }
                    catch (OperationCanceledException) when (stop.IsCancellationRequested)
                    {
                        results[k].SetCanceled(stop.Token);
                        return;
                    }
                    catch (Exception ex)
                    {
                        // Recorded before the others are stopped, so the caller reports this and not their cancellation.
                        Interlocked.CompareExchange(ref failure, ex, null);
                        results[k].SetException(ex);
                        stop.Cancel();
                        return;
                    }
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                // Stopped while waiting for a slot.
            }
        }

        // Dedicated threads: a worker blocks on its slot, which must not hold a pool thread the caller's awaits need.
        Task[] running = new Task[workers];
        for (int w = 0; w < workers; w++)
        {
            running[w] = Task.Factory.StartNew(Work, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }

        try
        {
            for (int k = 0; k < count; k++)
            {
                if (k > 0)
                {
                    // The caller asks for item k only once it is done with item k - 1.
                    slots.Release();
                }

                T item;
                try
                {
                    // Checked first: a finished item would be handed out even after the pipeline stopped.
                    stop.Token.ThrowIfCancellationRequested();
                    item = await results[k].Task.WaitAsync(stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && Volatile.Read(ref failure) is not null)
                {
                    ExceptionDispatchInfo.Throw(Volatile.Read(ref failure)!);
                    throw;
                }

                yield return item;
            }
        }
        finally
        {
            // Stops workers waiting for a slot or in the middle of an item (the caller failed, stopped early or was
            // cancelled) before the slots go away.
            await stop.CancelAsync().ConfigureAwait(false);
            await Task.WhenAll(running).ConfigureAwait(false);
        }
    }
}
