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
