using ModelSurgery.Inference.Configuration;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// Where scoring reads a model's weights from, one tensor at a time, so that a model larger than memory can be scored
/// layer by layer. Names are the Hugging Face keys of <see cref="LlamaTensorLayout"/>.
/// </summary>
public interface IWeightSource
{
    /// <summary>The architecture of the weights.</summary>
    LlamaConfig Config { get; }

    /// <summary>Where the weights come from (a path or a description), for messages and score provenance.</summary>
    string Location { get; }

    /// <summary>Reads one tensor by name; the caller owns (and disposes) the result.</summary>
    /// <exception cref="InvalidDataException">The tensor is missing; the message names it and <see cref="Location"/>.</exception>
    Tensor ReadTensor(string name);
}

/// <summary>A weight source over tensors already in memory (e.g. a model's state dict); reads return views, not copies.</summary>
public sealed class StateDictWeightSource : IWeightSource
{
    private readonly IReadOnlyDictionary<string, Tensor> _tensors;

    /// <summary>Wraps <paramref name="tensors"/>, which stay owned by the caller and must outlive this source.</summary>
    public StateDictWeightSource(LlamaConfig config, IReadOnlyDictionary<string, Tensor> tensors, string location = "state dict")
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tensors);
        Config = config;
        _tensors = tensors;
        Location = location;
    }

    /// <inheritdoc/>
    public LlamaConfig Config { get; }

    /// <inheritdoc/>
    public string Location { get; }

    /// <inheritdoc/>
    public Tensor ReadTensor(string name)
    {
        if (!_tensors.TryGetValue(name, out Tensor? tensor))
        {
            throw new InvalidDataException($"{Location}: tensor {name} is missing.");
        }

        // A detached handle shares storage; disposing it leaves the caller's tensor alive.
        return tensor.detach();
    }
}
