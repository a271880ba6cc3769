using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ModelSurgery.Inference.Modeling;

/// <summary>
/// Grouped-query self-attention of a Llama-family layer: q/k/v projections (with biases when
/// <see cref="LlamaConfig.HasQkvBias"/>), rotary embeddings on q and k, causal scaled dot-product attention (each group of
/// <see cref="LlamaConfig.QueryGroupSize"/> query heads shares one KV head, as Hugging Face's <c>repeat_kv</c>), limited to
/// the layer's <see cref="Window"/> when the config gives it one, and the output projection (with a bias when
/// <see cref="LlamaConfig.HasOutputBias"/>).
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
        Window = config.AttentionWindow(layerIndex);
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

    /// <summary>
    /// The sliding window of this layer (<see cref="LlamaConfig.AttentionWindow"/>): a query sees only the
    /// <see cref="Window"/> most recent positions, its own included; null for full causal attention.
    /// </summary>
    public int? Window { get; }

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
    /// Attends causally (within <see cref="Window"/>): [B, T, D] to [B, T, D]. <paramref name="rope"/> covers the T new
    /// positions; with a <paramref name="cache"/> its offset must equal the positions already cached for this layer, the
    /// new keys and values are appended and the queries also attend to the cached positions. <paramref name="masks"/>
    /// shares masks across the layers of one forward pass; without it this call builds its own when it needs one.
    /// </summary>
    /// <exception cref="ArgumentException">The tables do not match the sequence or the cache.</exception>
    public Tensor forward(Tensor input, RotaryTables rope, KvCache? cache, AttentionMasks? masks = null)
    {
        using var scope = NewDisposeScope();
        return Attend(input, rope, cache, masks, null, capture: false).Output.MoveToOuterDisposeScope(); // [B, T, D]
    }

    /// <summary>
    /// The attention output [B, T, D] (plus <paramref name="residual"/> [B, T, D] when given) and, when
    /// <paramref name="capture"/>, the per-head outputs [B, H, T, hd] (after <paramref name="headGates"/>) and the merged
    /// heads [B, T, H*hd]; all three in the caller's dispose scope. With <paramref name="buffers"/> (a decoding step of one
    /// row whose residual stream is <see cref="DecodingBuffers.Hidden"/>, with a cache, no head gates, no capture) the
    /// kernels write every intermediate into the buffers, the attention reads the cache's buffers in place, and the output
    /// is <see cref="DecodingBuffers.Hidden"/>: no tensor is made where the kernels apply.
    /// </summary>
    internal (Tensor Output, Tensor? HeadOutputs, Tensor? MergedHeads) Attend(Tensor input, RotaryTables rope, KvCache? cache, AttentionMasks? masks, Tensor? headGates, bool capture, Tensor? residual = null, DecodingBuffers? buffers = null)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(rope);
        long batch = input.size(0), length = input.size(1);
        if (rope.Length != length)
        {
            throw new ArgumentException($"Layer {LayerIndex}: rotary tables cover {rope.Length} positions but the input has {length}.", nameof(rope));
        }

        if (cache is not null && cache.LengthOf(LayerIndex) != rope.PositionOffset)
        {
            throw new ArgumentException($"Layer {LayerIndex}: rotary tables start at position {rope.PositionOffset} but the KV cache holds {cache.LengthOf(LayerIndex)} positions.", nameof(rope));
        }

        // With buffers the kernels make no tensor; what a fallback makes belongs to the step's scope (LlamaModel's).
        using DisposeScope? scope = buffers is null ? NewDisposeScope() : null;
        (Tensor projectedQueries, Tensor projectedKeys, Tensor projectedValues) = Project(input, buffers); // [B, T, H*hd], [B, T, KV*hd] x 2
        // One position: [B, 1, H*hd] is already laid out as [B, H, 1, hd], so one view replaces a view and a transpose.
        Tensor queries = buffers is not null && ReferenceEquals(projectedQueries, buffers.Queries)
            ? buffers.QueryHeads
            : length == 1
            ? projectedQueries.view(batch, _heads, 1, _headDim)
            : projectedQueries.view(batch, length, _heads, _headDim).transpose(1, 2); // [B, H, T, hd]
        queries = rope.Apply(queries, buffers?.RotatedQueries); // [B, H, T, hd]
        Tensor keys, values;
        if (buffers is not null && cache is not null && length == 1 && headGates is null
            && cache.TryWriteRow(LayerIndex, projectedKeys, projectedValues, _kvHeads, _headDim, rope))
        {
            // The keys and values are in the cache: attend over its buffers in place (no views), within the window.
            Tensor keyBuffer = cache.KeyBuffer(LayerIndex)!, valueBuffer = cache.ValueBuffer(LayerIndex)!; // [B, KV, max, hd]
            long cached = cache.LengthOf(LayerIndex);
            long first = FirstKeyInWindow(cached, length);
            if (OneQueryAttention.AppliesOverCache(queries, keyBuffer, valueBuffer))
            {
                Tensor step = OneQueryAttention.ComputeOverCache(queries, keyBuffer, valueBuffer, first, cached - first, buffers.Attended); // [B, H, 1, hd]
                return Finish(step, batch, length, capture, residual, buffers);
            }

            keys = keyBuffer.narrow(2, 0, cached); // [B, KV, S, hd]
            values = valueBuffer.narrow(2, 0, cached); // [B, KV, S, hd]
        }
        else if (cache is null || length != 1
            || !cache.TryAppendRow(LayerIndex, projectedKeys, projectedValues, _kvHeads, _headDim, rope, out keys, out values)) // [B, KV, S, hd]
        {
            keys = rope.Apply(projectedKeys.view(batch, length, _kvHeads, _headDim).transpose(1, 2)); // [B, KV, T, hd]
            values = projectedValues.view(batch, length, _kvHeads, _headDim).transpose(1, 2); // [B, KV, T, hd]
            if (cache is not null)
            {
                (keys, values) = cache.Append(LayerIndex, keys, values); // [B, KV, S, hd]
            }
        }

        long keyLength = keys.size(2);
        if (FirstKeyInWindow(keyLength, length) is long unseen and > 0)
        {
            // Drop the keys no query of this chunk sees before repeat_kv, so a decoding step costs O(window) however long
            // the cache is.
            keyLength -= unseen;
            keys = keys.narrow(2, unseen, keyLength); // [B, KV, S', hd]
            values = values.narrow(2, unseen, keyLength); // [B, KV, S', hd]
        }

        long offset = keyLength - length;
        bool windowMasks = Window is int limit && keyLength > limit;
        if (length == 1 && !windowMasks && headGates is null && OneQueryAttention.Applies(queries, keys, values))
        {
            // A decoding step on the CPU: one query over the cache in managed code, grouped heads read in place.
            Tensor step = OneQueryAttention.Compute(queries, keys, values, buffers?.Attended); // [B, H, 1, hd]
            return Finish(step, batch, length, capture, residual, buffers);
        }

        int groupSize = _heads / _kvHeads;
        if (groupSize > 1)
        {
            // Query head h reads KV head h / groupSize, as Hugging Face's repeat_kv.
            keys = keys.repeat_interleave(groupSize, 1); // [B, H, S, hd]
            values = values.repeat_interleave(groupSize, 1); // [B, H, S, hd]
        }

        // The mask [T, S] of these queries over these keys, shared across the forward's layers when masks are given.
        Tensor Allowed(int? window) => masks?.Get(length, keyLength, window, input.device) ?? AttentionMasks.Build(length, keyLength, window, input.device);

        Tensor attended;
        if (offset == 0 && queries.requires_grad && EagerAttention.AppliesInTraining(queries.dtype, queries.device_type, keyLength))
        {
            // Training in bf16 on the CPU over short sequences: the fused kernel's backward is the slower one there.
            attended = EagerAttention.Compute(queries, keys, values, Allowed(windowMasks ? Window : null)); // [B, H, T, hd]
        }
        else if (Window is int w && keyLength > w)
        {
            // The window hides at least one key from the last query; the built-in causal flag cannot express that.
            attended = nn.functional.scaled_dot_product_attention(queries, keys, values, Allowed(w)); // [B, H, T, hd]
        }
        else if (offset == 0)
        {
            attended = nn.functional.scaled_dot_product_attention(queries, keys, values, is_casual: length > 1); // [B, H, T, hd]
        }
        else if (length == 1)
        {
            // One new token may see every remaining position.
            attended = nn.functional.scaled_dot_product_attention(queries, keys, values); // [B, H, 1, hd]
        }
        else
        {
            // Built-in causal masking aligns top-left; with cached positions query i sees keys 0..offset+i.
            attended = nn.functional.scaled_dot_product_attention(queries, keys, values, Allowed(null)); // [B, H, T, hd]
        }

        if (headGates is not null)
        {
            attended = attended * headGates.view(1, _heads, 1, 1); // [B, H, T, hd]
        }

        return Finish(attended, batch, length, capture, residual, buffers);
    }

    // The first of `keyLength` keys that a query of the last `length` positions can see: with a window, no query reaches
    // further back than window - 1 positions before the chunk's first one; without one, 0.
    private long FirstKeyInWindow(long keyLength, long length) => Window is int window ? Math.Max(0, keyLength - length - window + 1) : 0;

    // The q, k and v projections of the input; one row on the CPU (a decoding step) computes all three in one parallel
    // region, bit for bit as the three separate calls would (into the step's buffers when given).
    private (Tensor Queries, Tensor Keys, Tensor Values) Project(Tensor input, DecodingBuffers? buffers)
    {
        Tensor? queryBias = _queryProjection.Bias, keyBias = _keyProjection.Bias, valueBias = _valueProjection.Bias;
        if (RowProjection.Applies(input, _queryProjection.Weight, queryBias) && RowProjection.Applies(input, _keyProjection.Weight, keyBias)
            && RowProjection.Applies(input, _valueProjection.Weight, valueBias))
        {
            Tensor[] projected = RowProjection.ComputeMany(input, [(_queryProjection.Weight, queryBias), (_keyProjection.Weight, keyBias), (_valueProjection.Weight, valueBias)], torch.get_num_threads(), buffers?.Projections);
            return (projected[0], projected[1], projected[2]);
        }

        return (_queryProjection.forward(input), _keyProjection.forward(input), _valueProjection.forward(input));
    }

    // Merges the heads [B, H, T, hd] and projects them (adding the residual when given): the output [B, T, D] and, when
    // capturing, the heads and the merged heads, all moved to the caller's dispose scope. With buffers, the merged heads
    // are the buffers' view of the attention output and the output (with the residual) goes into the residual stream.
    private (Tensor Output, Tensor? HeadOutputs, Tensor? MergedHeads) Finish(Tensor attended, long batch, long length, bool capture, Tensor? residual, DecodingBuffers? buffers)
    {
        // One contiguous position [B, H, 1, hd] is laid out as [B, 1, H*hd] already: one view instead of two ops.
        Tensor merged = buffers is not null && ReferenceEquals(attended, buffers.Attended)
            ? buffers.MergedHeads
            : length == 1 && attended.is_contiguous()
            ? attended.view(batch, 1, (long)_heads * _headDim)
            : attended.transpose(1, 2).reshape(batch, length, (long)_heads * _headDim); // [B, T, H*hd]
        Tensor projected = residual is null ? _outputProjection.forward(merged) : _outputProjection.ForwardAdding(merged, residual, buffers?.Hidden); // [B, T, D]
        Tensor output = projected.MoveToOuterDisposeScope(); // [B, T, D]
        return capture
            ? (output, attended.MoveToOuterDisposeScope(), merged.MoveToOuterDisposeScope())
            : (output, null, null);
    }
}
