using ModelSurgery.Reproduction;
using ModelSurgery.Samples;

string command = "dotnet run -c Release --project Samples/Reproduction" + (args.Length > 0 ? " -- " + string.Join(' ', args) : string.Empty);
return await SampleProgram.RunAsync(args, ReproductionOptions.Parse, ReproductionOptions.Usage, (options, ct) => ReproductionPipeline.RunAsync(options, Console.Out, command, ct));
