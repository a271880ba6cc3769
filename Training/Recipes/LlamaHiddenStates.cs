using ModelSurgery.Inference.Modeling;
using ModelSurgery.Training.Distillation;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace ModelSurgery.Training.Recipes;

/// <summary>
/// Wraps a <see cref="LlamaForCausalLM"/> for training: <see cref="forward"/> returns its logits and
/// <see cref="ForwardWithHiddenStates"/> also returns the output of every decoder layer, from the model's own forward
/// pass (<see cref="LlamaForCausalLM.ForwardWithHiddenStates"/>), so attention windows and every other detail are the same.
/// Parameter names gain the prefix <c>llama.</c>; <see cref="Llama"/> is the wrapped model to save.
/// </summary>
/// <remarks>
/// Ids go to the model unchanged. A teacher with the full vocabulary reading a compressed student's ids is fed the
/// original ids by the distillation objective and the logit cache (their vocabulary map option), not by this wrapper.
/// </remarks>
public sealed class LlamaHiddenStates : nn.Module<Tensor, Tensor>, IHiddenStateModel
{
    [ComponentName(Name = "llama")]
    private readonly LlamaForCausalLM _llama;

    /// <summary>Wraps a model.</summary>
    /// <param name="llama">The model; disposing the wrapper disposes it.</param>
    public LlamaHiddenStates(LlamaForCausalLM llama)
        : base(nameof(LlamaHiddenStates))
    {
        ArgumentNullException.ThrowIfNull(llama);
        _llama = llama;
        RegisterComponents();
    }

    /// <summary>The wrapped model.</summary>
    public LlamaForCausalLM Llama => _llama;

    /// <summary>Logits [B, T, V] (float32) of ids [B, T].</summary>
    /// <param name="inputIds">[B, T] int64 ids.</param>
    /// <returns>[B, T, V] logits.</returns>
    public override Tensor forward(Tensor inputIds)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        using var scope = torch.NewDisposeScope();
        return _llama.forward(inputIds).MoveToOuterDisposeScope(); // [B, T, V]
    }

    /// <summary>Logits and the output of each decoder layer, in layer order.</summary>
    /// <param name="inputIds">[B, T] int64 ids.</param>
    /// <returns>Logits [B, T, V] (float32) and one [B, T, D] hidden state per layer (model dtype).</returns>
    public (Tensor Logits, IReadOnlyList<Tensor> Hidden) ForwardWithHiddenStates(Tensor inputIds) =>
        _llama.ForwardWithHiddenStates(inputIds);
}
