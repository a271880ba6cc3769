using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Training;

/// <summary>Saves a model checkpoint (e.g. as safetensors with config) into a folder.</summary>
public interface IModelCheckpointer
{
    /// <summary>Writes the model's weights into <paramref name="directory"/>.</summary>
    /// <param name="model">The model.</param>
    /// <param name="directory">Target folder (created by the trainer).</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>A task that completes when the checkpoint is written.</returns>
    Task SaveAsync(nn.Module<Tensor, Tensor> model, string directory, CancellationToken cancellationToken);
}

/// <summary>An <see cref="IModelCheckpointer"/> made from a delegate.</summary>
/// <param name="save">Writes the model into a folder.</param>
public sealed class DelegateModelCheckpointer(Func<nn.Module<Tensor, Tensor>, string, CancellationToken, Task> save) : IModelCheckpointer
{
    private readonly Func<nn.Module<Tensor, Tensor>, string, CancellationToken, Task> _save = save ?? throw new ArgumentNullException(nameof(save));

    /// <inheritdoc />
    public Task SaveAsync(nn.Module<Tensor, Tensor> model, string directory, CancellationToken cancellationToken) => _save(model, directory, cancellationToken);
}
