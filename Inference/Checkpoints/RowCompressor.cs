using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>
/// Copies the kept columns of a row with AVX-512 compress instructions: each 64-byte block of the source row is packed by
/// a mask of its kept columns (<c>VPCOMPRESSW</c> for 2-byte elements, <c>VPCOMPRESSD</c> for 4-byte ones) and stored
/// where the previous block's kept elements end, so a row with scattered kept channels costs one instruction per 32 (or
/// 16) source elements instead of one load and store per kept element. The kept columns must ascend, as a plan's do.
/// </summary>
internal sealed unsafe class RowCompressor
{
    private readonly int _elementSize;
    private readonly Vector512<ushort>[]? _wordMasks;
    private readonly Vector512<uint>[]? _doubleWordMasks;
    private readonly int[] _counts;
    private readonly int[] _tail;
    private readonly int _kept;
    private readonly long _sourceColumns;

    private RowCompressor(int elementSize, int lanes, IReadOnlyList<long> columns, long sourceColumns)
    {
        _elementSize = elementSize;
        _kept = columns.Count;
        _sourceColumns = sourceColumns;
        int blocks = (int)(sourceColumns / lanes);
        _counts = new int[blocks];
        var masks = new ulong[blocks];
        var tail = new List<int>();
        foreach (long column in columns)
        {
            int block = (int)(column / lanes);
            if (block < blocks)
            {
                masks[block] |= 1UL << (int)(column % lanes);
                _counts[block]++;
            }
            else
            {
                // Past the last whole block: copied one by one.
                tail.Add((int)column);
            }
        }

        _tail = [.. tail];
        if (elementSize == 2)
        {
            _wordMasks = Masks(masks, ushort.MaxValue);
        }
        else
        {
            _doubleWordMasks = Masks(masks, uint.MaxValue);
        }
    }

    /// <summary>Whether this CPU compresses elements of <paramref name="elementSize"/> bytes.</summary>
    internal static bool IsSupported(long elementSize) => elementSize switch
    {
        2 => Avx512Vbmi2.IsSupported,
        4 => Avx512F.IsSupported,
        _ => false,
    };

    /// <summary>
    /// A compressor for rows of <paramref name="sourceColumns"/> elements of <paramref name="elementSize"/> bytes keeping
    /// <paramref name="columns"/>, or null where it does not apply: the CPU lacks the instructions, the columns do not
    /// strictly ascend, or a row is shorter than one block.
    /// </summary>
    internal static RowCompressor? TryCreate(IReadOnlyList<long> columns, long elementSize, long sourceColumns)
    {
        int lanes = (int)(64 / Math.Max(1, elementSize));
        if (!IsSupported(elementSize) || sourceColumns < lanes || columns.Count == 0)
        {
            return null;
        }

        for (int i = 1; i < columns.Count; i++)
        {
            if (columns[i] <= columns[i - 1])
            {
                return null;
            }
        }

        return new RowCompressor((int)elementSize, lanes, columns, sourceColumns);
    }

    /// <summary>Writes the kept columns of <paramref name="sourceRow"/> to <paramref name="destinationRow"/>, checking both lengths.</summary>
    internal void CompressRow(ReadOnlySpan<byte> sourceRow, Span<byte> destinationRow)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sourceRow.Length, _sourceColumns * _elementSize, nameof(sourceRow));
        ArgumentOutOfRangeException.ThrowIfLessThan(destinationRow.Length, _kept * _elementSize, nameof(destinationRow));
        fixed (byte* source = sourceRow, destination = destinationRow)
        {
            CompressRow(source, destination);
        }
    }

    /// <summary>Writes the kept columns of <paramref name="sourceRow"/> to <paramref name="destinationRow"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal void CompressRow(byte* sourceRow, byte* destinationRow)
    {
        if (_elementSize == 2)
        {
            Compress((ushort*)sourceRow, (ushort*)destinationRow, _wordMasks!);
        }
        else
        {
            Compress((uint*)sourceRow, (uint*)destinationRow, _doubleWordMasks!);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Compress<T>(T* source, T* destination, Vector512<T>[] masks)
        where T : unmanaged
    {
        int lanes = Vector512<T>.Count, written = 0;
        for (int b = 0; b < masks.Length; b++)
        {
            Vector512<T> packed = Pack(masks[b], Vector512.Load(source + (b * lanes)));

            // A whole vector is stored while it ends inside the row; the blocks after it overwrite its unused lanes.
            if (written + lanes <= _kept)
            {
                packed.Store(destination + written);
            }
            else
            {
                for (int k = 0; k < _counts[b]; k++)
                {
                    destination[written + k] = packed.GetElement(k);
                }
            }

            written += _counts[b];
        }

        foreach (int column in _tail)
        {
            destination[written++] = source[column];
        }
    }

    /// <summary>The lanes of <paramref name="value"/> that <paramref name="mask"/> selects, packed into the lowest lanes.</summary>
    private static Vector512<T> Pack<T>(Vector512<T> mask, Vector512<T> value)
        where T : unmanaged => typeof(T) == typeof(ushort)
        ? Avx512Vbmi2.Compress(Vector512<ushort>.Zero, mask.AsUInt16(), value.AsUInt16()).As<ushort, T>()
        : Avx512F.Compress(Vector512<uint>.Zero, mask.AsUInt32(), value.AsUInt32()).As<uint, T>();

    /// <summary>One mask vector per block: all ones in the lanes of kept columns.</summary>
    private static Vector512<T>[] Masks<T>(ulong[] bits, T ones)
        where T : unmanaged =>
        [.. bits.Select(m => Vector512.Create([.. Enumerable.Range(0, Vector512<T>.Count).Select(i => (m >> i & 1) != 0 ? ones : default)]))];
}
