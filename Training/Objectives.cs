using ModelSurgery.Training.Data;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ModelSurgery.Training;

/// <summary>What a training step minimises, given the model and a batch.</summary>
public interface ITrainingObjective
{
    /// <summary>
    /// Extra trainable parameters the objective owns (e.g. hidden-state projections), named for the training state file.
    /// They are optimised with weight decay alongside the model. Empty for most objectives.
    /// </summary>
    IReadOnlyList<(string Name, Parameter Parameter)> Parameters { get; }

    /// <summary>The scalar float32 loss of <paramref name="batch"/> (with a gradient path to the model).</summary>
    /// <param name="model">The model being trained: ids [B, T] to logits [B, T, V].</param>
    /// <param name="batch">The batch.</param>
    /// <returns>A scalar tensor in the caller's dispose scope.</returns>
    Tensor Loss(nn.Module<Tensor, Tensor> model, TrainingBatch batch);
}

/// <summary>Next-token cross-entropy, the plain language-modelling loss.</summary>
public sealed class CrossEntropyObjective : ITrainingObjective
{
    /// <summary>The shared instance.</summary>
    public static CrossEntropyObjective Instance { get; } = new();

    /// <inheritdoc />
    public IReadOnlyList<(string Name, Parameter Parameter)> Parameters => [];

    /// <summary>Mean next-token cross-entropy of logits against targets.</summary>
    /// <param name="logits">[B, T, V] logits (any float dtype; computed in float32).</param>
    /// <param name="targets">[B, T] int64 target ids.</param>
    /// <returns>Scalar loss.</returns>
    public static Tensor Compute(Tensor logits, Tensor targets)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(targets);
        long vocab = logits.shape[^1];
        using Tensor flat = logits.to(ScalarType.Float32).reshape(-1, vocab); // [B*T, V]
        using Tensor target = targets.reshape(-1); // [B*T]
        return nn.functional.cross_entropy(flat, target);
    }

    /// <inheritdoc />
    public Tensor Loss(nn.Module<Tensor, Tensor> model, TrainingBatch batch)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batch);
        using Tensor logits = model.forward(batch.Inputs); // [B, T, V]
        return Compute(logits, batch.Targets);
    }
}

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

/// <summary>Splits parameters into AdamW groups with and without weight decay.</summary>
public static class WeightDecayGroups
{
    /// <summary>
    /// True for parameters that must not decay: biases (name ends in <c>.bias</c>) and norm weights (the module name
    /// before <c>.weight</c> contains "norm", e.g. <c>model.norm.weight</c>, <c>input_layernorm.weight</c>).
    /// </summary>
    /// <param name="name">Parameter name (HF style).</param>
    /// <returns>Whether the parameter is excluded from weight decay.</returns>
    public static bool IsExcluded(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name == "bias" || name.EndsWith(".bias", StringComparison.Ordinal))
        {
            return true;
        }

        if (!name.EndsWith("weight", StringComparison.Ordinal))
        {
            return false;
        }

        string owner = name.EndsWith(".weight", StringComparison.Ordinal) ? name[..^".weight".Length] : string.Empty;
        string last = owner[(owner.LastIndexOf('.') + 1)..];
        return last.Contains("norm", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>Splits named parameters into (decayed, not decayed) lists, keeping order.</summary>
    /// <param name="parameters">Named parameters.</param>
    /// <returns>The two groups.</returns>
    public static (IReadOnlyList<(string Name, Parameter Parameter)> Decay, IReadOnlyList<(string Name, Parameter Parameter)> NoDecay) Split(
        IEnumerable<(string Name, Parameter Parameter)> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var decay = new List<(string, Parameter)>();
        var noDecay = new List<(string, Parameter)>();
        foreach ((string name, Parameter p) in parameters)
        {
            (IsExcluded(name) ? noDecay : decay).Add((name, p));
        }

        return (decay, noDecay);
    }
}
