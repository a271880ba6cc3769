using ModelSurgery.Inference.Configuration;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Modeling;

/// <summary>
/// The one-row activations of a decoding step (batch 1, one token, CPU, fp32 or bf16), allocated once per sequence and
/// held by its <see cref="KvCache"/>: the decoding kernels write into them in place, so a step creates no tensor per layer.
/// </summary>
/// <remarks>
/// <para>Lifetime rule. The tensors belong to this object, never to a dispose scope (they are detached when made), and are
/// freed only by <see cref="Dispose"/> (through <see cref="KvCache.Dispose"/>). They are scratch of one step of
/// <see cref="LlamaForCausalLM.NextTokenLogits"/>: each is overwritten by the next layer (or the next step) that writes it,
/// so no tensor of this object may leave the model's step, be kept past the layer that reads it, or be disposed by anyone
/// else. The step returns fresh logits; nothing here is handed to a caller.</para>
/// <para>Aliasing within a layer (<see cref="LlamaDecoderLayer"/>): <see cref="Hidden"/> is the residual stream, which the
/// o and down projections update in place (their residual epilogue reads each element before writing it);
/// <see cref="Normed"/> holds the input norm's output until q, k and v have read it, then the post-attention norm's until
/// gate and up have read it, then the final norm's; the other buffers are written and read once per layer.</para>
/// </remarks>
internal sealed class DecodingBuffers : IDisposable
{
    private readonly List<Tensor> _owned = [];

    /// <summary>Allocates the buffers for one row of <paramref name="config"/>'s shapes in <paramref name="dtype"/> on the CPU.</summary>
    public DecodingBuffers(LlamaConfig config, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(config);
        long hidden = config.HiddenSize, heads = config.NumAttentionHeads, kvHeads = config.NumKeyValueHeads, headDim = config.HeadDim;
        DType = dtype;
        Config = config;
        using var scope = NewDisposeScope();
        Hidden = Own(torch.empty([1, 1, hidden], dtype)); // [1, 1, D]
        Normed = Own(torch.empty([1, 1, hidden], dtype)); // [1, 1, D]
        Queries = Own(torch.empty([1, 1, heads * headDim], dtype)); // [1, 1, H*hd]
        QueryHeads = Own(Queries.view(1, heads, 1, headDim)); // [1, H, 1, hd], a view of Queries
        RotatedQueries = Own(torch.empty([1, heads, 1, headDim], dtype)); // [1, H, 1, hd]
        Keys = Own(torch.empty([1, 1, kvHeads * headDim], dtype)); // [1, 1, KV*hd]
        Values = Own(torch.empty([1, 1, kvHeads * headDim], dtype)); // [1, 1, KV*hd]
        Attended = Own(torch.empty([1, heads, 1, headDim], dtype)); // [1, H, 1, hd]
        MergedHeads = Own(Attended.view(1, 1, heads * headDim)); // [1, 1, H*hd], a view of Attended
        Activation = Own(torch.empty([1, 1, config.IntermediateSize], dtype)); // [1, 1, F]
        Projections = [Queries, Keys, Values];
    }

    /// <summary>The config the shapes come from.</summary>
    public LlamaConfig Config { get; }

    /// <summary>The dtype of every buffer.</summary>
    public ScalarType DType { get; }

    /// <summary>The residual stream: the embedded token, then each layer's output, updated in place. [1, 1, D].</summary>
    public Tensor Hidden { get; }

    /// <summary>A norm's output (input norm, post-attention norm, final norm in turn). [1, 1, D].</summary>
    public Tensor Normed { get; }

    /// <summary>The projected queries. [1, 1, H*hd].</summary>
    public Tensor Queries { get; }

    /// <summary><see cref="Queries"/> seen as heads. [1, H, 1, hd].</summary>
    public Tensor QueryHeads { get; }

    /// <summary>The queries after the rotary embedding. [1, H, 1, hd].</summary>
    public Tensor RotatedQueries { get; }

    /// <summary>The projected keys before rotation (the cache holds them rotated). [1, 1, KV*hd].</summary>
    public Tensor Keys { get; }

    /// <summary>The projected values. [1, 1, KV*hd].</summary>
    public Tensor Values { get; }

    /// <summary><see cref="Queries"/>, <see cref="Keys"/> and <see cref="Values"/> in that order, the outputs of the fused q/k/v product.</summary>
    public Tensor[] Projections { get; }

    /// <summary>The attention output per head. [1, H, 1, hd].</summary>
    public Tensor Attended { get; }

    /// <summary><see cref="Attended"/> with the heads side by side, the input of <c>o_proj</c>. [1, 1, H*hd].</summary>
    public Tensor MergedHeads { get; }

    /// <summary>SwiGLU's <c>silu(gate) * up</c>, the input of <c>down_proj</c>. [1, 1, F].</summary>
    public Tensor Activation { get; }

    /// <summary>Whether these buffers fit a model of <paramref name="config"/> in <paramref name="dtype"/>.</summary>
    public bool Fits(LlamaConfig config, ScalarType dtype) => ReferenceEquals(config, Config) && dtype == DType;

    /// <summary>Frees the buffers.</summary>
    public void Dispose()
    {
        foreach (Tensor tensor in _owned)
        {
            tensor.Dispose();
        }

        _owned.Clear();
    }

    private Tensor Own(Tensor tensor)
    {
        // Outlives the step that makes it: out of every dispose scope, freed by Dispose.
        _owned.Add(tensor.DetachFromDisposeScope());
        return tensor;
    }
}
