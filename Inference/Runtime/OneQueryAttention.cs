using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ModelSurgery.Inference.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Runtime;

/// <summary>
/// Scaled dot-product attention of one query position over every cached key, <c>softmax(q Kᵀ / √hd) V</c> per head,
/// computed in managed code on the CPU: what a decoding step needs, without LibTorch's per-head matrix calls (its bf16
/// attention sends each head's one-row products through a generic bf16 gemv) or the repeat of grouped key/value heads.
/// </summary>
/// <remarks>
/// Scores, softmax and the weighted sum of values are in fp32 whatever the dtype (bf16 keys and values widen exactly);
/// the result is rounded once to the dtype. Query head h reads key/value head h / (H / KV), as Hugging Face's repeat_kv.
/// </remarks>
internal static unsafe class OneQueryAttention
{
    /// <summary>
    /// Whether <see cref="Compute"/> applies: fp32 or bf16 CPU tensors of one dtype, queries [B, H, 1, hd], keys and
    /// values [B, KV, S, hd] with S ≥ 1, H a multiple of KV, unit stride along hd (the cache's narrowed views qualify),
    /// and no gradient to track.
    /// </summary>
    public static bool Applies(Tensor queries, Tensor keys, Tensor values)
    {
        if (!KernelOperands.OnCpuInOneFloatType(queries, keys, values)
            || queries.dim() != 4 || keys.dim() != 4 || values.dim() != 4 || queries.size(2) != 1)
        {
            return false;
        }

        long batch = queries.size(0), heads = queries.size(1), headDim = queries.size(3);
        if (!KernelOperands.SameSizes(keys, values) || keys.size(0) != batch || keys.size(3) != headDim || keys.size(2) == 0
            || keys.size(1) == 0 || heads % keys.size(1) != 0 || headDim == 0 || keys.stride(3) != 1 || values.stride(3) != 1)
        {
            return false;
        }

        return KernelOperands.NeedNoGradient(queries, keys, values);
    }

    /// <summary>
    /// The attention output [B, H, 1, hd] in the queries' dtype, for inputs where <see cref="Applies"/> holds; written into
    /// <paramref name="output"/> (contiguous, the queries' dtype and size) when given.
    /// </summary>
    public static Tensor Compute(Tensor queries, Tensor keys, Tensor values, Tensor? output = null)
    {
        long elementSize = queries.dtype == ScalarType.BFloat16 ? 2 : 4;
        // The rotated queries are contiguous already; only a strided view pays for a copy (and a tensor handle).
        using Tensor? copied = queries.is_contiguous() ? null : queries.contiguous(); // [B, H, 1, hd]
        output ??= torch.empty(queries.shape, queries.dtype, queries.device); // [B, H, 1, hd]

        // The keys and values are views into the cache's larger buffers: address them through their strides from the
        // first element, which the cache's contiguous storage holds (a narrow keeps the storage and moves the offset).
        return Run(
            copied ?? queries,
            ElementAddress(keys),
            (keys.stride(0) * elementSize, keys.stride(1) * elementSize, keys.stride(2) * elementSize),
            ElementAddress(values),
            (values.stride(0) * elementSize, values.stride(1) * elementSize, values.stride(2) * elementSize),
            keys.size(1),
            keys.size(2),
            output);
    }

    /// <summary>
    /// Whether <see cref="ComputeOverCache"/> applies: contiguous fp32 or bf16 CPU queries [B, H, 1, hd] and whole cache
    /// buffers [B, KV, max, hd] of their dtype, contiguous, H a multiple of KV, and no gradient to track.
    /// </summary>
    public static bool AppliesOverCache(Tensor queries, Tensor keyBuffer, Tensor valueBuffer)
    {
        if (!KernelOperands.OnCpuInOneFloatType(queries, keyBuffer, valueBuffer)
            || queries.dim() != 4 || keyBuffer.dim() != 4 || queries.size(2) != 1 || !queries.is_contiguous()
            || !keyBuffer.is_contiguous() || !valueBuffer.is_contiguous() || !KernelOperands.SameSizes(keyBuffer, valueBuffer))
        {
            return false;
        }

        long heads = queries.size(1);
        if (keyBuffer.size(0) != queries.size(0) || keyBuffer.size(3) != queries.size(3) || queries.size(3) == 0
            || keyBuffer.size(1) == 0 || heads % keyBuffer.size(1) != 0)
        {
            return false;
        }

        return KernelOperands.NeedNoGradient(queries, keyBuffer, valueBuffer);
    }

    /// <summary>
    /// As <see cref="Compute"/> over positions [<paramref name="first"/>, <paramref name="first"/> + <paramref name="length"/>)
    /// of the cache's own buffers (<see cref="AppliesOverCache"/> must hold; the positions filled, length at least 1),
    /// addressed in place: the same bits as <see cref="Compute"/> over the narrowed views, and no tensor made. The output
    /// goes into <paramref name="output"/> (contiguous, the queries' dtype and size).
    /// </summary>
    public static Tensor ComputeOverCache(Tensor queries, Tensor keyBuffer, Tensor valueBuffer, long first, long length, Tensor output)
    {
        long elementSize = queries.dtype == ScalarType.BFloat16 ? 2 : 4;
        long positions = keyBuffer.size(2), headDim = keyBuffer.size(3);
        (long b, long h, long s) = (keyBuffer.size(1) * positions * headDim * elementSize, positions * headDim * elementSize, headDim * elementSize);
        long offset = first * s;
        return Run(queries, TensorMemory.DataPointer(keyBuffer) + offset, (b, h, s), TensorMemory.DataPointer(valueBuffer) + offset, (b, h, s), keyBuffer.size(1), length, output);
    }

    // The heads of contiguous `query` over `length` keys and values at the given addresses and byte strides, into `output`.
    private static Tensor Run(Tensor query, byte* keyData, (long Batch, long Head, long Position) keyStrides, byte* valueData, (long Batch, long Head, long Position) valueStrides, long kvHeads, long length, Tensor output)
    {
        bool bf16 = query.dtype == ScalarType.BFloat16;
        long batch = query.size(0), heads = query.size(1), headDim = query.size(3);
        long group = heads / kvHeads;
        var job = new HeadJob
        {
            Queries = TensorMemory.DataPointer(query),
            Keys = keyData,
            Values = valueData,
            Output = TensorMemory.DataPointer(output),
            Heads = heads,
            Group = group,
            HeadDim = headDim,
            Length = length,
            KeyStrides = keyStrides,
            ValueStrides = valueStrides,
            Scale = 1f / MathF.Sqrt(headDim),
            BFloat16 = bf16,
        };

        // Heads split across torch's threads when there is enough work to pay for a parallel region (MinScoresPerRange
        // scores per range); each head is computed the same way whichever thread takes it.
        long rows = batch * heads;
        int threads = torch.get_num_threads();
        int ranges = (int)Math.Clamp(rows * length / MinScoresPerRange, 1, Math.Min(rows, (long)threads * KernelOperands.RangesPerThread));
        KernelOperands.ForEachRange(rows, ranges, 1, threads, RangeJobRegion<HeadJob>.BodyFor(job));
        return output;
    }

    [ThreadStatic]
    private static float[]? t_scratch;

    /// <summary>Score count under which the heads are not split across threads (a region costs a few microseconds).</summary>
    internal const long MinScoresPerRange = 256;

    /// <summary>The operands of one attention step; <see cref="Run"/> computes a range of (batch, head) rows.</summary>
    private readonly struct HeadJob : IRangeJob
    {
        public byte* Queries { get; init; }

        public byte* Keys { get; init; }

        public byte* Values { get; init; }

        public byte* Output { get; init; }

        public long Heads { get; init; }

        public long Group { get; init; }

        public long HeadDim { get; init; }

        public long Length { get; init; }

        public (long Batch, long Head, long Position) KeyStrides { get; init; }

        public (long Batch, long Head, long Position) ValueStrides { get; init; }

        public float Scale { get; init; }

        public bool BFloat16 { get; init; }

        public void Run(long firstRow, long endRow)
        {
            bool bf16 = BFloat16;
            long headDim = HeadDim, length = Length, heads = Heads, group = Group;
            byte* keyData = Keys, valueData = Values, queryData = Queries, outputData = Output;
            (long kb, long kh, long ks) = KeyStrides;
            (long vb, long vh, long vs) = ValueStrides;
            float scale = Scale;

            // One scratch row per thread: the query in fp32 [hd], the weighted sum of values [hd], the scores [S].
            float[] scratch = KernelOperands.Scratch(ref t_scratch, (int)((2 * headDim) + length));
            fixed (float* q = scratch)
            {
                float* acc = q + headDim, p = acc + headDim;
                for (long row = firstRow; row < endRow; row++)
                {
                    long b = row / heads, h = row % heads;
                    long kv = h / group;
                    byte* keyHead = keyData + (b * kb) + (kv * kh), valueHead = valueData + (b * vb) + (kv * vh);
                    if (bf16)
                    {
                        RowProjection.WidenInBlockOrder((ushort*)queryData + (row * headDim), scratch, headDim);
                    }
                    else
                    {
                        new Span<float>((float*)queryData + (row * headDim), (int)headDim).CopyTo(new Span<float>(q, (int)headDim));
                    }

                    float max = float.NegativeInfinity;
                    for (long s = 0; s < length; s++)
                    {
                        float dot = bf16 ? RowProjection.DotBFloat16((ushort*)(keyHead + (s * ks)), q, headDim) : RowProjection.DotSingle((float*)(keyHead + (s * ks)), q, headDim);
                        p[s] = dot * scale;
                        max = MathF.Max(max, p[s]);
                    }

                    float sum = 0;
                    for (long s = 0; s < length; s++)
                    {
                        p[s] = MathF.Exp(p[s] - max);
                        sum += p[s];
                    }

                    new Span<float>(acc, (int)headDim).Clear();
                    for (long s = 0; s < length; s++)
                    {
                        if (bf16)
                        {
                            AddScaledBFloat16((ushort*)(valueHead + (s * vs)), p[s], acc, headDim);
                        }
                        else
                        {
                            AddScaledSingle((float*)(valueHead + (s * vs)), p[s], acc, headDim);
                        }
                    }

                    float inverse = 1f / sum;
                    if (bf16)
                    {
                        StoreFromBlockOrder(acc, inverse, (ushort*)outputData + (row * headDim), headDim);
                    }
                    else
                    {
                        float* target = (float*)outputData + (row * headDim);
                        for (long d = 0; d < headDim; d++)
                        {
                            target[d] = acc[d] * inverse;
                        }
                    }
                }
            }
        }
    }

    // Address of element [0, 0, 0, 0] of a CPU view with unit stride along the last dimension: its first row is a
    // contiguous view, whose data pointer includes the view's storage offset.
    private static byte* ElementAddress(Tensor view)
    {
        using Tensor first = view[0, 0, 0]; // [hd]
        return TensorMemory.DataPointer(first);
    }

    // acc += p · v over a fp32 row.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AddScaledSingle(float* v, float p, float* acc, long n)
    {
        long k = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var pv = Vector512.Create(p);
            for (; k <= n - Vector512<float>.Count; k += Vector512<float>.Count)
            {
                Vector512.MultiplyAddEstimate(Vector512.Load(v + k), pv, Vector512.Load(acc + k)).Store(acc + k);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            var pv = Vector256.Create(p);
            for (; k <= n - Vector256<float>.Count; k += Vector256<float>.Count)
            {
                Vector256.MultiplyAddEstimate(Vector256.Load(v + k), pv, Vector256.Load(acc + k)).Store(acc + k);
            }
        }

        for (; k < n; k++)
        {
            acc[k] += p * v[k];
        }
    }

    // acc += p · v over a bf16 row, acc in the block order of RowProjection.BFloat16Block.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AddScaledBFloat16(ushort* v, float p, float* acc, long n)
    {
        long k = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var pv = Vector512.Create(p);
            Vector512<uint> high = Vector512.Create(0xFFFF_0000u);
            for (; k <= n - Vector512<ushort>.Count; k += Vector512<ushort>.Count)
            {
                Vector512<uint> bits = Vector512.Load((uint*)(v + k));
                Vector512.MultiplyAddEstimate(Vector512.ShiftLeft(bits, 16).AsSingle(), pv, Vector512.Load(acc + k)).Store(acc + k);
                float* odd = acc + k + Vector512<float>.Count;
                Vector512.MultiplyAddEstimate((bits & high).AsSingle(), pv, Vector512.Load(odd)).Store(odd);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            var pv = Vector256.Create(p);
            Vector256<uint> high = Vector256.Create(0xFFFF_0000u);
            for (; k <= n - Vector256<ushort>.Count; k += Vector256<ushort>.Count)
            {
                Vector256<uint> bits = Vector256.Load((uint*)(v + k));
                Vector256.MultiplyAddEstimate(Vector256.ShiftLeft(bits, 16).AsSingle(), pv, Vector256.Load(acc + k)).Store(acc + k);
                float* odd = acc + k + Vector256<float>.Count;
                Vector256.MultiplyAddEstimate((bits & high).AsSingle(), pv, Vector256.Load(odd)).Store(odd);
            }
        }

        for (; k < n; k++)
        {
            acc[k] += p * RowProjection.BFloat16ToSingle(v[k]);
        }
    }

    // Writes acc · scale as bf16 in natural order, undoing RowProjection's block order.
    private static void StoreFromBlockOrder(float* acc, float scale, ushort* target, long n)
    {
        int block = RowProjection.BFloat16Block, half = block / 2;
        long whole = block == 1 ? 0 : n / block * block;
        for (long start = 0; start < whole; start += block)
        {
            for (int j = 0; j < half; j++)
            {
                target[start + (2 * j)] = RowProjection.SingleToBFloat16(acc[start + j] * scale);
                target[start + (2 * j) + 1] = RowProjection.SingleToBFloat16(acc[start + half + j] * scale);
            }
        }

        for (long k = whole; k < n; k++)
        {
            target[k] = RowProjection.SingleToBFloat16(acc[k] * scale);
        }
    }
}
