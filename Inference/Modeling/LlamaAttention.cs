using ModelSurgery.Inference.Configuration;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ModelSurgery.Inference.Modeling;

/// <summary>
/// Grouped-query self-attention of a Llama-family layer: q/k/v projections (with biases when
/// <see cref="LlamaConfig.HasQkvBias"/>), rotary embeddings on q and k, causal scaled dot-product attention (each group of
/// <see cref="LlamaConfig.QueryGroupSize"/> query heads shares one KV head, as Hugging Face's <c>repeat_kv</c>), and the
/// output projection (with a bias when <see cref="LlamaConfig.HasOutputBias"/>).
/// </summary>
public sealed class LlamaAttention : Module<Tensor, Tensor>
{
    [ComponentName(Name = "q_proj")]
    private readonly LlamaLinear _queryProjection;

    [ComponentName(Name = "k_proj")]
    private readonly LlamaLinear _keyProjection;

    [ComponentName(Name = "v_proj")]
    private readonly LlamaLinear _valueProjection;

    [ComponentName(Name = "o_proj")]
    private readonly LlamaLinear _outputProjection;

    private readonly LlamaRotaryEmbedding _rotary;
    private readonly int _heads;
    private readonly int _kvHeads;
    private readonly int _headDim;

    /// <summary>Creates the attention block of decoder layer <paramref name="layerIndex"/> (weights uninitialised).</summary>
    public LlamaAttention(LlamaConfig config, int layerIndex, LlamaRotaryEmbedding rotary, ScalarType dtype, Device device)
        : base("self_attn")
    {
        ArgumentNullException.ThrowIfNull(config);
        _heads = config.NumAttentionHeads;
        _kvHeads = config.NumKeyValueHeads;
        _headDim = config.HeadDim;
        LayerIndex = layerIndex;
        _rotary = rotary;
        long d = config.HiddenSize;
        _queryProjection = new LlamaLinear("q_proj", d, (long)_heads * _headDim, config.HasQkvBias, dtype, device);
        _keyProjection = new LlamaLinear("k_proj", d, (long)_kvHeads * _headDim, config.HasQkvBias, dtype, device);
        _valueProjection = new LlamaLinear("v_proj", d, (long)_kvHeads * _headDim, config.HasQkvBias, dtype, device);
        _outputProjection = new LlamaLinear("o_proj", (long)_heads * _headDim, d, config.HasOutputBias, dtype, device);
        RegisterComponents();
    }

    /// <summary>Index of the decoder layer (and of its KV cache slot).</summary>
    public int LayerIndex { get; }

    /// <summary>The query projection (<c>q_proj</c>).</summary>
    public LlamaLinear QueryProjection => _queryProjection;

    /// <summary>The key projection (<c>k_proj</c>).</summary>
    public LlamaLinear KeyProjection => _keyProjection;

    /// <summary>The value projection (<c>v_proj</c>).</summary>
    public LlamaLinear ValueProjection => _valueProjection;

    /// <summary>The output projection (<c>o_proj</c>).</summary>
    public LlamaLinear OutputProjection => _outputProjection;

    /// <summary>Attends causally over a whole sequence starting at position 0: [B, T, D] to [B, T, D].</summary>
    public override Tensor forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        using RotaryTables rope = _rotary.CreateTables(0, input.shape[1], input.dtype, input.device);
        return forward(input, rope, null);
    }

    /// <summary>
    /// Attends causally: [B, T, D] to [B, T, D]. <paramref name="rope"/> covers the T new positions; with a
    /// <paramref name="cache"/> its offset must equal the positions already cached for this layer, the new keys and
    /// values are appended and the queries also attend to every cached position.
    /// </summary>
    /// <exception cref="ArgumentException">The tables do not match the sequence or the cache.</exception>
    public Tensor forward(Tensor input, RotaryTables rope, KvCache? cache)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(rope);
        long batch = input.shape[0], length = input.shape[1];
        if (rope.Length != length)
        {
            throw new ArgumentException($"Layer {LayerIndex}: rotary tables cover {rope.Length} positions but the input has {length}.", nameof(rope));
        }

        if (cache is not null && cache.LengthOf(LayerIndex) != rope.PositionOffset)
        {
            throw new ArgumentException($"Layer {LayerIndex}: rotary tables start at position {rope.PositionOffset} but the KV cache holds {cache.LengthOf(LayerIndex)} positions.", nameof(rope));
        }

        using var scope = NewDisposeScope();
        Tensor queries = _queryProjection.forward(input).view(batch, length, _heads, _headDim).transpose(1, 2); // [B, H, T, hd]
        Tensor keys = _keyProjection.forward(input).view(batch, length, _kvHeads, _headDim).transpose(1, 2); // [B, KV, T, hd]
        Tensor values = _valueProjection.forward(input).view(batch, length, _kvHeads, _headDim).transpose(1, 2); // [B, KV, T, hd]
        queries = rope.Apply(queries); // [B, H, T, hd]
        keys = rope.Apply(keys); // [B, KV, T, hd]
        if (cache is not null)
        {
            (keys, values) = cache.Append(LayerIndex, keys, values); // [B, KV, S, hd]
        }

        int groupSize = _heads / _kvHeads;
        if (groupSize > 1)
        {
            // Query head h reads KV head h / groupSize, as Hugging Face's repeat_kv.
            keys = keys.repeat_interleave(groupSize, 1); // [B, H, S, hd]
            values = values.repeat_interleave(groupSize, 1); // [B, H, S, hd]
        }

        long keyLength = keys.shape[2];
        long offset = keyLength - length;
        Tensor attended;
        if (offset == 0)
        {
            attended = nn.functional.scaled_dot_product_attention(queries, keys, values, is_casual: length > 1); // [B, H, T, hd]
        }
        else if (length == 1)
        {
            // One new token may see every cached position.
            attended = nn.functional.scaled_dot_product_attention(queries, keys, values); // [B, H, 1, hd]
        }
        else
        {
            // Built-in causal masking aligns top-left; with cached positions query i sees keys 0..offset+i.
            Tensor keyPositions = torch.arange(keyLength, device: input.device).unsqueeze(0); // [1, S]
            Tensor queryPositions = torch.arange(offset, keyLength, device: input.device).unsqueeze(1); // [T, 1]
            Tensor allowed = keyPositions.le(queryPositions); // [T, S]
            attended = nn.functional.scaled_dot_product_attention(queries, keys, values, allowed); // [B, H, T, hd]
        }

        Tensor merged = attended.transpose(1, 2).reshape(batch, length, (long)_heads * _headDim); // [B, T, H*hd]
        return _outputProjection.forward(merged).MoveToOuterDisposeScope(); // [B, T, D]
    }
}
