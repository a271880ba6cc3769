using ModelSurgery.Inference.Configuration;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Llama2C;

/// <summary>
/// A llama2.c checkpoint read into memory: its header, the equivalent Hugging Face config, and the fp32 tensors under their
/// Hugging Face names in <see cref="LlamaTensorLayout"/> order, with W_q and W_k already in the <c>rotate_half</c> layout.
/// Disposing it disposes the tensors.
/// </summary>
public sealed class Llama2CWeights : IDisposable
{
    private readonly Dictionary<string, Tensor> byName;

    internal Llama2CWeights(Llama2CHeader header, LlamaConfig config, IReadOnlyList<(string Name, Tensor Tensor)> tensors)
    {
        Header = header;
        Config = config;
        Tensors = tensors;
        byName = tensors.ToDictionary(t => t.Name, t => t.Tensor, StringComparer.Ordinal);
    }

    /// <summary>The header as stored in the file.</summary>
    public Llama2CHeader Header { get; }

    /// <summary>The Hugging Face config of the model.</summary>
    public LlamaConfig Config { get; }

    /// <summary>Every tensor, fp32 on the CPU, in <see cref="LlamaTensorLayout.Tensors"/> order.</summary>
    public IReadOnlyList<(string Name, Tensor Tensor)> Tensors { get; }

    /// <summary>The tensor called <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">The checkpoint has no such tensor.</exception>
    public Tensor Get(string name) => byName.TryGetValue(name, out Tensor? tensor)
        ? tensor
        : throw new KeyNotFoundException($"llama2.c checkpoint has no tensor '{name}'.");

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var (_, tensor) in Tensors)
        {
            tensor.Dispose();
        }
    }
}
