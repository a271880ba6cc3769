using System.Runtime.Intrinsics;
using ModelSurgery.Inference.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Runtime;

/// <summary>
/// Rotary position embedding of one position on the CPU in managed code, <c>x cos + rotate_half(x) sin</c> per head,
/// with the same roundings as LibTorch's element-wise steps in <see cref="Modeling.RotaryTables.Apply(Tensor)"/> (each product
/// and the sum rounded to the dtype, no fused multiply-add), so the result is bit for bit the same.
/// </summary>
/// <remarks>
/// Why: a decoding step rotates one position of every query and key head in each layer, and LibTorch's six small
/// operations per call (two narrows, a negation, a concatenation, two products and a sum) cost more in dispatch than
/// the arithmetic. Batches, prompts, training and anything needing a gradient keep LibTorch's path.
/// </remarks>
internal static unsafe class RowRotary
{
    /// <summary>
    /// Whether <see cref="Compute(Tensor, Tensor, Tensor, Tensor?)"/> applies: a contiguous fp32 or bf16 CPU tensor [B, H, 1, hd] with hd even, tables of
    /// one position ([1, hd]) of the same dtype, contiguous, and no gradient to track.
    /// </summary>
    public static bool Applies(Tensor x, Tensor cos, Tensor sin)
    {
        if (!KernelOperands.OnCpuInOneFloatType(x, cos, sin)
            || cos.numel() != x.size(-1) || sin.numel() != x.size(-1) || cos.size(-1) != x.size(-1) || sin.size(-1) != x.size(-1)
            || !cos.is_contiguous() || !sin.is_contiguous())
        {
            return false;
        }

        return AppliesTo(x, x.dtype);
    }

    /// <summary>
    /// Whether <paramref name="x"/> can be rotated by one position's tables of <paramref name="tableType"/> held in
    /// memory: a contiguous CPU tensor [B, H, 1, hd] of that dtype (fp32 or bf16) with hd even, and no gradient to track.
    /// </summary>
    public static bool AppliesTo(Tensor x, ScalarType tableType)
    {
        if (x.dtype != tableType || !KernelOperands.OnCpuInOneFloatType(x)
            || x.dim() != 4 || x.size(2) != 1 || x.size(3) == 0 || x.size(3) % 2 != 0 || !x.is_contiguous())
        {
            return false;
        }

        return KernelOperands.NeedNoGradient(x);
    }

    /// <summary>
    /// The rotated tensor, shaped and typed as <paramref name="x"/>, for inputs where <see cref="Applies"/> holds; written
    /// into <paramref name="output"/> as below when given.
    /// </summary>
    public static Tensor Compute(Tensor x, Tensor cos, Tensor sin, Tensor? output = null) =>
        Compute(x, TensorMemory.DataPointer(cos), TensorMemory.DataPointer(sin), output);

    /// <summary>
    /// The rotated tensor, shaped and typed as <paramref name="x"/>, with the position's tables at <paramref name="cos"/>
    /// and <paramref name="sin"/> (hd elements each, in x's dtype), for inputs where <see cref="AppliesTo"/> holds; written
    /// into <paramref name="output"/> (contiguous, x's dtype and size, not overlapping x) when given.
    /// </summary>
    public static Tensor Compute(Tensor x, byte* cos, byte* sin, Tensor? output = null)
    {
        long headDim = x.size(3), rows = x.numel() / headDim;
        bool bf16 = x.dtype == ScalarType.BFloat16;
        long rowBytes = headDim * (bf16 ? 2 : 4);
        output ??= torch.empty_like(x); // [B, H, 1, hd]
        byte* source = TensorMemory.DataPointer(x), target = TensorMemory.DataPointer(output);
        for (long r = 0; r < rows; r++)
        {
            RotateRow(source + (r * rowBytes), target + (r * rowBytes), cos, sin, headDim, bf16);
        }

        return output;
    }

    /// <summary>
    /// Rotates one head's row of <paramref name="headDim"/> fp32 or bf16 elements from <paramref name="source"/> into
    /// <paramref name="target"/> (which must not overlap it) with one position's tables in the same dtype.
    /// </summary>
    public static void RotateRow(byte* source, byte* target, byte* cos, byte* sin, long headDim, bool bf16)
    {
        if (bf16)
        {
            RotateBFloat16((ushort*)source, (ushort*)target, (ushort*)cos, (ushort*)sin, headDim);
        }
        else
        {
            RotateSingle((float*)source, (float*)target, (float*)cos, (float*)sin, headDim);
        }
    }

    // y[d] = v[d] c[d] + (-v[d + half]) s[d] for d < half, v[d] c[d] + v[d - half] s[d] after: two products and a sum, each
    // rounded, as LibTorch's three element-wise kernels (vector lanes round as scalars do; no multiply-add is formed).
    private static void RotateSingle(float* v, float* y, float* c, float* s, long headDim)
    {
        long half = headDim / 2, i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + Vector256<float>.Count <= half; i += Vector256<float>.Count)
            {
                Vector256<float> first = Vector256.Load(v + i), second = Vector256.Load(v + half + i);
                Vector256.Store((first * Vector256.Load(c + i)) + (-second * Vector256.Load(s + i)), y + i);
                Vector256.Store((second * Vector256.Load(c + half + i)) + (first * Vector256.Load(s + half + i)), y + half + i);
            }
        }

        for (; i < half; i++)
        {
            float first = v[i], second = v[half + i];
            y[i] = (first * c[i]) + (-second * s[i]);
            y[half + i] = (second * c[half + i]) + (first * s[half + i]);
        }
    }

    // As RotateSingle, with each product rounded to bf16 before the sum and the sum rounded once more: what a bf16
    // tensor holds after each of LibTorch's element-wise kernels.
    private static void RotateBFloat16(ushort* v, ushort* y, ushort* c, ushort* s, long headDim)
    {
        long half = headDim / 2, i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + Vector256<ushort>.Count <= half; i += Vector256<ushort>.Count)
            {
                (Vector256<float> firstLow, Vector256<float> firstHigh) = Widen(Vector256.Load(v + i));
                (Vector256<float> secondLow, Vector256<float> secondHigh) = Widen(Vector256.Load(v + half + i));
                (Vector256<float> cosLow, Vector256<float> cosHigh) = Widen(Vector256.Load(c + i));
                (Vector256<float> sinLow, Vector256<float> sinHigh) = Widen(Vector256.Load(s + i));
                Vector256.Store(
                    Narrow(Round(Round(firstLow * cosLow) + Round(-secondLow * sinLow)), Round(Round(firstHigh * cosHigh) + Round(-secondHigh * sinHigh))),
                    y + i);
                (cosLow, cosHigh) = Widen(Vector256.Load(c + half + i));
                (sinLow, sinHigh) = Widen(Vector256.Load(s + half + i));
                Vector256.Store(
                    Narrow(Round(Round(secondLow * cosLow) + Round(firstLow * sinLow)), Round(Round(secondHigh * cosHigh) + Round(firstHigh * sinHigh))),
                    y + half + i);
            }
        }

        for (; i < half; i++)
        {
            float first = RowProjection.BFloat16ToSingle(v[i]), second = RowProjection.BFloat16ToSingle(v[half + i]);
            y[i] = RowProjection.SingleToBFloat16(Round(first * Load(c, i)) + Round(-second * Load(s, i)));
            y[half + i] = RowProjection.SingleToBFloat16(Round(second * Load(c, half + i)) + Round(first * Load(s, half + i)));
        }
    }

    private static float Load(ushort* bits, long index) => RowProjection.BFloat16ToSingle(bits[index]);

    // The bf16 value nearest to an fp32 one, back in fp32: what a bf16 tensor holds after an element-wise op.
    private static float Round(float value) => RowProjection.BFloat16ToSingle(RowProjection.SingleToBFloat16(value));

    // bf16 bits to fp32, lanes in order: the bits are the upper half of the fp32 ones.
    private static (Vector256<float> Low, Vector256<float> High) Widen(Vector256<ushort> bits)
    {
        (Vector256<uint> low, Vector256<uint> high) = Vector256.Widen(bits);
        return ((low << 16).AsSingle(), (high << 16).AsSingle());
    }

    // Rounds each lane to the nearest bf16 as RowProjection.SingleToBFloat16 does (ties to even, NaN kept quiet) and
    // returns it as fp32 bits with the low half zero.
    private static Vector256<uint> RoundBits(Vector256<float> value)
    {
        Vector256<uint> bits = value.AsUInt32();
        Vector256<uint> rounded = (bits + Vector256.Create(0x7FFFu) + ((bits >> 16) & Vector256<uint>.One)) & Vector256.Create(0xFFFF0000u);
        Vector256<uint> quiet = (bits | Vector256.Create(0x400000u)) & Vector256.Create(0xFFFF0000u);
        return Vector256.ConditionalSelect(Vector256.Equals(value, value).AsUInt32(), rounded, quiet);
    }

    private static Vector256<float> Round(Vector256<float> value) => RoundBits(value).AsSingle();

    // fp32 lanes already rounded to bf16 (low halves zero) back to bf16 bits, lanes in order.
    private static Vector256<ushort> Narrow(Vector256<float> low, Vector256<float> high) =>
        Vector256.Narrow(low.AsUInt32() >> 16, high.AsUInt32() >> 16);
}
