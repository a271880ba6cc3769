using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>Raw access to the native buffer of contiguous CPU tensors, with 64-bit sizes throughout.</summary>
internal static unsafe partial class TensorMemory
{
    /// <summary>The size of a transparent huge page on x86-64 and on arm64 with 4 KiB pages.</summary>
    internal const long HugePageBytes = 2L << 20;

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

    /// <summary>
    /// Asks the kernel to back the memory of <paramref name="length"/> bytes at <paramref name="start"/>, which the caller
    /// is about to fill whole, with transparent huge pages (Linux <c>madvise(MADV_HUGEPAGE)</c>; elsewhere nothing): only
    /// the 2 MiB-aligned blocks that lie wholly inside the range, so no neighbouring allocation is touched. The first
    /// write to such a block then maps 2 MiB at once instead of faulting in 512 pages one by one, which is most of the
    /// cost of filling fresh memory on a virtual machine. Where the kernel grants huge pages only on request (the
    /// <c>madvise</c> mode, common on servers), nothing else asks for them: LibTorch does only when the environment sets
    /// <c>THP_MEM_ALLOC_ENABLE=1</c>. Memory already mapped keeps its pages. Best effort: a refusal changes nothing.
    /// </summary>
    public static void AdviseHugePages(byte* start, long length)
    {
        if (OperatingSystem.IsLinux() && HugePageBlocks((long)start, length) is (long first, long bytes))
        {
            _ = Madvise((nint)first, (nuint)bytes, MadviseHugePage);
        }
    }

    /// <summary>
    /// The 2 MiB-aligned blocks that lie wholly inside <paramref name="length"/> bytes at <paramref name="address"/>, as
    /// one range: its start and length, both multiples of <see cref="HugePageBytes"/>; null when no block fits.
    /// </summary>
    internal static (long Start, long Length)? HugePageBlocks(long address, long length)
    {
        if (address <= 0 || length < HugePageBytes)
        {
            return null;
        }

        long first = (address + HugePageBytes - 1) / HugePageBytes * HugePageBytes;
        long end = (address + length) / HugePageBytes * HugePageBytes;
        return end > first ? (first, end - first) : null;
    }

    /// <inheritdoc cref="AdviseHugePages(byte*, long)"/>
    public static void AdviseHugePages(torch.Tensor tensor)
    {
        if (tensor.device_type == DeviceType.CPU && tensor.is_contiguous())
        {
            AdviseHugePages(DataPointer(tensor), tensor.numel() * tensor.ElementSize);
        }
    }

    /// <summary><c>MADV_HUGEPAGE</c> (Linux, every architecture).</summary>
    private const int MadviseHugePage = 14;

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);
}
