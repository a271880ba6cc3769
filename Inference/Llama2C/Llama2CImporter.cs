using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Inference.Llama2C;

/// <summary>Converts between llama2.c checkpoint files and Hugging Face checkpoint folders.</summary>
public static class Llama2CImporter
{
    /// <summary>
    /// Imports a llama2.c <c>.bin</c> (legacy, version 1 or version 2) into <paramref name="outputDirectory"/> as a Hugging Face
    /// checkpoint: <c>config.json</c>, <c>generation_config.json</c> and <c>model.safetensors</c> (F32 by default).
    /// </summary>
    /// <returns>The imported model's config.</returns>
    /// <exception cref="InvalidDataException">The file is not a valid llama2.c checkpoint; the message names it.</exception>
    public static async Task<LlamaConfig> ImportAsync(
        string llama2cPath,
        string outputDirectory,
        SafetensorsDType dtype = SafetensorsDType.F32,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        using Llama2CWeights weights = Llama2CCheckpoint.Read(llama2cPath);
        LlamaConfig config = weights.Config with { TorchDtype = dtype.ToTorchDtypeName() };
        Directory.CreateDirectory(outputDirectory);
        await CheckpointWriter.WriteAsync(
            outputDirectory,
            weights.Tensors,
            new CheckpointWriterOptions { FloatingPointDType = dtype },
            logger,
            cancellationToken).ConfigureAwait(false);
        config.Save(Path.Combine(outputDirectory, "config.json"));
        GenerationConfigFile.Write(outputDirectory, config);
        return config;
    }

    /// <summary>
    /// Exports a Hugging Face checkpoint folder as a llama2.c file (float32): by default the legacy layout, the one
    /// llama2.c's <c>run.c</c> reads; <see cref="Llama2CVersion.Version1"/> is the <c>ak42</c> layout of llama2.c's
    /// <c>export.py --version 1</c>, which <c>run.c</c> does not read.
    /// </summary>
    /// <exception cref="ArgumentException">The model uses a feature llama2.c cannot hold (biases, RoPE scaling, ...); the message names it.</exception>
    public static void Export(string checkpointDirectory, string llama2cPath, Llama2CVersion version = Llama2CVersion.Legacy)
    {
        string configPath = Path.Combine(checkpointDirectory, "config.json");
        LlamaConfig config = LlamaConfig.Load(configPath);
        using CheckpointReader reader = CheckpointReader.Open(checkpointDirectory);
        Modeling.LlamaForCausalLM.CheckLayout(config, reader.TensorNames.ToDictionary(n => n, n => reader.GetInfo(n).Shape, StringComparer.Ordinal), configPath);
        Llama2CCheckpoint.Write(llama2cPath, config, reader.ReadTensor, version);
    }
}
