using ModelSurgery.Quickstart;
using ModelSurgery.Samples;

return await SampleProgram.RunAsync(args, QuickstartOptions.Parse, QuickstartOptions.Usage, (options, ct) => QuickstartPipeline.RunAsync(options, Console.Out, ct));
