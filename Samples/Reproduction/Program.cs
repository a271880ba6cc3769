using ModelSurgery.Reproduction;
using ModelSurgery.Training;

// Before LibTorch loads: OpenMP threads that spin while waiting starve each other on small or busy machines.
CpuThreading.PreferPassiveWaiting();

ReproductionOptions? options;
try
{
    options = ReproductionOptions.Parse(args);
}
catch (ArgumentException ex)
{
    Console.Error.WriteLine(ex.Message);
    return 2;
}

if (options is null)
{
    Console.WriteLine(ReproductionOptions.Usage);
    return 0;
}

using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    cancel.Cancel();
};
string command = "dotnet run -c Release --project Samples/Reproduction" + (args.Length > 0 ? " -- " + string.Join(' ', args) : string.Empty);
await ReproductionPipeline.RunAsync(options, Console.Out, command, cancel.Token);
return 0;
