using ModelSurgery.Inference.Runtime;
using ModelSurgery.Training;

namespace ModelSurgery.Samples;

/// <summary>The entry point the sample programs share: parse, print usage or the argument error, run until Ctrl+C.</summary>
public static class SampleProgram
{
    /// <summary>Runs a sample program.</summary>
    /// <typeparam name="T">The sample's options.</typeparam>
    /// <param name="args">Command-line arguments.</param>
    /// <param name="parse">The sample's parser; null for <c>--help</c>.</param>
    /// <param name="usage">Usage text for <c>--help</c>.</param>
    /// <param name="run">The sample itself; Ctrl+C cancels its token.</param>
    /// <returns>The exit code: 0, or 2 for a bad argument (the message goes to standard error).</returns>
    public static async Task<int> RunAsync<T>(string[] args, Func<IReadOnlyList<string>, T?> parse, string usage, Func<T, CancellationToken, Task> run)
        where T : SampleRunOptions
    {
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentNullException.ThrowIfNull(run);

        // First of all, since it starts the program again with every thread on glibc's main arena: the samples train on
        // pool threads, where blocks of 64 MiB or more (their logits) were otherwise mapped afresh every step.
        NativeAllocator.RestartOnOneArena();
        // Before LibTorch loads: OpenMP threads that spin while waiting starve each other on small or busy machines.
        CpuThreading.PreferPassiveWaiting();
        T? options;
        try
        {
            options = parse(args);
        }
        catch (ArgumentException ex)
        {
            Console.Error.WriteLine(ex.Message);
            return 2;
        }

        if (options is null)
        {
            Console.WriteLine(usage);
            return 0;
        }

        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cancel.Cancel();
        };
        await run(options, cancel.Token).ConfigureAwait(false);
        return 0;
    }
}
