using System.Buffers;
using System.Runtime.InteropServices;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>
/// A buffer that reads land in before their bytes are copied on: pooled managed memory where an array can hold the size,
/// native memory beyond that (an array holds less than 2 GiB, and a row read whole can be longer). Dispose it on the
/// thread that rented it.
/// </summary>
internal readonly unsafe struct ReadBuffer : IDisposable
{
    private readonly byte[]? _array;
    private readonly GCHandle _pin;

    private ReadBuffer(long length)
    {
        Length = length;
        if (length <= Array.MaxLength)
        {
            _array = ArrayPool<byte>.Shared.Rent((int)Math.Max(1, length));
            _pin = GCHandle.Alloc(_array, GCHandleType.Pinned);
            Pointer = (byte*)_pin.AddrOfPinnedObject();
        }
        else
        {
            // Uncommitted until written: only the pages a read fills take memory.
            Pointer = (byte*)NativeMemory.Alloc((nuint)length);
        }
    }

    /// <summary>The first byte; at least <see cref="Length"/> bytes follow.</summary>
    public byte* Pointer { get; }

    /// <summary>How many bytes were asked for.</summary>
    public long Length { get; }

    /// <summary>Whether the bytes live outside the managed heap (a length no array can hold).</summary>
    public bool IsNative => _array is null;

    /// <summary>A buffer of at least <paramref name="length"/> bytes.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="OutOfMemoryException">The system has no room for a native buffer of that length.</exception>
    public static ReadBuffer Rent(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        return new ReadBuffer(length);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_array is null)
        {
            NativeMemory.Free(Pointer);
            return;
        }

        _pin.Free();
        ArrayPool<byte>.Shared.Return(_array);
    }
}
