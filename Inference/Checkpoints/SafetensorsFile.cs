using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using TorchSharp;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>
/// A safetensors file opened read-only. The header is validated on open; reads take the pages they need with positional
/// reads (<c>pread</c>) into a small buffer of the reading thread and copy from it only the bytes they keep into new CPU
/// tensors of the stored dtype. Positional reads rather than a memory map: the kernel copies out of its page cache
/// without mapping each page into the process (whose page faults were the largest CPU cost of a build after the gather
/// itself), and nothing of the file counts in the process's resident set. Reads are thread-safe; disposing while reads
/// are in flight is not.
/// </summary>
public sealed unsafe partial class SafetensorsFile : IDisposable
{
    private readonly SafeFileHandle _file;
    private readonly SafeFileHandle _streamingFile;
    private readonly Dictionary<string, SafetensorsTensorInfo> _byName;
    private int _disposed;
    private long _bytesNeeded;
    private long _bytesFetched;

    private SafetensorsFile(string path, long fileLength, SafetensorsHeader.Parsed header, SafeFileHandle file, SafeFileHandle streamingFile)
    {
        Path = path;
        FileLength = fileLength;
        DataStart = header.DataStart;
        Tensors = header.Tensors;
        Metadata = header.Metadata;
        TensorNames = header.Tensors.Select(t => t.Name).ToArray();
        TotalTensorBytes = header.Tensors.Sum(t => t.ByteLength);
        _byName = header.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        _file = file;
        _streamingFile = streamingFile;
    }

    /// <summary>Path the file was opened from.</summary>
    public string Path { get; }

    /// <summary>Size of the file in bytes.</summary>
    public long FileLength { get; }

    /// <summary>Offset in the file of the data buffer: 8 plus the header length.</summary>
    public long DataStart { get; }

    /// <summary>Every tensor, in the order of their data in the file.</summary>
    public IReadOnlyList<SafetensorsTensorInfo> Tensors { get; }

    /// <summary>Tensor names, in the order of their data in the file.</summary>
    public IReadOnlyList<string> TensorNames { get; }

    /// <summary>The header's <c>__metadata__</c> map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>
    /// Two needed byte ranges of one read at least this far apart are never fetched as one range: beyond it, another
    /// storage request costs less than reading the gap (a request costs about as much as reading a few hundred KB
    /// sequentially).
    /// </summary>
    public const long CoalesceGapBytes = 256 * 1024;

    /// <summary>
    /// The most a read may fetch beyond the pages its needed ranges touch, as a fraction of those pages: coalescing merges
    /// the shortest gaps (below <see cref="CoalesceGapBytes"/>) first, and only while the gap bytes it adds stay within this
    /// share, so a read with many short gaps (every other row kept) is not fetched whole.
    /// </summary>
    public const double CoalesceSlack = 0.05;

    /// <summary>
    /// Largest range one prefetch hint asks for. Linux reads at most the device's read-ahead window (or its largest request,
    /// whichever is larger) per hint and silently drops the rest, so a long range is announced in pieces no larger than the
    /// smallest such window in common use.
    /// </summary>
    internal const long PrefetchPieceBytes = 256 * 1024;

    /// <summary>Bytes this file has copied out to callers: what the reads needed.</summary>
    public long BytesNeeded => Interlocked.Read(ref _bytesNeeded);

    /// <summary>
    /// Bytes of the whole pages this file has asked storage for (the coalesced ranges, page-aligned, counted per read):
    /// at least <see cref="BytesNeeded"/>, more where kept ranges were merged across gaps or share pages with dropped ones.
    /// </summary>
    public long BytesFetched => Interlocked.Read(ref _bytesFetched);

    /// <summary>Sum of the byte lengths of all tensors (the size of the data buffer).</summary>
    public long TotalTensorBytes { get; }

    /// <summary>Opens and validates <paramref name="path"/>.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file breaks a rule of the format; the message names the file, the tensor and the rule.</exception>
    public static SafetensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("safetensors data is little-endian; big-endian hosts are not supported.");
        }

        // Two handles, because the kernel keeps read-ahead state per open file. Reads that select rows use one opened for
        // random access: storage reads only what they ask for (and what Fetch announces), never read-ahead into the
        // dropped rows between kept ones. Whole tensors and slices use one with the kernel's read-ahead, which streams
        // them in large blocks (without it, whole-tensor reads from storage took 1.8 x as long).
        SafeFileHandle? file = null, streamingFile = null;
        try
        {
            file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, FileOptions.RandomAccess);
            long length = RandomAccess.GetLength(file);
            var header = SafetensorsHeader.Read(path, file);
            streamingFile = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
            return new SafetensorsFile(path, length, header, file, streamingFile);
        }
        catch
        {
            file?.Dispose();
            streamingFile?.Dispose();
            throw;
        }
    }

    /// <summary>Whether the file holds a tensor called <paramref name="name"/>.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The header entry of <paramref name="name"/>, if present.</summary>
    public bool TryGetInfo(string name, [MaybeNullWhen(false)] out SafetensorsTensorInfo info) => _byName.TryGetValue(name, out info);

    /// <summary>The header entry of <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    public SafetensorsTensorInfo GetInfo(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _byName.TryGetValue(name, out var info)
            ? info
            : throw new KeyNotFoundException($"Tensor '{name}' is not in safetensors file '{Path}'.");
    }

    /// <summary>Reads a whole tensor.</summary>
    /// <returns>A new CPU tensor of the stored dtype and shape.</returns>
    /// <remarks>
    /// Every call allocates a new tensor, whose pages the system maps in as the read fills them, in huge pages where the
    /// kernel grants them (or reused from a tensor freed before, where the process keeps freed memory:
    /// <see cref="Runtime.NativeAllocator.KeepFreedMemoryInProcess"/>); to fill a tensor that exists already, use
    /// <see cref="ReadTensorInto"/>.
    /// </remarks>
    public torch.Tensor ReadTensor(string name)
    {
        var info = GetInfo(name);
        var tensor = NewTensor(info, info.Shape);
        try
        {
            Fill(info, tensor);
        }
        catch
        {
            tensor.Dispose();
            throw;
        }

        return tensor;
    }

    /// <summary>
    /// Reads a whole tensor into <paramref name="destination"/>, a contiguous CPU tensor of the stored dtype and shape (a
    /// model's parameter, say): the bytes go straight to it, with no tensor in between and no conversion.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is not on the CPU, not contiguous, or of another dtype or shape; the message names the tensor.</exception>
    public void ReadTensorInto(string name, torch.Tensor destination)
    {
        ArgumentNullException.ThrowIfNull(destination);
        var info = GetInfo(name);
        if (!CanReadInto(info, destination))
        {
            throw new ArgumentException(
                $"Tensor '{name}' in '{Path}' is {info.DType.ToHeaderString()} [{string.Join(", ", info.Shape)}]; it can be read only into a contiguous CPU tensor of that dtype and shape, not {destination.dtype} [{string.Join(", ", destination.shape)}] on {destination.device}.",
                nameof(destination));
        }

        Fill(info, destination);
    }

    /// <summary>Whether <see cref="ReadTensorInto"/> can fill <paramref name="destination"/> with the tensor <paramref name="info"/> describes.</summary>
    internal static bool CanReadInto(SafetensorsTensorInfo info, torch.Tensor destination) =>
        destination.device_type == DeviceType.CPU
        && destination.is_contiguous()
        && info.DType.TryToScalarType(out var scalarType)
        && destination.dtype == scalarType
        && destination.shape.SequenceEqual(info.Shape);

    /// <summary>Copies the stored bytes of <paramref name="info"/> into <paramref name="tensor"/>, whose memory they fill whole.</summary>
    private void Fill(SafetensorsTensorInfo info, torch.Tensor tensor)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (info.ByteLength == 0)
        {
            return;
        }

        byte* destination = TensorMemory.DataPointer(tensor);
        TensorMemory.AdviseHugePages(destination, info.ByteLength);
        long data = DataOffsetOf(info);
        Fetch(data, [(0, info.ByteLength)], info.ByteLength, exact: false);
        CopyPieces(data, destination, [(0, 0, info.ByteLength)], exact: false);
    }

    /// <summary>Reads <paramref name="length"/> entries from <paramref name="start"/> along dimension <paramref name="dim"/>.</summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="dim">Dimension to slice; negative counts from the end.</param>
    /// <param name="start">First index along <paramref name="dim"/>.</param>
    /// <param name="length">Number of indices.</param>
    /// <returns>A new CPU tensor whose shape is the stored one with <paramref name="dim"/> set to <paramref name="length"/>.</returns>
    /// <exception cref="ArgumentException">The tensor is a scalar, or the dimension or the range is out of bounds.</exception>
    public torch.Tensor ReadSlice(string name, int dim, long start, long length)
    {
        var info = GetInfo(name);
        int axis = NormalizeDim(info, dim);
        long size = info.Shape[axis];
        if (start < 0 || length < 0 || start > size - length)
        {
            throw new ArgumentException(
                $"Slice [{start}, {start}+{length}) is out of range for dimension {axis} of size {size} of tensor '{name}' in '{Path}'.",
                nameof(start));
        }

        var shape = (long[])info.Shape.Clone();
        shape[axis] = length;
        var tensor = NewTensor(info, shape);
        var (outer, inner) = Strides(info, axis);
        long run = length * inner;
        if (run == 0 || outer == 0)
        {
            return tensor;
        }

        long data = DataOffsetOf(info);
        byte* destination = TensorMemory.DataPointer(tensor);
        long sourceStride = size * inner;
        var ranges = new List<(long Offset, long Length)>((int)Math.Min(outer, 1 << 16));
        for (long o = 0; o < outer && ranges.Count < 1 << 16; o++)
        {
            ranges.Add(((start * inner) + (o * sourceStride), run));
        }

        // Very many short runs: fetch the span they cover (the coalescing would merge them anyway).
        Fetch(data, outer <= 1 << 16 ? ranges : [(start * inner, ((outer - 1) * sourceStride) + run)], outer * run, exact: false);
        if (ReadsRunsDirectly(run, sourceStride))
        {
            var pieces = new List<(long From, long To, long Length)>((int)Math.Min(outer, int.MaxValue));
            for (long o = 0; o < outer; o++)
            {
                pieces.Add(((start * inner) + (o * sourceStride), o * run, run));
            }

            CopyPieces(data, destination, pieces, exact: false);
            return tensor;
        }

        // Short runs: whole outer rows are read a block at a time and the runs copied out of them.
        ForEachRow(data, null, checked((int)outer), sourceStride, exact: false, (sourceRow, o) => TensorMemory.Copy(sourceRow + (start * inner), destination + (o * run), run));
        return tensor;
    }

    /// <summary>Gathers the given indices along dimension <paramref name="dim"/>, in the given order (duplicates allowed).</summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="dim">Dimension to gather along; negative counts from the end.</param>
    /// <param name="indices">Indices along <paramref name="dim"/>, each in [0, size).</param>
    /// <returns>A new CPU tensor whose shape is the stored one with <paramref name="dim"/> set to the number of indices.</returns>
    /// <exception cref="ArgumentException">The tensor is a scalar, or the dimension or an index is out of bounds.</exception>
    public torch.Tensor ReadIndices(string name, int dim, IReadOnlyList<long> indices)
    {
        ArgumentNullException.ThrowIfNull(indices);
        var info = GetInfo(name);
        int axis = NormalizeDim(info, dim);
        long size = info.Shape[axis];
        CheckIndices(info, axis, indices, nameof(indices));

        var shape = (long[])info.Shape.Clone();
        shape[axis] = indices.Count;
        var tensor = NewTensor(info, shape);
        var (outer, inner) = Strides(info, axis);
        if (indices.Count == 0 || outer == 0 || inner == 0)
        {
            return tensor;
        }

        // Consecutive ascending indices are merged into one run, so contiguous selections cost one copy per outer row.
        List<IndexRun> runs = Runs(indices);
        long data = DataOffsetOf(info);
        byte* destination = TensorMemory.DataPointer(tensor);
        long sourceStride = size * inner;
        long destinationStride = checked(indices.Count * inner);
        long needed = indices.Count * inner * outer;
        if (outer == 1)
        {
            Fetch(data, [.. runs.Select(run => (run.First * inner, run.Count * inner))], needed, exact: true);

            // Rows of a matrix (or entries of a vector): each run is one read, split and spread over threads.
            CopyPieces(data, destination, [.. runs.Select(run => (run.First * inner, run.Position * inner, run.Count * inner))], exact: true);
            return tensor;
        }

        Fetch(data, [(0, info.ByteLength)], needed, exact: false);
        if (ReadsRunsDirectly(needed / (outer * runs.Count), sourceStride))
        {
            var pieces = new List<(long From, long To, long Length)>((int)Math.Min(outer * runs.Count, int.MaxValue));
            for (long o = 0; o < outer; o++)
            {
                pieces.AddRange(runs.Select(run => ((o * sourceStride) + (run.First * inner), (o * destinationStride) + (run.Position * inner), run.Count * inner)));
            }

            CopyPieces(data, destination, pieces, exact: false);
            return tensor;
        }

        ForEachRow(data, null, checked((int)outer), sourceStride, exact: false, (sourceRow, o) =>
        {
            byte* destinationRow = destination + (o * destinationStride);
            foreach (IndexRun run in runs)
            {
                TensorMemory.Copy(sourceRow + (run.First * inner), destinationRow + (run.Position * inner), run.Count * inner);
            }
        });
        return tensor;
    }

    /// <summary>
    /// Reads a sub-matrix of a 2-D tensor: the given rows (in order), and of each row only the given columns (in order).
    /// Only kept elements are copied out of the rows read, so a student matrix costs its own size in copying.
    /// </summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="rows">Row indices (duplicates allowed).</param>
    /// <param name="columns">Column indices (duplicates allowed).</param>
    /// <returns>A new CPU tensor [rows, columns] of the stored dtype.</returns>
    /// <exception cref="ArgumentException">The tensor is not 2-D, or an index is out of range.</exception>
    public torch.Tensor ReadSubmatrix(string name, IReadOnlyList<long> rows, IReadOnlyList<long> columns)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(columns);
        var info = GetInfo(name);
        if (info.Rank != 2)
        {
            throw new ArgumentException($"Tensor '{name}' in '{Path}' has rank {info.Rank}; a sub-matrix needs a 2-D tensor.", nameof(name));
        }

        CheckIndices(info, 0, rows, nameof(rows));
        CheckIndices(info, 1, columns, nameof(columns));
        var tensor = NewTensor(info, [rows.Count, columns.Count]);
        if (rows.Count == 0 || columns.Count == 0)
        {
            return tensor;
        }

        GatherSubmatrix(info, rows, columns, TensorMemory.DataPointer(tensor));
        return tensor;
    }

    /// <summary>
    /// Rows (along dimension 0) of a tensor, and of each row only <paramref name="columns"/> when given (2-D tensors),
    /// copied as stored bytes into <paramref name="destination"/>: what <see cref="ReadIndices"/> along dimension 0 or
    /// <see cref="ReadSubmatrix"/> returns, without a tensor in between, so a caller that streams the bytes on (a build)
    /// copies each kept element once.
    /// </summary>
    /// <remarks>
    /// Like the whole-tensor reads, it asks for huge pages for the whole 2 MiB blocks of the bytes it fills
    /// (<c>madvise</c>, Linux), so a buffer filled for the first time maps 2 MiB at a time; a buffer reused keeps its pages.
    /// </remarks>
    /// <returns>The bytes written at the start of <paramref name="destination"/>.</returns>
    /// <exception cref="ArgumentException">An index is out of range, columns are given for a tensor that is not 2-D, or the destination is too short.</exception>
    public long ReadRowsInto(string name, IReadOnlyList<long> rows, IReadOnlyList<long>? columns, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var info = GetInfo(name);
        NormalizeDim(info, 0);
        CheckIndices(info, 0, rows, nameof(rows));
        if (columns is not null)
        {
            if (info.Rank != 2)
            {
                throw new ArgumentException($"Tensor '{name}' in '{Path}' has rank {info.Rank}; selecting columns needs a 2-D tensor.", nameof(columns));
            }

            CheckIndices(info, 1, columns, nameof(columns));
        }

        long rowBytes = Strides(info, 0).Inner;
        long length = rows.Count * (columns is null ? rowBytes : columns.Count * info.DType.ElementSize());
        if (destination.Length < length)
        {
            throw new ArgumentException($"The destination holds {destination.Length} bytes; rows of tensor '{name}' in '{Path}' need {length}.", nameof(destination));
        }

        if (length == 0)
        {
            return 0;
        }

        fixed (byte* pinned = destination)
        {
            // A caller's buffer filled for the first time (a build's chunk buffers) maps 2 MiB at a time.
            TensorMemory.AdviseHugePages(pinned, length);
            if (columns is not null)
            {
                GatherSubmatrix(info, rows, columns, pinned);
                return length;
            }

            long data = DataOffsetOf(info);
            List<IndexRun> runs = Runs(rows);
            Fetch(data, [.. runs.Select(run => (run.First * rowBytes, run.Count * rowBytes))], length, exact: true);
            CopyPieces(data, pinned, [.. runs.Select(run => (run.First * rowBytes, run.Position * rowBytes, run.Count * rowBytes))], exact: true);
            return length;
        }
    }

    /// <summary>The kept <paramref name="columns"/> of the kept <paramref name="rows"/> of a 2-D tensor, into <paramref name="destination"/>.</summary>
    private void GatherSubmatrix(SafetensorsTensorInfo info, IReadOnlyList<long> rows, IReadOnlyList<long> columns, byte* destination)
    {
        long element = info.DType.ElementSize();
        long sourceRowBytes = info.Shape[1] * element;
        IndexRun[] runs = [.. Runs(columns)];
        long data = DataOffsetOf(info);
        long destinationRowBytes = columns.Count * element;
        // Whole rows: the kept columns of a row rarely skip a page.
        Fetch(data, [.. Runs(rows).Select(run => (run.First * sourceRowBytes, run.Count * sourceRowBytes))], (long)rows.Count * destinationRowBytes, exact: true);

        // Scattered channels make most runs a few elements long; copying them one by one from an index list then beats a
        // copy call per run. Long runs (whole heads, neurons in blocks) are copied as runs.
        // Where the CPU has AVX-512, such rows are packed a block of 64 bytes at a time instead (RowCompressor).
        bool shortRuns = element is 2 or 4 && columns.Count < ShortRunGatherLength * runs.Length;
        RowCompressor? compressor = shortRuns ? RowCompressor.TryCreate(columns, element, info.Shape[1]) : null;
        int[]? gather = shortRuns && compressor is null ? [.. columns.Select(c => (int)c)] : null;

        // Optimized at once, like the gather below: the rows of one build are copied long before tiered compilation would
        // replace this callback's unoptimized first version.
        ForEachRow(data, rows, rows.Count, sourceRowBytes, exact: true, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (sourceRow, r) =>
        {
            byte* destinationRow = destination + (r * destinationRowBytes);
            if (compressor is not null)
            {
                compressor.CompressRow(sourceRow, destinationRow);
            }
            else if (gather is not null && element == 2)
            {
                Gather((ushort*)sourceRow, (ushort*)destinationRow, gather);
            }
            else if (gather is not null)
            {
                Gather((uint*)sourceRow, (uint*)destinationRow, gather);
            }
            else
            {
                foreach (IndexRun run in runs)
                {
                    Buffer.MemoryCopy(sourceRow + (run.First * element), destinationRow + (run.Position * element), run.Count * element, run.Count * element);
                }
            }
        });
    }

    /// <summary>What a row-by-row read does with one source row: <paramref name="sourceRow"/> is row <paramref name="position"/> of the read's row list.</summary>
    private delegate void RowAction(byte* sourceRow, int position);

    /// <summary>Rows read a block at a time hold at most this many bytes (or one row, if longer).</summary>
    internal const long RowBlockBytes = 256 * 1024;

    /// <summary>
    /// Calls <paramref name="action"/> for every row in <paramref name="rows"/> (indices of rows of <paramref name="rowBytes"/>
    /// bytes from file offset <paramref name="data"/>; null: rows 0..<paramref name="count"/>-1), with the row read into a
    /// buffer of the calling thread: consecutive ascending rows are read together, up to <see cref="RowBlockBytes"/>, so a
    /// block costs one read. Blocks of rows run on up to <see cref="GatherThreads"/> threads, which also overlaps the reads
    /// that wait for storage.
    /// </summary>
    private void ForEachRow(long data, IReadOnlyList<long>? rows, int count, long rowBytes, bool exact, RowAction action)
    {
        long blockRows = Math.Max(1, RowBlockBytes / rowBytes);
        ForEachRowBlock(count, rowBytes, (first, end) =>
        {
            using var buffer = ReadBuffer.Rent(blockRows * rowBytes);
            byte* block = buffer.Pointer;
            for (int r = first; r < end;)
            {
                long row = rows?[r] ?? r;
                int held = 1;
                while (r + held < end && held < blockRows && (rows?[r + held] ?? r + held) == row + held)
                {
                    held++;
                }

                ReadAt(data + (row * rowBytes), block, held * rowBytes, exact);
                for (int k = 0; k < held; k++)
                {
                    action(block + (k * rowBytes), r + k);
                }

                r += held;
            }
        });
    }

    /// <summary>
    /// Whether pieces of <paramref name="pieceBytes"/> out of rows of <paramref name="rowBytes"/> are read each on its own
    /// (long pieces, or rows too long to buffer) rather than by reading whole rows and copying the pieces out of them
    /// (short pieces: one read per row block instead of one per piece).
    /// </summary>
    internal static bool ReadsRunsDirectly(long pieceBytes, long rowBytes) => pieceBytes >= RowBlockBytes / 4 || rowBytes > 16 * RowBlockBytes;

    /// <summary>
    /// Below this many bytes a copy stays on the calling thread: starting workers costs more than it saves.
    /// </summary>
    internal const long ParallelCopyBytes = 1L << 20;

    /// <summary>
    /// Threads a gather may use: LibTorch's intra-op thread count (<c>torch.set_num_threads</c>, which the commands'
    /// <c>--threads</c> sets), so reading never asks for more cores than the model code is configured to use.
    /// </summary>
    internal static int GatherThreads => Math.Max(1, torch.get_num_threads());

    /// <summary>
    /// Calls <paramref name="copy"/> with blocks [first, end) covering rows 0..<paramref name="rowCount"/>-1, on up to
    /// <see cref="GatherThreads"/> threads when the rows hold at least <see cref="ParallelCopyBytes"/>.
    /// </summary>
    private static void ForEachRowBlock(int rowCount, long bytesPerRow, Action<int, int> copy)
    {
        int threads = GatherThreads;
        long total = rowCount * bytesPerRow;
        if (threads == 1 || total < ParallelCopyBytes || rowCount < 2)
        {
            copy(0, rowCount);
            return;
        }

        // A few blocks per thread even out rows whose pages are cached and rows that wait for storage.
        int blocks = (int)Math.Min(rowCount, Math.Min(threads * 4L, Math.Max(2, total / (ParallelCopyBytes / 4))));
        Parallel.For(0, blocks, new ParallelOptions { MaxDegreeOfParallelism = threads }, block =>
            copy((int)((long)rowCount * block / blocks), (int)((long)rowCount * (block + 1) / blocks)));
    }

    /// <summary>
    /// Reads byte ranges (<c>From</c> offsets in the file from <paramref name="data"/>, <c>To</c> offsets from
    /// <paramref name="destination"/>), split into pieces of at most <see cref="ParallelCopyBytes"/> that up to
    /// <see cref="GatherThreads"/> threads take in file order (so the kernel sees one sequential stream it can read ahead
    /// of, not one per thread). Each piece is read through a buffer of the thread's, which stays mapped, and copied on from
    /// there: reading straight into a new tensor made the kernel fault its fresh pages in inside the copy, and reading every
    /// tensor of a checkpoint took about twice as long (the <c>io</c> benchmark).
    /// </summary>
    private void CopyPieces(long data, byte* destination, List<(long From, long To, long Length)> ranges, bool exact)
    {
        long total = 0;
        foreach (var range in ranges)
        {
            total += range.Length;
        }

        var pieces = new List<(long From, long To, long Length)>((int)Math.Min(ranges.Count + (total / ParallelCopyBytes), int.MaxValue));
        foreach ((long from, long to, long length) in ranges)
        {
            for (long done = 0; done < length; done += ParallelCopyBytes)
            {
                pieces.Add((from + done, to + done, Math.Min(ParallelCopyBytes, length - done)));
            }
        }

        int threads = total < 2 * ParallelCopyBytes ? 1 : Math.Min(GatherThreads, pieces.Count);
        int next = -1;
        void Work()
        {
            using var buffer = ReadBuffer.Rent(RowBlockBytes);
            for (int i = Interlocked.Increment(ref next); i < pieces.Count; i = Interlocked.Increment(ref next))
            {
                (long from, long to, long length) = pieces[i];
                for (long done = 0; done < length; done += RowBlockBytes)
                {
                    long part = Math.Min(RowBlockBytes, length - done);
                    ReadAt(data + from + done, buffer.Pointer, part, exact);
                    TensorMemory.Copy(buffer.Pointer, destination + to + done, part);
                }
            }
        }

        if (threads == 1)
        {
            Work();
        }
        else
        {
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, _ => Work());
        }
    }

    /// <summary>Mean run length below which <see cref="ReadSubmatrix"/> gathers element by element.</summary>
    private const int ShortRunGatherLength = 8;

    /// <summary>destination[j] = source[columns[j]] for every j: one row of a sub-matrix.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Gather<T>(T* source, T* destination, int[] columns)
        where T : unmanaged
    {
        fixed (int* index = columns)
        {
            int n = columns.Length, j = 0;
            for (; j <= n - 4; j += 4)
            {
                destination[j] = source[index[j]];
                destination[j + 1] = source[index[j + 1]];
                destination[j + 2] = source[index[j + 2]];
                destination[j + 3] = source[index[j + 3]];
            }

            for (; j < n; j++)
            {
                destination[j] = source[index[j]];
            }
        }
    }

    /// <summary>
    /// The runs of consecutive ascending indices in <paramref name="indices"/>: each run copies <c>Count</c> source
    /// elements from index <c>First</c> to list position <c>Position</c> onward.
    /// </summary>
    private static List<IndexRun> Runs(IReadOnlyList<long> indices)
    {
        var runs = new List<IndexRun>();
        for (int i = 0; i < indices.Count;)
        {
            int j = i + 1;
            while (j < indices.Count && indices[j] == indices[j - 1] + 1)
            {
                j++;
            }

            runs.Add(new IndexRun(i, indices[i], j - i));
            i = j;
        }

        return runs;
    }

    private void CheckIndices(SafetensorsTensorInfo info, int axis, IReadOnlyList<long> indices, string parameter)
    {
        long size = info.Shape[axis];
        for (int i = 0; i < indices.Count; i++)
        {
            if (indices[i] < 0 || indices[i] >= size)
            {
                throw new ArgumentException(
                    $"Index {indices[i]} (position {i}) is out of range for dimension {axis} of size {size} of tensor '{info.Name}' in '{Path}'.",
                    parameter);
            }
        }
    }

    /// <summary>
    /// Asks storage to start reading the given rows (indices along dimension 0, whole rows) of <paramref name="name"/>
    /// into the page cache, coalesced as a read would, and returns at once. Lets a caller overlap the storage reads of
    /// its next read with the copying of this one; the later read counts the bytes, this does not.
    /// </summary>
    /// <exception cref="ArgumentException">The tensor is a scalar, or an index is out of range.</exception>
    public void PrefetchRows(string name, IReadOnlyList<long> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var info = GetInfo(name);
        NormalizeDim(info, 0);
        CheckIndices(info, 0, rows, nameof(rows));
        long rowBytes = Strides(info, 0).Inner;
        long data = DataOffsetOf(info);
        List<(long Offset, long Length)> fetch = Coalesce([.. Runs(rows).Select(run => (run.First * rowBytes, run.Count * rowBytes))], data, Environment.SystemPageSize);
        foreach ((long offset, long length) in fetch)
        {
            Prefetch(data + offset, length, exact: true);
        }
    }

    /// <summary>Copies raw bytes of a tensor, starting <paramref name="byteOffset"/> bytes into its data, into <paramref name="destination"/>.</summary>
    /// <remarks>Works for every dtype, including those TorchSharp lacks; use it to stream a tensor without materializing it.</remarks>
    /// <exception cref="ArgumentException">The range runs past the end of the tensor's data.</exception>
    public void ReadBytes(string name, long byteOffset, Span<byte> destination)
    {
        var info = GetInfo(name);
        if (byteOffset < 0 || byteOffset > info.ByteLength - destination.Length)
        {
            throw new ArgumentException(
                $"Byte range [{byteOffset}, {byteOffset}+{destination.Length}) is outside the {info.ByteLength} bytes of tensor '{name}' in '{Path}'.",
                nameof(byteOffset));
        }

        if (destination.IsEmpty)
        {
            return;
        }

        long data = DataOffsetOf(info);
        Fetch(data, [(byteOffset, destination.Length)], destination.Length, exact: false);
        fixed (byte* pinned = destination)
        {
            ReadAt(data + byteOffset, pinned, destination.Length, exact: false);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _file.Dispose();
        _streamingFile.Dispose();
    }

    /// <inheritdoc />
    public override string ToString() => $"{Path} ({Tensors.Count} tensors, {TotalTensorBytes} bytes)";

    /// <summary>
    /// Asks the kernel to read the bytes at file offsets <paramref name="start"/>..+<paramref name="length"/> into its page
    /// cache ahead of the reads that copy them; returns once the reads are queued, not when they finish. With
    /// <paramref name="exact"/> (reads that select rows or columns) the range is announced in pieces of
    /// <see cref="PrefetchPieceBytes"/>, so every page the copy needs is already asked for. Otherwise (whole tensors,
    /// slices) it is announced once, which queues its start; the copy's own reads fetch the rest.
    /// </summary>
    private void Prefetch(long start, long length, bool exact)
    {
        if (!OperatingSystem.IsLinux() || length <= 0)
        {
            return;
        }

        long pageSize = Environment.SystemPageSize;
        long begin = start / pageSize * pageSize;
        long end = (start + length + pageSize - 1) / pageSize * pageSize;
        if (!exact)
        {
            _ = Fadvise(_streamingFile, begin, end - begin, FadviseWillNeed);
            return;
        }

        for (long piece = begin; piece < end; piece += PrefetchPieceBytes)
        {
            _ = Fadvise(_file, piece, Math.Min(PrefetchPieceBytes, end - piece), FadviseWillNeed);
        }
    }

    /// <summary>
    /// Reads <paramref name="length"/> bytes at file offset <paramref name="offset"/> into <paramref name="destination"/>,
    /// through the random-access handle for <paramref name="exact"/> reads (selected rows), else the streaming one.
    /// </summary>
    private void ReadAt(long offset, byte* destination, long length, bool exact)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        while (length > 0)
        {
            int read = RandomAccess.Read(exact ? _file : _streamingFile, new Span<byte>(destination, (int)Math.Min(length, 1 << 30)), offset);
            if (read <= 0)
            {
                throw new InvalidDataException($"'{Path}' ended at byte {offset}, before the tensor data its header declares (the file was cut short after it was opened).");
            }

            destination += read;
            offset += read;
            length -= read;
        }
    }

    /// <summary>
    /// Asks storage for the byte <paramref name="ranges"/> (offsets from file offset <paramref name="tensorData"/>) as whole
    /// pages, in few large sequential reads (<see cref="Coalesce"/>), announced page by page when <paramref name="exact"/>
    /// (<see cref="Prefetch"/>); counts <paramref name="needed"/> and the fetched bytes.
    /// </summary>
    private void Fetch(long tensorData, IReadOnlyList<(long Offset, long Length)> ranges, long needed, bool exact)
    {
        Interlocked.Add(ref _bytesNeeded, needed);
        long fetched = 0;
        List<(long Offset, long Length)> fetch = Coalesce(ranges, tensorData, Environment.SystemPageSize);
        foreach ((long offset, long length) in fetch)
        {
            fetched += length;
            Prefetch(tensorData + offset, length, exact);
        }

        Interlocked.Add(ref _bytesFetched, fetched);
    }

    /// <summary>
    /// The ranges to fetch for byte <paramref name="ranges"/> at offsets from <paramref name="origin"/>: each widened to the
    /// whole pages of <paramref name="pageSize"/> it touches (pages are counted from address 0, so <paramref name="origin"/>
    /// places the offsets), sorted, and merged where they overlap or touch; then gaps shorter than <paramref name="maxGap"/>
    /// are merged, shortest first, while the gap bytes added stay within <paramref name="slack"/> of the page bound (the
    /// pages the inputs touch). Empty ranges are dropped. Every input byte is covered, and the result's total length is at
    /// most (1 + <paramref name="slack"/>) times the page bound.
    /// </summary>
    internal static List<(long Offset, long Length)> Coalesce(IReadOnlyList<(long Offset, long Length)> ranges, long origin, long pageSize, long maxGap = CoalesceGapBytes, double slack = CoalesceSlack)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(pageSize, 1);
        var pages = new List<(long Begin, long End)>(ranges.Count);
        foreach ((long offset, long length) in ranges)
        {
            if (length > 0)
            {
                long begin = FloorDiv(origin + offset, pageSize) * pageSize;
                long end = (FloorDiv(origin + offset + length - 1, pageSize) + 1) * pageSize;
                pages.Add((begin, end));
            }
        }

        pages.Sort();
        var runs = new List<(long Begin, long End)>(pages.Count);
        long bound = 0;
        foreach ((long begin, long end) in pages)
        {
            if (runs.Count > 0 && begin <= runs[^1].End)
            {
                bound += Math.Max(0, end - runs[^1].End);
                runs[^1] = (runs[^1].Begin, Math.Max(runs[^1].End, end));
            }
            else
            {
                bound += end - begin;
                runs.Add((begin, end));
            }
        }

        // The gaps worth closing (shorter than maxGap), shortest first, each closed while the budget lasts.
        var merge = new bool[Math.Max(0, runs.Count - 1)];
        long budget = (long)(slack * bound), spent = 0;
        foreach (int i in Enumerable.Range(0, merge.Length).Where(i => runs[i + 1].Begin - runs[i].End < maxGap).OrderBy(i => runs[i + 1].Begin - runs[i].End))
        {
            long gap = runs[i + 1].Begin - runs[i].End;
            if (spent + gap > budget)
            {
                break;
            }

            spent += gap;
            merge[i] = true;
        }

        var merged = new List<(long Offset, long Length)>(runs.Count);
        for (int i = 0; i < runs.Count; i++)
        {
            if (i > 0 && merge[i - 1])
            {
                merged[^1] = (merged[^1].Offset, runs[i].End - origin - merged[^1].Offset);
            }
            else
            {
                merged.Add((runs[i].Begin - origin, runs[i].End - runs[i].Begin));
            }
        }

        return merged;

        static long FloorDiv(long a, long b) => a >= 0 ? a / b : -((-a + b - 1) / b);
    }

    private const int FadviseWillNeed = 3;

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int Fadvise(SafeFileHandle file, long offset, long length, int advice);

    /// <summary>The file offset where the data of <paramref name="info"/> begins.</summary>
    private long DataOffsetOf(SafetensorsTensorInfo info)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        return DataStart + info.DataBegin;
    }

    private torch.Tensor NewTensor(SafetensorsTensorInfo info, long[] shape)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (!info.DType.TryToScalarType(out var scalarType))
        {
            throw new NotSupportedException(
                $"Tensor '{info.Name}' in '{Path}' has dtype {info.DType.ToHeaderString()}, which TorchSharp cannot hold; use ReadBytes.");
        }

        return torch.empty(shape, scalarType, torch.CPU);
    }

    private int NormalizeDim(SafetensorsTensorInfo info, int dim)
    {
        int rank = info.Shape.Length;
        if (rank == 0)
        {
            throw new ArgumentException($"Tensor '{info.Name}' in '{Path}' is a scalar and cannot be sliced.", nameof(dim));
        }

        int axis = dim < 0 ? dim + rank : dim;
        if (axis < 0 || axis >= rank)
        {
            throw new ArgumentException($"Dimension {dim} is out of range for tensor '{info.Name}' of rank {rank} in '{Path}'.", nameof(dim));
        }

        return axis;
    }

    /// <summary>Rows before <paramref name="axis"/>, and bytes of one index step along it.</summary>
    private static (long Outer, long Inner) Strides(SafetensorsTensorInfo info, int axis)
    {
        long outer = 1;
        for (int d = 0; d < axis; d++)
        {
            outer *= info.Shape[d];
        }

        long inner = info.DType.ElementSize();
        for (int d = axis + 1; d < info.Shape.Length; d++)
        {
            inner *= info.Shape[d];
        }

        return (outer, inner);
    }
}

/// <summary>A run of consecutive ascending indices: <paramref name="Count"/> indices from <paramref name="First"/>, found at <paramref name="Position"/> of the index list.</summary>
/// <param name="Position">Where the run starts in the index list (and so in the destination).</param>
/// <param name="First">The first index of the run (where it starts in the source).</param>
/// <param name="Count">Indices in the run.</param>
internal readonly record struct IndexRun(int Position, long First, long Count);
