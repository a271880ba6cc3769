using ModelSurgery.Quickstart;
using ModelSurgery.Training;

// Before LibTorch loads: OpenMP threads that spin while waiting starve each other on small or busy machines.
CpuThreading.PreferPassiveWaiting();

QuickstartOptions? options;
try
{
    options = QuickstartOptions.Parse(args);
}
catch (ArgumentException ex)
{
    Console.Error.WriteLine(ex.Message);
    return 2;
}

if (options is null)
{
    Console.WriteLine(QuickstartOptions.Usage);
    return 0;
}

using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    cancel.Cancel();
};
await QuickstartPipeline.RunAsync(options, Console.Out, cancel.Token);
return 0;
