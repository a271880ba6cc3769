using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>Raw access to the native buffer of contiguous CPU tensors, with 64-bit sizes throughout.</summary>
internal static unsafe class TensorMemory
{
    /// <summary>Largest single copy; keeps every span and copy call well under 2 GiB.</summary>
    public const long MaxChunkBytes = 1L << 30;

    /// <summary>Address of the first element of a contiguous CPU tensor, or null when it has no elements.</summary>
    /// <remarks>
    /// TorchSharp's <c>bytes</c> span stops at 2 GiB, so the address of a larger tensor comes from a one-element view of
    /// the flattened tensor; contiguity guarantees every following byte belongs to the same storage.
    /// </remarks>
    public static byte* DataPointer(torch.Tensor tensor)
    {
        if (tensor.device_type != DeviceType.CPU)
        {
            throw new ArgumentException("The tensor must be on the CPU to access its bytes.", nameof(tensor));
        }

        if (!tensor.is_contiguous())
        {
            throw new ArgumentException("The tensor must be contiguous to access its bytes.", nameof(tensor));
        }

        if (tensor.numel() == 0)
        {
            return null;
        }

        if (tensor.numel() * tensor.ElementSize <= int.MaxValue)
        {
            // Small enough for the span itself: no views to create, which matters on per-token paths.
            return (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(tensor.bytes));
        }

        using var flat = tensor.reshape(-1);   // [N], a view
        using var first = flat.narrow(0, 0, 1); // [1], a view of element 0
        Span<byte> span = first.bytes;
        return (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span));
    }

    /// <summary>Copies <paramref name="count"/> bytes in chunks below 2 GiB.</summary>
    public static void Copy(byte* source, byte* destination, long count)
    {
        while (count > 0)
        {
            long chunk = Math.Min(count, MaxChunkBytes);
            Buffer.MemoryCopy(source, destination, chunk, chunk);
            source += chunk;
            destination += chunk;
            count -= chunk;
        }
    }
}
