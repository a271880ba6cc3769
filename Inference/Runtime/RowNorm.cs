using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ModelSurgery.Inference.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Runtime;

/// <summary>
/// RMSNorm of one row on the CPU in managed code, <c>w * (x / sqrt(mean(x²) + eps))</c>, with the dtype steps of
/// <see cref="Modeling.LlamaRmsNorm"/>: the statistics in fp32, the normalised row rounded to the input's dtype, then the
/// product with the weight in that dtype.
/// </summary>
/// <remarks>
/// Why: a decoding step normalises one row of a few hundred to a few thousand values twice per layer, and LibTorch's
/// eight small operations per norm (casts, power, mean, add, rsqrt, two products) cost more in dispatch than the
/// arithmetic; for the stories110M shape, 25 norms per token. Batches, training and anything needing a gradient keep
/// LibTorch's path.
/// </remarks>
internal static unsafe class RowNorm
{
    /// <summary>
    /// Whether <see cref="Compute"/> applies: one contiguous fp32 or bf16 CPU row (all dimensions but the last of size 1),
    /// a contiguous weight of the same dtype and width, and no gradient to track.
    /// </summary>
    public static bool Applies(Tensor input, Tensor weight)
    {
        if (!KernelOperands.OnCpuInOneFloatType(input, weight)
            || input.dim() == 0 || weight.dim() != 1 || input.size(-1) != weight.size(0) || weight.size(0) == 0
            || input.numel() != weight.size(0) || !input.is_contiguous() || !weight.is_contiguous())
        {
            return false;
        }

        return KernelOperands.NeedNoGradient(input, weight);
    }

    /// <summary>
    /// The normalised row, shaped and typed as <paramref name="input"/>, for inputs where <see cref="Applies"/> holds;
    /// written into <paramref name="output"/> (a contiguous CPU tensor of the input's dtype and size) when given.
    /// </summary>
    public static Tensor Compute(Tensor input, Tensor weight, double eps, Tensor? output = null)
    {
        long width = weight.size(0);
        output ??= torch.empty(input.shape, input.dtype, input.device); // [..., D]
        byte* x = TensorMemory.DataPointer(input), w = TensorMemory.DataPointer(weight), y = TensorMemory.DataPointer(output);
        if (input.dtype == ScalarType.Float32)
        {
            float scale = InverseRms((float*)x, width, eps);
            for (long i = 0; i < width; i++)
            {
                ((float*)y)[i] = ((float*)w)[i] * (((float*)x)[i] * scale);
            }
        }
        else
        {
            ushort* bits = (ushort*)x;
            float sum = 0;
            for (long i = 0; i < width; i++)
            {
                float v = RowProjection.BFloat16ToSingle(bits[i]);
                sum += v * v;
            }

            float scale = 1f / MathF.Sqrt((sum / width) + (float)eps);
            for (long i = 0; i < width; i++)
            {
                // Two roundings, as LibTorch: the normalised row to bf16, then the bf16 product with the weight.
                float normalised = RowProjection.BFloat16ToSingle(RowProjection.SingleToBFloat16(RowProjection.BFloat16ToSingle(bits[i]) * scale));
                ((ushort*)y)[i] = RowProjection.SingleToBFloat16(RowProjection.BFloat16ToSingle(((ushort*)w)[i]) * normalised);
            }
        }

        return output;
    }

    // 1 / sqrt(mean(x²) + eps) of an fp32 row, the squares summed in vector lanes.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float InverseRms(float* x, long width, double eps)
    {
        long k = 0;
        float sum = 0;
        if (Vector256.IsHardwareAccelerated && width >= Vector256<float>.Count)
        {
            Vector256<float> acc = default;
            for (; k <= width - Vector256<float>.Count; k += Vector256<float>.Count)
            {
                Vector256<float> v = Vector256.Load(x + k);
                acc = Vector256.MultiplyAddEstimate(v, v, acc);
            }

            sum = Vector256.Sum(acc);
        }

        for (; k < width; k++)
        {
            sum += x[k] * x[k];
        }

        return 1f / MathF.Sqrt((sum / width) + (float)eps);
    }
}
