namespace ModelSurgery.Inference.Reporting;

/// <summary>
/// Reports progress on the thread that calls <see cref="Report"/>, in the order of the calls. <see cref="Progress{T}"/>
/// posts each report to the captured context or the thread pool instead, so its reports can arrive out of order, after
/// the work has finished, and after the receiver's writers are closed.
/// </summary>
/// <typeparam name="T">The progress record.</typeparam>
/// <param name="report">Called with each report, on the reporting thread.</param>
public sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
{
    private readonly Action<T> _report = report ?? throw new ArgumentNullException(nameof(report));

    /// <inheritdoc />
    public void Report(T value) => _report(value);
}
