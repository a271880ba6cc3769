using System.Numerics;
using System.Runtime.CompilerServices;
using TorchSharp;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>Cheap checks of tensor values read from checkpoints.</summary>
public static unsafe class TensorChecks
{
    /// <summary>
    /// True when every element of a floating-point tensor is finite (integer tensors always are). Contiguous CPU tensors
    /// of f32, f64, bf16 and f16 are checked in place over their raw bits, allocating nothing: in IEEE formats a value is
    /// NaN or infinite exactly when its exponent bits are all ones. Other tensors fall back to one torch reduction.
    /// </summary>
    public static bool IsFinite(torch.Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (!tensor.is_floating_point() || tensor.numel() == 0)
        {
            return true;
        }

        if (tensor.device_type == DeviceType.CPU && tensor.is_contiguous())
        {
            // Reading every weight is the cost of the check, so it must not also convert or copy them: the earlier
            // float64 sum allocated and converted the whole tensor and dominated the CPU time of a build.
            byte* data = TensorMemory.DataPointer(tensor);
            long count = tensor.numel();
            switch (tensor.dtype)
            {
                case torch.ScalarType.Float32:
                    return AllExponentsBelowMax((uint*)data, count, 0x7F80_0000u);
                case torch.ScalarType.Float64:
                    return AllExponentsBelowMax((ulong*)data, count, 0x7FF0_0000_0000_0000ul);
                case torch.ScalarType.BFloat16:
                    return AllExponentsBelowMax((ushort*)data, count, (ushort)0x7F80);
                case torch.ScalarType.Float16:
                    return AllExponentsBelowMax((ushort*)data, count, (ushort)0x7C00);
            }
        }

        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        return torch.isfinite(tensor).all().item<bool>();
    }

    /// <summary>Whether <see cref="IsFinite(SafetensorsDType, ReadOnlySpan{byte})"/> can check raw values of <paramref name="dtype"/>.</summary>
    /// <remarks>Every dtype but the 8-bit floats, whose NaN encodings differ between variants; integers and booleans are always finite.</remarks>
    public static bool ChecksRawBytes(SafetensorsDType dtype) => dtype is not (SafetensorsDType.F8_E4M3 or SafetensorsDType.F8_E5M2);

    /// <summary>True when every value of <paramref name="dtype"/> stored in <paramref name="data"/> is finite, checked in place.</summary>
    /// <exception cref="NotSupportedException">The dtype is not one <see cref="ChecksRawBytes"/> accepts.</exception>
    public static bool IsFinite(SafetensorsDType dtype, ReadOnlySpan<byte> data)
    {
        fixed (byte* values = data)
        {
            return dtype switch
            {
                SafetensorsDType.F32 => AllExponentsBelowMax((uint*)values, data.Length / 4, 0x7F80_0000u),
                SafetensorsDType.F64 => AllExponentsBelowMax((ulong*)values, data.Length / 8, 0x7FF0_0000_0000_0000ul),
                SafetensorsDType.BF16 => AllExponentsBelowMax((ushort*)values, data.Length / 2, (ushort)0x7F80),
                SafetensorsDType.F16 => AllExponentsBelowMax((ushort*)values, data.Length / 2, (ushort)0x7C00),
                _ when ChecksRawBytes(dtype) => true, // integers and booleans
                _ => throw new NotSupportedException($"Raw values of dtype {dtype.ToHeaderString()} are not checked in place."),
            };
        }
    }

    /// <summary>
    /// True when no value among <paramref name="count"/> at <paramref name="values"/> has all the bits of
    /// <paramref name="exponent"/> set. Four vectors per step, OR-ed, keep the loop bound by memory rather than by branches.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // called on a few large buffers: an unoptimized first version would scan most of them
    internal static bool AllExponentsBelowMax<T>(T* values, long count, T exponent)
        where T : unmanaged, IBinaryInteger<T>
    {
        long i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var mask = new Vector<T>(exponent);
            int width = Vector<T>.Count;
            for (; i <= count - (4 * width); i += 4 * width)
            {
                Vector<T> hits =
                    Vector.Equals(Vector.Load(values + i) & mask, mask)
                    | Vector.Equals(Vector.Load(values + i + width) & mask, mask)
                    | Vector.Equals(Vector.Load(values + i + (2 * width)) & mask, mask)
                    | Vector.Equals(Vector.Load(values + i + (3 * width)) & mask, mask);
                if (hits != Vector<T>.Zero)
                {
                    return false;
                }
            }

            for (; i <= count - width; i += width)
            {
                if (Vector.EqualsAny(Vector.Load(values + i) & mask, mask))
                {
                    return false;
                }
            }
        }

        for (; i < count; i++)
        {
            if ((values[i] & exponent) == exponent)
            {
                return false;
            }
        }

        return true;
    }
}
