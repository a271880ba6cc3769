using ModelSurgery.Inference.Configuration;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ModelSurgery.Inference.Modeling;

/// <summary>
/// One pre-norm decoder layer: <c>h = x + attn(norm1(x))</c>, <c>out = h + mlp(norm2(h))</c>.
/// </summary>
/// <remarks>
/// <para>Layer-by-layer use (scoring, probing): take <c>hidden = model.Embed(ids)</c>, then for each layer of
/// <see cref="LlamaForCausalLM.Layers"/> call <c>hidden = layer.forward(hidden, positionOffset, cache)</c>, or, to build
/// them once for all layers, pass shared <see cref="RotaryTables"/> from <see cref="LlamaForCausalLM.CreateRotaryTables"/>
/// and one <see cref="AttentionMasks"/>; finish with <see cref="LlamaForCausalLM.FinalNormAndHead"/>. Without a cache, the
/// position offset is usually 0; with one it must equal the positions already cached for this layer, and the layer
/// appends its keys and values. Each layer applies its own attention window (<see cref="LlamaAttention.Window"/>).</para>
/// <para><see cref="LayerTaps"/> gate heads, neurons and channels inside this same forward pass and observe its
/// intermediate activations; this is the only implementation of the layer's arithmetic.</para>
/// </remarks>
public sealed class LlamaDecoderLayer : Module<Tensor, Tensor>
{
    [ComponentName(Name = "input_layernorm")]
    private readonly LlamaRmsNorm _inputNorm;

    [ComponentName(Name = "self_attn")]
    private readonly LlamaAttention _attention;

    [ComponentName(Name = "post_attention_layernorm")]
    private readonly LlamaRmsNorm _postAttentionNorm;

    [ComponentName(Name = "mlp")]
    private readonly LlamaMlp _mlp;

    private readonly LlamaRotaryEmbedding _rotary;

    /// <summary>Creates decoder layer <paramref name="layerIndex"/> (projection weights uninitialised, norms at one).</summary>
    public LlamaDecoderLayer(LlamaConfig config, int layerIndex, LlamaRotaryEmbedding rotary, ScalarType dtype, Device device)
        : base(layerIndex.ToString(System.Globalization.CultureInfo.InvariantCulture))
    {
        ArgumentNullException.ThrowIfNull(config);
        LayerIndex = layerIndex;
        _rotary = rotary;
        _inputNorm = new LlamaRmsNorm("input_layernorm", config.HiddenSize, config.RmsNormEps, dtype, device);
        _attention = new LlamaAttention(config, layerIndex, rotary, dtype, device);
        _postAttentionNorm = new LlamaRmsNorm("post_attention_layernorm", config.HiddenSize, config.RmsNormEps, dtype, device);
        _mlp = new LlamaMlp(config, dtype, device);
        RegisterComponents();
    }

    /// <summary>Index of this layer in the model.</summary>
    public int LayerIndex { get; }

    /// <summary>The norm before attention (<c>input_layernorm</c>).</summary>
    public LlamaRmsNorm InputNorm => _inputNorm;

    /// <summary>The attention block (<c>self_attn</c>).</summary>
    public LlamaAttention Attention => _attention;

    /// <summary>The norm before the MLP (<c>post_attention_layernorm</c>).</summary>
    public LlamaRmsNorm PostAttentionNorm => _postAttentionNorm;

    /// <summary>The feed-forward block (<c>mlp</c>).</summary>
    public LlamaMlp Mlp => _mlp;

    /// <summary>Runs the layer over a whole sequence from position 0 without a cache: [B, T, D] to [B, T, D].</summary>
    public override Tensor forward(Tensor input) => forward(input, 0, null);

    /// <summary>
    /// Runs the layer on hidden states [B, T, D] of positions [<paramref name="positionOffset"/>, offset + T), appending
    /// to <paramref name="cache"/> when given; returns [B, T, D].
    /// </summary>
    public Tensor forward(Tensor hidden, long positionOffset, KvCache? cache = null)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        using RotaryTables rope = _rotary.CreateTables(positionOffset, hidden.shape[1], hidden.dtype, hidden.device);
        return forward(hidden, rope, cache);
    }

    /// <summary>
    /// Runs the layer with precomputed rotary tables (shared by all layers of one forward pass): [B, T, D] to [B, T, D].
    /// <paramref name="masks"/> shares attention masks across those layers; <paramref name="taps"/> applies gates and
    /// observes the intermediate activations (see <see cref="LayerTaps"/>).
    /// </summary>
    public Tensor forward(Tensor hidden, RotaryTables rope, KvCache? cache = null, AttentionMasks? masks = null, LayerTaps? taps = null) =>
        ForwardWithBuffers(hidden, rope, cache, masks, taps, null);

    /// <summary>
    /// As <see cref="forward(Tensor, RotaryTables, KvCache?, AttentionMasks?, LayerTaps?)"/>. When <paramref name="hidden"/>
    /// is <paramref name="buffers"/>' <see cref="DecodingBuffers.Hidden"/> (a decoding step of <see cref="LlamaModel"/>,
    /// which owns that row), with a cache and no taps, the kernels write every intermediate into the buffers and update
    /// the residual stream in place, so the layer returns that same tensor and makes none; otherwise the buffers are not used.
    /// </summary>
    internal Tensor ForwardWithBuffers(Tensor hidden, RotaryTables rope, KvCache? cache, AttentionMasks? masks, LayerTaps? taps, DecodingBuffers? buffers)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        if (buffers is not null && (taps is not null || cache is null || !ReferenceEquals(hidden, buffers.Hidden)))
        {
            // The in-place residual would overwrite a tensor the caller owns, or the taps need tensors of their own.
            buffers = null;
        }

        // With buffers the kernels make no tensor; what a fallback makes belongs to the step's scope (LlamaModel's).
        using DisposeScope? scope = buffers is null ? NewDisposeScope() : null;
        bool capture = taps?.Observer is not null;
        Tensor? channelGates = taps?.ChannelGates;

        // Without channel gates the residual adds are the projections' epilogues (one pass fewer over the row when the
        // decoding kernels compute them); with gates the gated outputs are added here.
        bool addInProjections = channelGates is null;
        Tensor attentionInput = _inputNorm.ForwardInto(hidden, buffers?.Normed); // [B, T, D]
        (Tensor attended, Tensor? headOutputs, Tensor? merged) = _attention.Attend(attentionInput, rope, cache, masks, taps?.HeadGates, capture, addInProjections ? hidden : null, buffers); // [B, T, D]
        Tensor residual = addInProjections ? attended : hidden + (attended * channelGates!); // [B, T, D]
        Tensor mlpInput = _postAttentionNorm.ForwardInto(residual, buffers?.Normed); // [B, T, D]
        (Tensor transformed, Tensor? activation) = _mlp.Transform(mlpInput, taps?.NeuronGates, capture, addInProjections ? residual : null, buffers); // [B, T, D]
        if (capture)
        {
            taps!.Observer!(new LayerActivations(attentionInput, headOutputs!, merged!, mlpInput, activation!));
        }

        return (addInProjections ? transformed : residual + (transformed * channelGates!)).MoveToOuterDisposeScope(); // [B, T, D]
    }
}
