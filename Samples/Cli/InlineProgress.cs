namespace ModelSurgery.Cli;

/// <summary>
/// Reports progress on the calling thread. <see cref="Progress{T}"/> posts each report to the thread pool, so reports can
/// arrive out of order and after the command has finished and its writers are closed.
/// </summary>
internal sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
