using System.CommandLine;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Llama2C;

namespace ModelSurgery.Cli.Commands;

/// <summary><c>modelsurgery import-llama2c &lt;file.bin&gt; &lt;out-dir&gt; [--dtype f32] [--tokenizer T]</c> and <c>export-llama2c &lt;dir&gt; &lt;file.bin&gt; [--format legacy|version1]</c>.</summary>
internal static class Llama2CCommands
{
    public static Command CreateImport(CliContext context)
    {
        var input = new Argument<string>("file.bin") { Description = "A llama2.c checkpoint (legacy, version 1 or version 2)." };
        var output = new Argument<string>("out-dir") { Description = "Output Hugging Face checkpoint folder." };
        var dtype = new Option<string>("--dtype") { Description = "Stored dtype: f32, bf16 or f16.", DefaultValueFactory = _ => "f32" };
        var tokenizer = SynthCommand.TokenizerOption();
        var force = CommonOptions.Force();
        var command = new Command("import-llama2c", "Convert a llama2.c checkpoint into a Hugging Face checkpoint folder.") { input, output, dtype, tokenizer, force };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            string path = parsed.GetValue(input)!;
            if (!File.Exists(path))
            {
                throw new FileNotFoundException($"{path}: no such file.", path);
            }

            string outDir = parsed.GetValue(output)!;
            using OutputGuard guard = new OutputGuard().Input(path, "file.bin").Folder(outDir, "out-dir", parsed.GetValue(force), clearModel: true);
            LlamaConfig config = await Llama2CImporter.ImportAsync(path, outDir, SynthCommand.ParseWeightDType(parsed.GetValue(dtype)!), cancellationToken: cancellationToken).ConfigureAwait(false);
            SynthCommand.PutTokenizer(parsed.GetValue(tokenizer), outDir, config);
            await context.Output.WriteLineAsync($"imported {path} -> {outDir}: {config.NumHiddenLayers} layers, hidden {config.HiddenSize}, vocab {config.VocabSize}, {LlamaTensorLayout.CountParameters(config).Total:N0} parameters").ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }

    public static Command CreateExport(CliContext context)
    {
        var input = new Argument<string>("model-dir") { Description = "A Hugging Face checkpoint folder." };
        var output = new Argument<string>("file.bin") { Description = "Output llama2.c file." };
        var format = new Option<string>("--format")
        {
            Description = "legacy (default): the 7-int32 header that llama2.c's run.c reads; version1: the 256-byte 'ak42' header of llama2.c's export.py --version 1, which run.c does not read.",
            DefaultValueFactory = _ => "legacy",
        };
        var command = new Command("export-llama2c", "Convert a Hugging Face checkpoint folder into a llama2.c file (float32) that run.c reads.") { input, output, format };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            string outPath = parsed.GetValue(output)!;
            Llama2CVersion version = parsed.GetValue(format) switch
            {
                "legacy" => Llama2CVersion.Legacy,
                "version1" => Llama2CVersion.Version1,
                var other => throw new UsageException($"{format.Name}: '{other}' is not legacy or version1."),
            };
            using OutputGuard guard = new OutputGuard().Input(parsed.GetValue(input), "model-dir", InputKind.Model).File(outPath, "file.bin");
            string modelDir = parsed.GetValue(input)!;
            LlamaConfig config = TrainingCommandOptions.ReadConfig(modelDir);
            Inference.Runtime.MemoryPreflight.EnsureDiskSpace(Path.GetDirectoryName(Path.GetFullPath(outPath))!, LlamaTensorLayout.CountParameters(config).Total * sizeof(float), "export-llama2c");
            Llama2CImporter.Export(modelDir, outPath, version);
            await context.Output.WriteLineAsync($"wrote {outPath}").ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }
}
