using ModelSurgery.Inference.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Runtime;

/// <summary>
/// Rotary position embedding of one position on the CPU in managed code, <c>x cos + rotate_half(x) sin</c> per head,
/// with the same roundings as LibTorch's element-wise steps in <see cref="Modeling.RotaryTables.Apply"/> (each product
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
    /// Whether <see cref="Compute"/> applies: a contiguous fp32 or bf16 CPU tensor [B, H, 1, hd] with hd even, tables of
    /// one position ([1, hd]) of the same dtype, contiguous, and no gradient to track.
    /// </summary>
    public static bool Applies(Tensor x, Tensor cos, Tensor sin)
    {
        if (!KernelOperands.OnCpuInOneFloatType(x, cos, sin)
            || x.dim() != 4 || x.size(2) != 1 || x.size(3) == 0 || x.size(3) % 2 != 0
            || cos.numel() != x.size(3) || sin.numel() != x.size(3) || cos.size(-1) != x.size(3) || sin.size(-1) != x.size(3)
            || !x.is_contiguous() || !cos.is_contiguous() || !sin.is_contiguous())
        {
            return false;
        }

        return KernelOperands.NeedNoGradient(x, cos, sin);
    }

    /// <summary>The rotated tensor, shaped and typed as <paramref name="x"/>, for inputs where <see cref="Applies"/> holds.</summary>
    public static Tensor Compute(Tensor x, Tensor cos, Tensor sin)
    {
        long headDim = x.size(3), half = headDim / 2, rows = x.numel() / headDim;
        Tensor output = torch.empty(x.shape, x.dtype, x.device); // [B, H, 1, hd]
        byte* source = TensorMemory.DataPointer(x), target = TensorMemory.DataPointer(output);
        byte* c = TensorMemory.DataPointer(cos), s = TensorMemory.DataPointer(sin);
        if (x.dtype == ScalarType.Float32)
        {
            for (long r = 0; r < rows; r++)
            {
                float* v = (float*)source + (r * headDim), y = (float*)target + (r * headDim);
                for (long d = 0; d < headDim; d++)
                {
                    float rotated = d < half ? -v[d + half] : v[d - half];

                    // Two products and a sum, each rounded, as LibTorch's three element-wise kernels.
                    float cosine = v[d] * ((float*)c)[d];
                    float sine = rotated * ((float*)s)[d];
                    y[d] = cosine + sine;
                }
            }
        }
        else
        {
            for (long r = 0; r < rows; r++)
            {
                ushort* v = (ushort*)source + (r * headDim), y = (ushort*)target + (r * headDim);
                for (long d = 0; d < headDim; d++)
                {
                    float value = RowProjection.BFloat16ToSingle(v[d]);
                    float rotated = d < half ? -RowProjection.BFloat16ToSingle(v[d + half]) : RowProjection.BFloat16ToSingle(v[d - half]);
                    float cosine = Round(value * RowProjection.BFloat16ToSingle(((ushort*)c)[d]));
                    float sine = Round(rotated * RowProjection.BFloat16ToSingle(((ushort*)s)[d]));
                    y[d] = RowProjection.SingleToBFloat16(cosine + sine);
                }
            }
        }

        return output;
    }

    // The bf16 value nearest to an fp32 one, back in fp32: what a bf16 tensor holds after an element-wise op.
    private static float Round(float value) => RowProjection.BFloat16ToSingle(RowProjection.SingleToBFloat16(value));
}
