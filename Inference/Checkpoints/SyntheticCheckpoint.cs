using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Configuration;
using TorchSharp;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>Progress of writing a synthetic checkpoint.</summary>
/// <param name="TensorsWritten">Tensors finished.</param>
/// <param name="TensorCount">Tensors in all.</param>
/// <param name="Completed">Bytes of tensor data finished.</param>
/// <param name="Total">Bytes of tensor data in all.</param>
public sealed record SyntheticCheckpointProgress(int TensorsWritten, int TensorCount, long Completed, long? Total) : IProgressReport
{
    /// <summary>Always <see cref="ProgressUnit.Bytes"/>.</summary>
    public ProgressUnit Unit => ProgressUnit.Bytes;

    /// <summary>The tensors finished, e.g. <c>12/291 tensors</c>.</summary>
    public string Status => $"{TensorsWritten}/{TensorCount} tensors";
}

/// <summary>
/// Writes random-weight checkpoints with the exact tensor names, shapes and config of a real model, so tests and
/// benchmarks exercise real sizes without downloading anything. Weights are N(0, 0.02), norms are ones; generation is
/// seeded and streams tensor by tensor (peak memory is about the largest tensor).
/// </summary>
public static class SyntheticCheckpoint
{
    /// <summary>Writes <c>config.json</c>, <c>generation_config.json</c> and the safetensors files into <paramref name="directory"/>.</summary>
    /// <param name="config">Architecture to synthesise (e.g. a preset of <c>ModelPresets</c>).</param>
    /// <param name="directory">Output folder (created).</param>
    /// <param name="dtype">Stored dtype: F32, BF16 or F16.</param>
    /// <param name="maxShardBytes">Largest shard size; <see cref="long.MaxValue"/> for a single file.</param>
    /// <param name="seed">Random seed: the same seed gives byte-identical files.</param>
    /// <param name="progress">Optional progress per tensor.</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="cancellationToken">Cancels the write; no file is left under a final name.</param>
    public static async Task WriteAsync(
        LlamaConfig config,
        string directory,
        SafetensorsDType dtype = SafetensorsDType.BF16,
        long maxShardBytes = long.MaxValue,
        int seed = 0,
        IProgress<SyntheticCheckpointProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (dtype is not (SafetensorsDType.F32 or SafetensorsDType.BF16 or SafetensorsDType.F16))
        {
            throw new ArgumentException($"Synthetic checkpoints are F32, BF16 or F16, not {dtype}.", nameof(dtype));
        }

        config.Validate();
        IReadOnlyList<TensorSpec> specs = LlamaTensorLayout.Tensors(config);
        CheckpointTensor[] declared = [.. specs.Select(s => new CheckpointTensor(s.Name, dtype, s.Shape))];
        Directory.CreateDirectory(directory);

        var generator = new torch.Generator((ulong)seed);
        await using (CheckpointWriter writer = CheckpointWriter.Create(directory, declared, new CheckpointWriterOptions { MaxShardBytes = maxShardBytes }, logger))
        {
            long written = 0;
            for (int i = 0; i < specs.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                TensorSpec spec = specs[i];
                using (var scope = torch.NewDisposeScope())
                {
                    torch.Tensor values = spec.Component == ParameterComponent.Norms && spec.Name.EndsWith(".weight", StringComparison.Ordinal)
                        ? torch.ones(spec.Shape, dtype: dtype.ToScalarType())
                        : torch.randn(spec.Shape, generator: generator).mul_(0.02).to(dtype.ToScalarType());
                    await writer.WriteTensorAsync(spec.Name, values, cancellationToken).ConfigureAwait(false);
                }

                written += declared[i].ByteLength;
                progress?.Report(new SyntheticCheckpointProgress(i + 1, specs.Count, written, writer.TotalTensorBytes));
            }

            await writer.CompleteAsync(cancellationToken).ConfigureAwait(false);
        }

        LlamaConfig stored = config with { TorchDtype = dtype.ToTorchDtypeName() };
        stored.Save(Path.Combine(directory, "config.json"));
        GenerationConfigFile.Write(directory, stored);
    }

    /// <summary>The <c>torch_dtype</c> name Hugging Face writes for a stored dtype.</summary>
    public static string ToTorchDtypeName(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.F32 => "float32",
        SafetensorsDType.BF16 => "bfloat16",
        SafetensorsDType.F16 => "float16",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a floating-point weight dtype"),
    };
}
