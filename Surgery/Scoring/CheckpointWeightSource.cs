using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>A weight source over a safetensors checkpoint directory with its <c>config.json</c>; tensors are read on demand.</summary>
public sealed class CheckpointWeightSource : IWeightSource, IDisposable
{
    /// <summary>File name of the architecture next to the weights.</summary>
    public const string ConfigFileName = "config.json";

    private readonly CheckpointReader _reader;

    private CheckpointWeightSource(LlamaConfig config, CheckpointReader reader)
    {
        Config = config;
        _reader = reader;
    }

    /// <inheritdoc/>
    public LlamaConfig Config { get; }

    /// <inheritdoc/>
    public string Location => _reader.Location;

    /// <summary>The reader (for shapes and dtypes).</summary>
    public CheckpointReader Reader => _reader;

    /// <summary>Opens <paramref name="directory"/>: its <c>config.json</c> and its safetensors file(s).</summary>
    /// <exception cref="FileNotFoundException">The directory, its config or its weights are missing.</exception>
    /// <exception cref="InvalidDataException">The config or a header is invalid; the message names the file.</exception>
    public static CheckpointWeightSource Open(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        string configPath = Path.Combine(directory, ConfigFileName);
        if (!File.Exists(configPath))
        {
            throw new FileNotFoundException($"Checkpoint directory '{directory}' has no {ConfigFileName}.", configPath);
        }

        LlamaConfig config = LlamaConfig.Load(configPath);
        CheckpointReader reader = CheckpointReader.Open(directory);
        try
        {
            // A config that disagrees with the weights is refused here, naming config.json, not at the first odd tensor.
            Inference.Modeling.LlamaForCausalLM.CheckLayout(config, reader.TensorNames.ToDictionary(n => n, n => reader.GetInfo(n).Shape, StringComparer.Ordinal), configPath);
            return new CheckpointWeightSource(config, reader);
        }
        catch
        {
            reader.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public Tensor ReadTensor(string name)
    {
        if (!_reader.Contains(name))
        {
            throw new InvalidDataException($"{Location}: tensor {name} is missing.");
        }

        return _reader.ReadTensor(name);
    }

    /// <summary>Every tensor's name and shape (for whole-model loading).</summary>
    public IReadOnlyDictionary<string, long[]> Shapes() =>
        _reader.TensorNames.ToDictionary(n => n, n => _reader.GetInfo(n).Shape, StringComparer.Ordinal);

    /// <summary>Closes the checkpoint files.</summary>
    public void Dispose() => _reader.Dispose();
}
