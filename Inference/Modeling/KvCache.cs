using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Modeling;

/// <summary>
/// Keys and values of past positions for incremental decoding: one preallocated [B, kvHeads, MaxLength, headDim] buffer
/// pair per decoder layer, filled front to back. Each layer tracks its own length, so a forward pass through all
/// layers advances <see cref="Length"/> by the number of new tokens. Meant for inference under <c>torch.no_grad()</c>.
/// The buffers live outside any dispose scope; dispose the cache to free them.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor?[] _keys;
    private readonly Tensor?[] _values;
    private readonly int[] _lengths;
    private DecodingBuffers? _rowBuffers;

    /// <summary>Creates an empty cache for <paramref name="layerCount"/> layers holding up to <paramref name="maxLength"/> positions.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A count is not positive.</exception>
    public KvCache(int layerCount, int maxLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layerCount);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxLength);
        _keys = new Tensor?[layerCount];
        _values = new Tensor?[layerCount];
        _lengths = new int[layerCount];
        MaxLength = maxLength;
    }

    /// <summary>Most positions the cache can hold.</summary>
    public int MaxLength { get; }

    /// <summary>Number of layers.</summary>
    public int LayerCount => _lengths.Length;

    /// <summary>Positions cached in layer 0: the position offset of the next token after a full forward pass.</summary>
    public int Length => _lengths[0];

    /// <summary>Positions cached in layer <paramref name="layer"/>.</summary>
    public int LengthOf(int layer) => _lengths[layer];

    /// <summary>
    /// Appends new keys and values [B, kvHeads, T, headDim] of <paramref name="layer"/> and returns views of everything
    /// cached for it so far, [B, kvHeads, length + T, headDim] each (owned by the caller's dispose scope).
    /// </summary>
    /// <exception cref="InvalidOperationException">The cache would exceed <see cref="MaxLength"/>.</exception>
    /// <exception cref="ArgumentException">The shapes differ from earlier appends.</exception>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor keys, Tensor values)
    {
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, LayerCount);
        if (keys.dim() != 4 || !KernelOperands.SameSizes(keys, values))
        {
            throw new ArgumentException($"KV cache layer {layer}: keys [{string.Join(", ", keys.shape)}] and values [{string.Join(", ", values.shape)}] must both be [B, kvHeads, T, headDim].", nameof(keys));
        }

        int length = _lengths[layer];
        long added = keys.size(2);
        if (length + added > MaxLength)
        {
            throw new InvalidOperationException($"KV cache layer {layer}: {length} cached + {added} new positions exceed the maximum length {MaxLength}.");
        }

        Tensor keyBuffer = _keys[layer] ??= Allocate(keys);
        Tensor valueBuffer = _values[layer] ??= Allocate(values);
        if (keyBuffer.size(0) != keys.size(0) || keyBuffer.size(1) != keys.size(1) || keyBuffer.size(3) != keys.size(3))
        {
            throw new ArgumentException($"KV cache layer {layer}: new keys [{string.Join(", ", keys.shape)}] do not match the cached [{string.Join(", ", keyBuffer.shape)}] in batch, heads or head size.", nameof(keys));
        }

        using (Tensor keySlot = keyBuffer.narrow(2, length, added)) // [B, KV, T, hd]
        using (Tensor valueSlot = valueBuffer.narrow(2, length, added)) // [B, KV, T, hd]
        {
            keySlot.copy_(keys);
            valueSlot.copy_(values);
        }

        _lengths[layer] = (int)(length + added);
        return (keyBuffer.narrow(2, 0, length + added), valueBuffer.narrow(2, 0, length + added)); // [B, KV, S, hd]
    }

    /// <summary>
    /// A decoding step's <see cref="Append"/> without LibTorch: when one new position's projected keys and values
    /// [B, 1, kvHeads * headDim] are contiguous fp32 or bf16 CPU rows needing no gradient and <paramref name="rope"/>
    /// holds that position's tables in memory in their dtype, writes the keys rotated by it and the values straight into
    /// the cache rows and returns true with the views <see cref="Append"/> returns; otherwise (or where
    /// <see cref="Append"/> would throw) writes nothing and returns false. The rotation rounds as
    /// <see cref="RotaryTables.Apply(Tensor)"/> does, so the cache holds the same bits either way.
    /// </summary>
    internal bool TryAppendRow(int layer, Tensor keys, Tensor values, long kvHeads, long headDim, RotaryTables rope, out Tensor cachedKeys, out Tensor cachedValues)
    {
        (cachedKeys, cachedValues) = (null!, null!);
        if (!TryWriteRow(layer, keys, values, kvHeads, headDim, rope))
        {
            return false;
        }

        int length = _lengths[layer];
        cachedKeys = _keys[layer]!.narrow(2, 0, length); // [B, KV, S, hd]
        cachedValues = _values[layer]!.narrow(2, 0, length); // [B, KV, S, hd]
        return true;
    }

    /// <summary>
    /// <see cref="TryAppendRow"/> without the views: the keys and values are written (and the length advanced) when it
    /// returns true, and the attention reads the buffers through <see cref="KeyBuffer"/> and <see cref="ValueBuffer"/>
    /// (a decoding step that creates no tensor).
    /// </summary>
    internal unsafe bool TryWriteRow(int layer, Tensor keys, Tensor values, long kvHeads, long headDim, RotaryTables rope)
    {
        int length = _lengths[layer];
        long batch = keys.size(0);
        if (length >= MaxLength || keys.dim() != 3 || keys.size(1) != 1 || keys.size(2) != kvHeads * headDim || headDim % 2 != 0
            || !KernelOperands.SameSizes(keys, values) || !KernelOperands.OnCpuInOneFloatType(keys, values)
            || !keys.is_contiguous() || !values.is_contiguous() || !KernelOperands.NeedNoGradient(keys, values)
            || !rope.TryRowAddresses(keys.dtype, headDim, out nint cos, out nint sin))
        {
            return false;
        }

        Tensor? keyBuffer = _keys[layer], valueBuffer = _values[layer];
        if (keyBuffer is not null && (keyBuffer.dtype != keys.dtype || keyBuffer.size(0) != batch || keyBuffer.size(1) != kvHeads || keyBuffer.size(3) != headDim))
        {
            return false;
        }

        keyBuffer ??= _keys[layer] = Allocate(batch, kvHeads, headDim, keys.dtype, keys.device);
        valueBuffer ??= _values[layer] = Allocate(batch, kvHeads, headDim, keys.dtype, keys.device);
        bool bf16 = keys.dtype == ScalarType.BFloat16;
        long rowBytes = headDim * (bf16 ? 2 : 4);
        byte* keySource = TensorMemory.DataPointer(keys), valueSource = TensorMemory.DataPointer(values);
        byte* keyTarget = TensorMemory.DataPointer(keyBuffer), valueTarget = TensorMemory.DataPointer(valueBuffer);
        for (long row = 0; row < batch * kvHeads; row++)
        {
            // Row (b, h) of the new position goes to [b, h, length, :] of the [B, KV, max, hd] buffers.
            long target = ((row * MaxLength) + length) * rowBytes;
            RowRotary.RotateRow(keySource + (row * rowBytes), keyTarget + target, (byte*)cos, (byte*)sin, headDim, bf16);
            Buffer.MemoryCopy(valueSource + (row * rowBytes), valueTarget + target, rowBytes, rowBytes);
        }

        _lengths[layer] = length + 1;
        return true;
    }

    /// <summary>The whole key buffer of <paramref name="layer"/>, [B, KV, MaxLength, hd], of which the first <see cref="LengthOf"/> positions are filled; null before the first append. Owned by the cache.</summary>
    internal Tensor? KeyBuffer(int layer) => _keys[layer];

    /// <summary>The whole value buffer of <paramref name="layer"/>, as <see cref="KeyBuffer"/>.</summary>
    internal Tensor? ValueBuffer(int layer) => _values[layer];

    /// <summary>
    /// The one-row activation buffers of this sequence's decoding steps for a model of <paramref name="config"/> in
    /// <paramref name="dtype"/>, made on first use and kept until <see cref="Dispose"/> (see <see cref="DecodingBuffers"/>
    /// for the rule of their lifetime).
    /// </summary>
    internal DecodingBuffers RowBuffers(LlamaConfig config, ScalarType dtype)
    {
        if (_rowBuffers is null || !_rowBuffers.Fits(config, dtype))
        {
            _rowBuffers?.Dispose();
            _rowBuffers = new DecodingBuffers(config, dtype);
        }

        return _rowBuffers;
    }

    /// <summary>Frees the buffers.</summary>
    public void Dispose()
    {
        for (int i = 0; i < LayerCount; i++)
        {
            _keys[i]?.Dispose();
            _values[i]?.Dispose();
            _keys[i] = null;
            _values[i] = null;
            _lengths[i] = 0;
        }

        _rowBuffers?.Dispose();
        _rowBuffers = null;
    }

    private Tensor Allocate(Tensor like) => Allocate(like.size(0), like.size(1), like.size(3), like.dtype, like.device);

    private Tensor Allocate(long batch, long kvHeads, long headDim, ScalarType dtype, Device device)
    {
        // The buffer outlives the step that first fills it, so it must not belong to that step's dispose scope.
        Tensor buffer = torch.zeros([batch, kvHeads, MaxLength, headDim], dtype, device); // [B, KV, max, hd]
        return buffer.DetachFromDisposeScope();
    }
}
