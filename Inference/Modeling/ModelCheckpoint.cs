using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Runtime;
using TorchSharp;

namespace ModelSurgery.Inference.Modeling;

/// <summary>How to load a checkpoint into a <see cref="LlamaForCausalLM"/>.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>Parameter dtype of the loaded model; null keeps float32 (the safe choice on CPU).</summary>
    public torch.ScalarType? DType { get; init; }

    /// <summary>Device name: <c>auto</c> (CUDA when available), <c>cpu</c>, <c>cuda</c>, <c>cuda:N</c>.</summary>
    public string Device { get; init; } = "auto";
}

/// <summary>How to save a <see cref="LlamaForCausalLM"/> as a Hugging Face checkpoint.</summary>
public sealed record ModelSaveOptions
{
    /// <summary>Stored dtype; null stores the model's own parameter dtype.</summary>
    public SafetensorsDType? DType { get; init; }

    /// <summary>Largest shard; the default writes a single <c>model.safetensors</c>.</summary>
    public long MaxShardBytes { get; init; } = long.MaxValue;
}

/// <summary>Loads and saves <see cref="LlamaForCausalLM"/> as Hugging Face checkpoint folders (config.json + safetensors).</summary>
public static partial class ModelCheckpoint
{
    /// <summary>
    /// Loads the model in <paramref name="directory"/>: <c>config.json</c> plus <c>model.safetensors</c> or a sharded index.
    /// Tensors stream from the files one at a time; keys and shapes are checked strictly before any is read. A parameter
    /// of the stored dtype on the CPU is read straight into its memory (no tensor in between, no copy), and its memory
    /// is asked for in huge pages first, since on a virtual machine faulting fresh memory in costs more than the read.
    /// </summary>
    /// <exception cref="InvalidDataException">The config or a file is malformed, or tensors are missing, unexpected or of another shape; the message names them.</exception>
    public static LlamaForCausalLM Load(string directory, ModelLoadOptions? options = null, ILogger? logger = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        options ??= new ModelLoadOptions();
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"{directory}: no such checkpoint folder.");
        }

        LlamaConfig config = LlamaConfig.Load(Path.Combine(directory, "config.json"));
        using CheckpointReader reader = CheckpointReader.Open(directory);
        torch.Device device = ComputeDevice.Resolve(options.Device);
        var shapes = reader.TensorNames.ToDictionary(n => n, n => reader.GetInfo(n).Shape, StringComparer.Ordinal);
        LlamaForCausalLM.CheckLayout(config, shapes, Path.Combine(directory, "config.json"));
        var model = new LlamaForCausalLM(config, options.DType ?? torch.ScalarType.Float32, device);
        try
        {
            model.LoadWeightsFrom(reader, shapes, directory);
        }
        catch
        {
            model.Dispose();
            throw;
        }

        if (logger is not null)
        {
            long parameters = LlamaTensorLayout.CountParameters(config).Total;
            string deviceName = device.ToString();
            LogLoaded(logger, directory, parameters, model.DType, deviceName);
        }

        return model;
    }

    /// <summary>
    /// Writes <paramref name="model"/> into <paramref name="directory"/> as <c>config.json</c>, <c>generation_config.json</c>
    /// and safetensors (sharded with an index when larger than <see cref="ModelSaveOptions.MaxShardBytes"/>), atomically.
    /// </summary>
    /// <param name="model">The model to save.</param>
    /// <param name="directory">Output folder (created).</param>
    /// <param name="options">dtype and sharding.</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="cancellationToken">Cancels the write; no file is left under a final name.</param>
    public static async Task SaveAsync(LlamaForCausalLM model, string directory, ModelSaveOptions? options = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new ModelSaveOptions();
        SafetensorsDType dtype = options.DType ?? SafetensorsDTypes.FromScalarType(model.DType);
        Directory.CreateDirectory(directory);
        var tensors = model.ToStateDict();
        CheckpointTensor[] declared = [.. tensors.Select(kv => new CheckpointTensor(kv.Key, dtype, kv.Value.shape))];
        await using (CheckpointWriter writer = CheckpointWriter.Create(directory, declared, new CheckpointWriterOptions { MaxShardBytes = options.MaxShardBytes }, logger))
        {
            foreach (var (name, tensor) in tensors)
            {
                using var scope = torch.NewDisposeScope();
                await writer.WriteTensorAsync(name, tensor.detach().cpu(), cancellationToken).ConfigureAwait(false);
            }

            await writer.CompleteAsync(cancellationToken).ConfigureAwait(false);
        }

        LlamaConfig config = model.Config with { TorchDtype = dtype.ToTorchDtypeName() };
        config.Save(Path.Combine(directory, "config.json"));
        GenerationConfigFile.Write(directory, config, GenerationConfigFile.TryRead(directory));
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Loaded {Directory}: {Parameters:N0} parameters as {DType} on {Device}")]
    private static partial void LogLoaded(ILogger logger, string directory, long parameters, torch.ScalarType dtype, string device);
}
