using ModelSurgery.Inference.Modeling;
using ModelSurgery.Training.Distillation;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace ModelSurgery.Training.Recipes;

/// <summary>
/// Wraps a <see cref="LlamaForCausalLM"/> for training: <see cref="forward"/> returns its logits and
/// <see cref="ForwardWithHiddenStates"/> also returns the output of every decoder layer (embedding, then each layer with
/// rotary tables shared across layers, then the final norm and head, as <see cref="LlamaDecoderLayer"/> describes).
/// Parameter names gain the prefix <c>llama.</c>; <see cref="Llama"/> is the wrapped model to save.
/// </summary>
/// <remarks>
/// With <c>inputIdMap</c> the wrapper reads ids of a compressed vocabulary and feeds the model <c>inputIdMap[id]</c>:
/// this is how a teacher with the full vocabulary reads a student's token file (student id i is teacher id kept[i]).
/// </remarks>
public sealed class LlamaHiddenStates : nn.Module<Tensor, Tensor>, IHiddenStateModel
{
    [ComponentName(Name = "llama")]
    private readonly LlamaForCausalLM _llama;

    private readonly long[]? _inputIdMap;
    private Tensor? _inputIdIndex;

    /// <summary>Wraps a model.</summary>
    /// <param name="llama">The model; disposing the wrapper disposes it.</param>
    /// <param name="inputIdMap">Optional map from input ids to model ids (e.g. a vocabulary map's kept ids); null feeds ids unchanged.</param>
    /// <exception cref="ArgumentException">A mapped id is outside the model's vocabulary.</exception>
    public LlamaHiddenStates(LlamaForCausalLM llama, IReadOnlyList<long>? inputIdMap = null)
        : base(nameof(LlamaHiddenStates))
    {
        ArgumentNullException.ThrowIfNull(llama);
        if (inputIdMap is not null && inputIdMap.Any(id => id < 0 || id >= llama.Config.VocabSize))
        {
            throw new ArgumentException($"The input id map holds ids outside the model vocabulary of {llama.Config.VocabSize}.", nameof(inputIdMap));
        }

        _llama = llama;
        _inputIdMap = inputIdMap is null ? null : [.. inputIdMap];
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
        return _llama.forward(MapInputs(inputIds)).MoveToOuterDisposeScope(); // [B, T, V]
    }

    /// <summary>Logits and the output of each decoder layer, in layer order.</summary>
    /// <param name="inputIds">[B, T] int64 ids.</param>
    /// <returns>Logits [B, T, V] (float32) and one [B, T, D] hidden state per layer (model dtype).</returns>
    public (Tensor Logits, IReadOnlyList<Tensor> Hidden) ForwardWithHiddenStates(Tensor inputIds)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        using var scope = torch.NewDisposeScope();
        Tensor hidden = _llama.Embed(MapInputs(inputIds)); // [B, T, D]
        using RotaryTables rope = _llama.CreateRotaryTables(0, inputIds.shape[1]);
        var states = new List<Tensor>(_llama.Layers.Count);
        foreach (LlamaDecoderLayer layer in _llama.Layers)
        {
            hidden = layer.forward(hidden, rope); // [B, T, D]
            states.Add(hidden);
        }

        Tensor logits = _llama.FinalNormAndHead(hidden); // [B, T, V]
        foreach (Tensor state in states)
        {
            state.MoveToOuterDisposeScope();
        }

        return (logits.MoveToOuterDisposeScope(), states);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _inputIdIndex?.Dispose();
        }

        base.Dispose(disposing);
    }

    private Tensor MapInputs(Tensor inputIds)
    {
        if (_inputIdMap is null)
        {
            return inputIds.alias();
        }

        if (_inputIdIndex is null || _inputIdIndex.device != inputIds.device)
        {
            _inputIdIndex?.Dispose();
            _inputIdIndex = torch.tensor(_inputIdMap, ScalarType.Int64, inputIds.device).DetachFromDisposeScope(); // [Vs]
        }

        return _inputIdIndex.index_select(0, inputIds.reshape(-1)).reshape(inputIds.shape); // [B, T]
    }
}
