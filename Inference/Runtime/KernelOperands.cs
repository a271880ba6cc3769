using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Runtime;

/// <summary>
/// The conditions every managed decoding kernel (<see cref="RowProjection"/>, <see cref="RowNorm"/>,
/// <see cref="RowRotary"/>, <see cref="OneQueryAttention"/>) puts on its operands before reading their memory.
/// </summary>
internal static class KernelOperands
{
    /// <summary>Whether every tensor is on the CPU in one dtype, fp32 or bf16: the dtypes the kernels read in place.</summary>
    public static bool OnCpuInOneFloatType(params ReadOnlySpan<Tensor> tensors)
    {
        ScalarType dtype = tensors[0].dtype;
        if (dtype != ScalarType.Float32 && dtype != ScalarType.BFloat16)
        {
            return false;
        }

        foreach (Tensor tensor in tensors)
        {
            if (tensor.dtype != dtype || tensor.device_type != DeviceType.CPU)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Whether no gradient is to be tracked through the tensors (gradients off, or none of them requires one): the
    /// kernels record nothing for autograd, so anything that needs a gradient takes LibTorch's path.
    /// </summary>
    public static bool NeedNoGradient(params ReadOnlySpan<Tensor> tensors)
    {
        if (!torch.is_grad_enabled())
        {
            return true;
        }

        foreach (Tensor tensor in tensors)
        {
            if (tensor.requires_grad)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// A pinned scratch array of at least <paramref name="length"/> floats, kept in <paramref name="buffer"/> (a
    /// <c>[ThreadStatic]</c> field of the calling kernel, so kernels never share one) and replaced only when too short:
    /// no allocation per call on the decoding path.
    /// </summary>
    public static float[] Scratch(ref float[]? buffer, int length)
    {
        if (buffer is null || buffer.Length < length)
        {
            buffer = GC.AllocateUninitializedArray<float>(length, pinned: true);
        }

        return buffer;
    }
}
