using System.Buffers;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>A tensor declared to a <see cref="CheckpointWriter"/> before its data is written.</summary>
/// <param name="Name">Tensor name (state-dict key).</param>
/// <param name="DType">Element type stored in the file.</param>
/// <param name="Shape">Dimensions; empty for a scalar.</param>
public sealed record CheckpointTensor(string Name, SafetensorsDType DType, long[] Shape)
{
    /// <summary>Number of elements (1 for a scalar).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => checked(a * b));

    /// <summary>Bytes the tensor occupies in the file.</summary>
    public long ByteLength => checked(ElementCount * DType.ElementSize());
}

/// <summary>How a <see cref="CheckpointWriter"/> lays out a checkpoint.</summary>
public sealed record CheckpointWriterOptions
{
    /// <summary>The <c>__metadata__</c> written by default: <c>{"format": "pt"}</c>, which Hugging Face loaders expect.</summary>
    public static readonly IReadOnlyDictionary<string, string> DefaultMetadata = new Dictionary<string, string> { ["format"] = "pt" };

    /// <summary>
    /// Most tensor bytes per shard (see <see cref="ByteSize.Parse"/>). Tensors are packed in declared order; a tensor larger
    /// than this gets a shard of its own. Default: no limit (one <c>model.safetensors</c>).
    /// </summary>
    public long MaxShardBytes { get; init; } = long.MaxValue;

    /// <summary>The <c>__metadata__</c> map of every shard; null or empty writes none.</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; } = DefaultMetadata;

    /// <summary>
    /// For <see cref="CheckpointWriter.WriteAsync"/>: the type floating-point tensors are stored as (e.g. BF16); null keeps
    /// each tensor's own type. Integer and boolean tensors always keep theirs.
    /// </summary>
    public SafetensorsDType? FloatingPointDType { get; init; }

    /// <summary>
    /// Every this many bytes appended to a shard, the kernel is asked to start writing them to storage (Linux
    /// <c>sync_file_range</c>; elsewhere nothing), so writing overlaps the rest of the work and the flush that ends each shard
    /// waits for the last stretch only, not the whole shard. 0 leaves writeback to the kernel. Durability is the same either
    /// way: each shard is flushed to disk before it is renamed into place. Default 32 MiB.
    /// </summary>
    public long WritebackBytes { get; init; } = 32L << 20;

    /// <summary>
    /// Write shards with direct I/O where the platform and file system allow it (Linux <c>O_DIRECT</c>; elsewhere, and where
    /// the file system refuses it, through the page cache as usual): bytes go from an aligned buffer of the writer straight
    /// to storage instead of being copied into the page cache, which saves most of the CPU a large write costs, but leaves
    /// the file uncached, so reading it back at once comes from storage. For checkpoints written once and not read right
    /// away. Output bytes, temporary names and durability are the same either way. Default false.
    /// </summary>
    public bool DirectWrite { get; init; }

    /// <summary>Bytes gathered before each direct write (a multiple of <see cref="DirectFileWriter.Alignment"/>).</summary>
    internal int DirectWriteBufferBytes { get; init; } = 16 << 20;

    /// <summary>
    /// Memory a writer with these options holds for the whole time a shard is open, for callers that budget memory: the
    /// direct-write buffer when <see cref="DirectWrite"/> is set, else 0 (page-cache writes only rent short-lived copy buffers).
    /// </summary>
    public long HeldBufferBytes => DirectWrite ? DirectWriteBufferBytes : 0;

    /// <summary>Opens a shard for direct writing, or returns null where direct I/O is refused (replaceable to exercise the fallback).</summary>
    internal Func<string, int, DirectFileWriter?> OpenDirect { get; init; } = DirectFileWriter.TryCreate;
}

/// <summary>
/// Writes a safetensors checkpoint tensor by tensor, so a model never has to be in memory at once. Declare every tensor
/// (name, dtype, shape) up front, write each one's data in declared order, then call <see cref="CompleteAsync"/>.
/// </summary>
/// <remarks>
/// Output follows Hugging Face: one <c>model.safetensors</c>, or shards <c>model-00001-of-0000N.safetensors</c> plus
/// <c>model.safetensors.index.json</c>. Every file is written under a temporary name in the target directory and renamed
/// only once the whole checkpoint is complete; a failure, a cancellation or disposing before completion deletes the
/// temporary files and leaves the directory as it was. Identical input gives byte-identical files. A writer is used by one
/// caller at a time (its calls are sequential by nature: each appends to the same file).
/// </remarks>
public sealed partial class CheckpointWriter : IAsyncDisposable, IDisposable
{
    private const int CopyBufferBytes = 4 << 20;
    private static readonly Regex ShardFilePattern = ShardFileRegex();

    private readonly CheckpointTensor[] _tensors;
    private readonly int[] _shardOfTensor;
    private readonly long[] _offsetInShard;
    private readonly string[] _shardNames;
    private readonly byte[][] _shardHeaders;
    private readonly long[] _shardDataBytes;
    private readonly string?[] _tempPaths;
    private readonly IReadOnlyDictionary<string, string>? _metadata;
    private readonly ILogger _logger;
    private readonly long _writebackBytes;
    private readonly bool _directWrite;
    private readonly int _directWriteBufferBytes;
    private readonly Func<string, int, DirectFileWriter?> _openDirect;
    private FileStream? _stream;
    private DirectFileWriter? _direct;
    private long _writebackFrom;
    private int _streamShard = -1;
    private int _next;
    private long _writtenInTensor;
    private State _state;

    private enum State
    {
        Writing,
        Completed,
        Aborted,
    }

    private CheckpointWriter(string directory, CheckpointTensor[] tensors, CheckpointWriterOptions options, ILogger logger)
    {
        Directory = directory;
        _tensors = tensors;
        _metadata = options.Metadata is { Count: > 0 } ? options.Metadata : null;
        _logger = logger;
        ArgumentOutOfRangeException.ThrowIfNegative(options.WritebackBytes);
        _writebackBytes = options.WritebackBytes;
        _directWrite = options.DirectWrite;
        _directWriteBufferBytes = options.DirectWriteBufferBytes;
        _openDirect = options.OpenDirect;

        // Greedy packing in declared order, as Hugging Face shards a state dict.
        _shardOfTensor = new int[tensors.Length];
        _offsetInShard = new long[tensors.Length];
        var shardBytes = new List<long>();
        long current = 0;
        for (int i = 0; i < tensors.Length; i++)
        {
            long bytes = tensors[i].ByteLength;
            if (shardBytes.Count == 0 || (current > 0 && bytes > options.MaxShardBytes - current))
            {
                shardBytes.Add(0);
                current = 0;
            }

            _shardOfTensor[i] = shardBytes.Count - 1;
            _offsetInShard[i] = current;
            current += bytes;
            shardBytes[^1] = current;
        }

        if (shardBytes.Count == 0)
        {
            shardBytes.Add(0);
        }

        _shardDataBytes = shardBytes.ToArray();
        int shards = _shardDataBytes.Length;
        _shardNames = shards == 1
            ? [CheckpointReader.SingleFileName]
            : Enumerable.Range(1, shards).Select(s => ShardFileName(s, shards)).ToArray();
        _shardHeaders = Enumerable.Range(0, shards).Select(BuildHeader).ToArray();
        _tempPaths = new string?[shards + 1];
        TotalTensorBytes = tensors.Sum(t => t.ByteLength);
        Log.Planned(_logger, tensors.Length, TotalTensorBytes, shards, directory);
    }

    /// <summary>The directory the checkpoint is written to.</summary>
    public string Directory { get; }

    /// <summary>The declared tensors, in write order.</summary>
    public IReadOnlyList<CheckpointTensor> Tensors => _tensors;

    /// <summary>File names the shards will have, in order (<c>model.safetensors</c> when there is one).</summary>
    public IReadOnlyList<string> ShardFileNames => _shardNames;

    /// <summary>Sum of the byte lengths of all declared tensors (the index's <c>metadata.total_size</c>).</summary>
    public long TotalTensorBytes { get; }

    /// <summary>The tensor whose data is expected next, or null when all have been written.</summary>
    public CheckpointTensor? NextTensor => _next < _tensors.Length ? _tensors[_next] : null;

    /// <summary>The Hugging Face shard file name <c>model-00001-of-00003.safetensors</c>.</summary>
    public static string ShardFileName(int shard, int shardCount) =>
        string.Create(CultureInfo.InvariantCulture, $"model-{shard:D5}-of-{shardCount:D5}.safetensors");

    /// <summary>Starts a checkpoint in <paramref name="directory"/> (created if missing) for the declared tensors.</summary>
    /// <param name="directory">Target directory.</param>
    /// <param name="tensors">Every tensor, in the order their data will be written.</param>
    /// <param name="options">Sharding and metadata; null for the defaults.</param>
    /// <param name="logger">Receives the shard plan and the completion; null for none.</param>
    /// <exception cref="ArgumentException">A name is empty, repeated or reserved, a dimension is negative, a size overflows, or the shard size is not positive.</exception>
    public static CheckpointWriter Create(string directory, IReadOnlyList<CheckpointTensor> tensors, CheckpointWriterOptions? options = null, ILogger? logger = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(tensors);
        options ??= new CheckpointWriterOptions();
        if (options.MaxShardBytes <= 0)
        {
            throw new ArgumentException($"MaxShardBytes must be positive, got {options.MaxShardBytes}.", nameof(options));
        }

        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var tensor in tensors)
        {
            ArgumentNullException.ThrowIfNull(tensor, nameof(tensors));
            if (string.IsNullOrEmpty(tensor.Name) || tensor.Name == SafetensorsHeader.MetadataKey)
            {
                throw new ArgumentException($"Tensor name '{tensor.Name}' is empty or reserved.", nameof(tensors));
            }

            if (!names.Add(tensor.Name))
            {
                throw new ArgumentException($"Tensor '{tensor.Name}' is declared more than once.", nameof(tensors));
            }

            if (tensor.Shape is null || tensor.Shape.Any(d => d < 0))
            {
                throw new ArgumentException($"Tensor '{tensor.Name}' has a missing shape or a negative dimension.", nameof(tensors));
            }

            try
            {
                _ = tensor.ByteLength;
            }
            catch (OverflowException ex)
            {
                throw new ArgumentException($"The byte size of tensor '{tensor.Name}' overflows.", nameof(tensors), ex);
            }
        }

        string full = System.IO.Path.GetFullPath(directory);
        System.IO.Directory.CreateDirectory(full);
        return new CheckpointWriter(full, tensors.ToArray(), options, logger ?? NullLogger.Instance);
    }

    /// <summary>
    /// Writes a whole checkpoint of in-memory tensors: declares them in list order (their own dtype, or
    /// <see cref="CheckpointWriterOptions.FloatingPointDType"/> for floating-point ones), writes them and completes.
    /// </summary>
    /// <returns>The files written.</returns>
    public static async Task<IReadOnlyList<CheckpointShard>> WriteAsync(
        string directory,
        IReadOnlyList<(string Name, torch.Tensor Tensor)> tensors,
        CheckpointWriterOptions? options = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var declared = tensors.Select(t =>
        {
            ArgumentNullException.ThrowIfNull(t.Tensor, nameof(tensors));
            var dtype = options?.FloatingPointDType is { } target && t.Tensor.is_floating_point()
                ? target
                : SafetensorsDTypes.FromScalarType(t.Tensor.dtype);
            return new CheckpointTensor(t.Name, dtype, t.Tensor.shape);
        }).ToArray();

        await using var writer = Create(directory, declared, options, logger);
        foreach (var (name, tensor) in tensors)
        {
            await writer.WriteTensorAsync(name, tensor, cancellationToken).ConfigureAwait(false);
        }

        return await writer.CompleteAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Writes the data of the next declared tensor, converting it to the declared dtype (and to the CPU) if needed.</summary>
    /// <param name="name">Must be the next declared tensor.</param>
    /// <param name="tensor">Data with the declared shape; any dtype TorchSharp can convert, any device.</param>
    /// <param name="cancellationToken">Cancels the write; the checkpoint is then abandoned.</param>
    /// <exception cref="ArgumentException">Out of order, or the shape differs from the declaration. Any failure abandons the checkpoint.</exception>
    public async Task WriteTensorAsync(string name, torch.Tensor tensor, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        await GuardAsync(async () =>
        {
            var declared = Expect(name, fresh: true);
            if (!tensor.shape.SequenceEqual(declared.Shape))
            {
                throw new ArgumentException(
                    $"Tensor '{name}' has shape [{string.Join(", ", tensor.shape)}] but was declared [{string.Join(", ", declared.Shape)}].",
                    nameof(tensor));
            }

            var scalarType = declared.DType.ToScalarType();

            // Dispose scopes are per thread and this method resumes on any thread, so conversions are disposed by hand.
            var owned = new List<torch.Tensor>();
            try
            {
                await WriteConvertedAsync(tensor, scalarType, declared.ByteLength, owned, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                owned.ForEach(t => t.Dispose());
            }
        }).ConfigureAwait(false);
    }

    private async Task WriteConvertedAsync(torch.Tensor tensor, torch.ScalarType scalarType, long length, List<torch.Tensor> owned, CancellationToken cancellationToken)
    {
        var source = tensor;
        if (source.device_type != DeviceType.CPU)
        {
            source = source.cpu();
            owned.Add(source);
        }

        if (source.dtype != scalarType)
        {
            source = source.to_type(scalarType);
            owned.Add(source);
        }

        if (!source.is_contiguous())
        {
            source = source.contiguous();
            owned.Add(source);
        }

        nint address = GetAddress(source);
        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(CopyBufferBytes, Math.Max(length, 1)));
        try
        {
            for (long offset = 0; offset < length;)
            {
                int chunk = (int)Math.Min(buffer.Length, length - offset);
                CopyOut(address, offset, buffer.AsSpan(0, chunk));
                await AppendAsync(buffer.AsMemory(0, chunk), cancellationToken).ConfigureAwait(false);
                offset += chunk;
            }

            if (length == 0)
            {
                await AppendAsync(ReadOnlyMemory<byte>.Empty, cancellationToken).ConfigureAwait(false); // marks an empty tensor written
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// Streams the stored bytes of <paramref name="sourceName"/> from <paramref name="source"/> as the data of the next
    /// declared tensor, without materializing it (for tensors copied unchanged from a checkpoint).
    /// </summary>
    /// <param name="name">Must be the next declared tensor.</param>
    /// <param name="source">Checkpoint to copy from.</param>
    /// <param name="sourceName">Tensor in <paramref name="source"/>; it must have the declared dtype and shape.</param>
    /// <param name="cancellationToken">Cancels the write; the checkpoint is then abandoned.</param>
    /// <exception cref="ArgumentException">Out of order, or the source dtype or shape differs from the declaration. Any failure abandons the checkpoint.</exception>
    /// <exception cref="KeyNotFoundException">The source has no such tensor.</exception>
    public async Task WriteFromAsync(string name, CheckpointReader source, string sourceName, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        await GuardAsync(async () =>
        {
            var declared = Expect(name, fresh: true);
            var info = source.GetInfo(sourceName);
            if (info.DType != declared.DType || !info.Shape.SequenceEqual(declared.Shape))
            {
                throw new ArgumentException(
                    $"Tensor '{sourceName}' of '{source.Location}' is {info.DType.ToHeaderString()} [{string.Join(", ", info.Shape)}] but '{name}' was declared {declared.DType.ToHeaderString()} [{string.Join(", ", declared.Shape)}].",
                    nameof(sourceName));
            }

            long length = info.ByteLength;
            if (length == 0)
            {
                await AppendAsync(ReadOnlyMemory<byte>.Empty, cancellationToken).ConfigureAwait(false);
                return;
            }

            byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(CopyBufferBytes, length));
            try
            {
                for (long offset = 0; offset < length;)
                {
                    int chunk = (int)Math.Min(buffer.Length, length - offset);
                    source.ReadBytes(sourceName, offset, buffer.AsSpan(0, chunk));
                    await AppendAsync(buffer.AsMemory(0, chunk), cancellationToken).ConfigureAwait(false);
                    offset += chunk;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }).ConfigureAwait(false);
    }

    /// <summary>
    /// Appends raw little-endian bytes to the data of the next declared tensor, or of the one in progress; call it as often
    /// as needed until the tensor's <see cref="CheckpointTensor.ByteLength"/> is reached (once with no bytes for an empty tensor).
    /// </summary>
    /// <exception cref="ArgumentException">Out of order, or more bytes than the tensor holds. Any failure abandons the checkpoint.</exception>
    public async Task WriteBytesAsync(string name, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        await GuardAsync(async () =>
        {
            var declared = Expect(name, fresh: false);
            if (data.Length > declared.ByteLength - _writtenInTensor)
            {
                throw new ArgumentException(
                    $"Tensor '{name}' holds {declared.ByteLength} bytes; {_writtenInTensor} were written and {data.Length} more were given.",
                    nameof(data));
            }

            await AppendAsync(data, cancellationToken).ConfigureAwait(false);
        }).ConfigureAwait(false);
    }

    /// <summary>Finishes the last shard, writes the index for a sharded checkpoint and moves every file to its final name.</summary>
    /// <remarks>Checkpoint files of an earlier layout in the directory (a stale index or shards) are deleted afterwards.</remarks>
    /// <returns>The files written, in shard order.</returns>
    /// <exception cref="InvalidOperationException">Not every declared tensor was written.</exception>
    public async Task<IReadOnlyList<CheckpointShard>> CompleteAsync(CancellationToken cancellationToken = default)
    {
        IReadOnlyList<CheckpointShard> shards = [];
        await GuardAsync(async () =>
        {
            if (_next < _tensors.Length)
            {
                throw new InvalidOperationException(
                    $"Checkpoint '{Directory}' is incomplete: tensor '{_tensors[_next].Name}' and {_tensors.Length - _next - 1} more were not written.");
            }

            if (_streamShard < 0)
            {
                await OpenShardAsync(0, cancellationToken).ConfigureAwait(false); // no tensors at all: a header-only file
            }

            await CloseShardAsync(cancellationToken).ConfigureAwait(false);
            int count = _shardNames.Length;
            if (count > 1)
            {
                string indexTemp = NewTempPath(CheckpointReader.IndexFileName);
                _tempPaths[count] = indexTemp;
                await File.WriteAllBytesAsync(indexTemp, BuildIndex(), cancellationToken).ConfigureAwait(false);
            }

            cancellationToken.ThrowIfCancellationRequested();

            // Shards first, index last: a reader sees the new index only once every shard it names is in place.
            var written = new List<CheckpointShard>();
            for (int s = 0; s <= count; s++)
            {
                if (_tempPaths[s] is not { } temp)
                {
                    continue;
                }

                string final = System.IO.Path.Combine(Directory, s < count ? _shardNames[s] : CheckpointReader.IndexFileName);
                File.Move(temp, final, overwrite: true);
                _tempPaths[s] = null;
                if (s < count)
                {
                    written.Add(new CheckpointShard(final, new FileInfo(final).Length));
                }
            }

            _state = State.Completed;
            DeleteStaleFiles();
            shards = written;
            Log.Completed(_logger, Directory, count, TotalTensorBytes);
        }).ConfigureAwait(false);
        return shards;
    }

    /// <summary>Abandons an unfinished checkpoint: closes and deletes its temporary files. Does nothing once completed.</summary>
    public void Dispose()
    {
        if (_state == State.Writing)
        {
            Abort();
        }
    }

    /// <inheritdoc cref="Dispose"/>
    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    private async Task GuardAsync(Func<Task> action)
    {
        if (_state != State.Writing)
        {
            throw new InvalidOperationException(_state == State.Completed
                ? $"Checkpoint '{Directory}' is already complete."
                : $"Checkpoint '{Directory}' was abandoned after an earlier failure or cancellation.");
        }

        try
        {
            await action().ConfigureAwait(false);
        }
        catch
        {
            if (_state == State.Writing)
            {
                Abort();
            }

            throw;
        }
    }

    private CheckpointTensor Expect(string name, bool fresh)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_next >= _tensors.Length)
        {
            throw new ArgumentException($"Tensor '{name}' cannot be written: every declared tensor has been written already.", nameof(name));
        }

        var expected = _tensors[_next];
        if (expected.Name != name)
        {
            throw new ArgumentException($"Tensor '{name}' was written out of order: tensor '{expected.Name}' is next in declared order.", nameof(name));
        }

        if (fresh && _writtenInTensor != 0)
        {
            throw new ArgumentException($"Tensor '{name}' was partly written with raw bytes and cannot be written again as a tensor.", nameof(name));
        }

        return expected;
    }

    private async Task AppendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        int shard = _shardOfTensor[_next];
        if (shard != _streamShard)
        {
            await CloseShardAsync(cancellationToken).ConfigureAwait(false);
            await OpenShardAsync(shard, cancellationToken).ConfigureAwait(false);
        }

        if (!data.IsEmpty && _direct is not null)
        {
            _direct.Write(data.Span);
        }
        else if (!data.IsEmpty)
        {
            await _stream!.WriteAsync(data, cancellationToken).ConfigureAwait(false);
            await StartWritebackAsync(cancellationToken).ConfigureAwait(false);
        }

        _writtenInTensor += data.Length;
        if (_writtenInTensor == _tensors[_next].ByteLength)
        {
            _next++;
            _writtenInTensor = 0;
        }
    }

    private async Task OpenShardAsync(int shard, CancellationToken cancellationToken)
    {
        string temp = NewTempPath(_shardNames[shard]);
        _tempPaths[shard] = temp;
        _streamShard = shard;
        _writebackFrom = 0;
        _direct = _directWrite ? _openDirect(temp, _directWriteBufferBytes) : null;
        if (_direct is not null)
        {
            _direct.Write(_shardHeaders[shard]);
            return;
        }

        _stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
        await _stream.WriteAsync(_shardHeaders[shard], cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Once <see cref="CheckpointWriterOptions.WritebackBytes"/> have been appended since the last time, hands them to the
    /// kernel and asks it to start writing them out, without waiting for the writes to finish.
    /// </summary>
    private async Task StartWritebackAsync(CancellationToken cancellationToken)
    {
        if (_writebackBytes == 0 || !OperatingSystem.IsLinux() || _stream!.Position - _writebackFrom < _writebackBytes)
        {
            return;
        }

        await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        long end = _stream.Position;

        // A hint: where the call fails (a file system without it), the flush at the end of the shard still writes everything.
        _ = SyncFileRange(_stream.SafeFileHandle, _writebackFrom, end - _writebackFrom, SyncFileRangeWrite);
        _writebackFrom = end;
    }

    private const uint SyncFileRangeWrite = 2;

    [LibraryImport("libc", EntryPoint = "sync_file_range", SetLastError = true)]
    private static partial int SyncFileRange(Microsoft.Win32.SafeHandles.SafeFileHandle file, long offset, long length, uint flags);

    private async Task CloseShardAsync(CancellationToken cancellationToken)
    {
        if (_direct is null && _stream is null)
        {
            return;
        }

        long expected = _shardHeaders[_streamShard].Length + _shardDataBytes[_streamShard];
        if (_direct is not null)
        {
            cancellationToken.ThrowIfCancellationRequested();
            _direct.Complete();
            long written = _direct.Length;
            _direct.Dispose();
            _direct = null;
            if (written != expected)
            {
                throw new InvalidOperationException($"Shard '{_shardNames[_streamShard]}' is {written} bytes, expected {expected}.");
            }

            return;
        }

        await _stream!.FlushAsync(cancellationToken).ConfigureAwait(false);
        _stream.Flush(flushToDisk: true);
        long length = _stream.Length;
        await _stream.DisposeAsync().ConfigureAwait(false);
        _stream = null;
        if (length != expected)
        {
            throw new InvalidOperationException($"Shard '{_shardNames[_streamShard]}' is {length} bytes, expected {expected}.");
        }
    }

    private void Abort()
    {
        _state = State.Aborted;
        try
        {
            _stream?.Dispose();
        }
        catch (IOException)
        {
            // The file is deleted below; a failed flush of it does not matter.
        }

        _stream = null;
        _direct?.Dispose();
        _direct = null;
        foreach (string? temp in _tempPaths)
        {
            if (temp is not null)
            {
                TryDelete(temp);
            }
        }

        Array.Clear(_tempPaths);
        Log.Abandoned(_logger, Directory);
    }

    /// <summary>Removes checkpoint files of another layout, so the directory holds exactly one consistent checkpoint.</summary>
    private void DeleteStaleFiles()
    {
        var keep = new HashSet<string>(_shardNames, StringComparer.Ordinal);
        if (_shardNames.Length > 1)
        {
            keep.Add(CheckpointReader.IndexFileName);
        }

        foreach (string path in System.IO.Directory.EnumerateFiles(Directory))
        {
            string name = System.IO.Path.GetFileName(path);
            bool ours = name is CheckpointReader.SingleFileName or CheckpointReader.IndexFileName || ShardFilePattern.IsMatch(name);
            if (ours && !keep.Contains(name))
            {
                Log.DeletedStale(_logger, path);
                TryDelete(path);
            }
        }
    }

    private string NewTempPath(string finalName) =>
        System.IO.Path.Combine(Directory, $".{finalName}.{Guid.NewGuid():N}.tmp");

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
            // Best effort: a leftover temporary file never carries a final name.
        }
        catch (UnauthorizedAccessException)
        {
            // As above.
        }
    }

    /// <summary>Compact JSON header in declared order, padded with spaces so the data starts 8-byte aligned.</summary>
    private byte[] BuildHeader(int shard)
    {
        using var json = new MemoryStream();
        using (var writer = new Utf8JsonWriter(json, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            if (_metadata is not null)
            {
                writer.WriteStartObject(SafetensorsHeader.MetadataKey);
                foreach (var (key, value) in _metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
                {
                    writer.WriteString(key, value);
                }

                writer.WriteEndObject();
            }

            for (int i = 0; i < _tensors.Length; i++)
            {
                if (_shardOfTensor[i] != shard)
                {
                    continue;
                }

                var tensor = _tensors[i];
                writer.WriteStartObject(tensor.Name);
                writer.WriteString("dtype", tensor.DType.ToHeaderString());
                writer.WriteStartArray("shape");
                foreach (long dim in tensor.Shape)
                {
                    writer.WriteNumberValue(dim);
                }

                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(_offsetInShard[i]);
                writer.WriteNumberValue(_offsetInShard[i] + tensor.ByteLength);
                writer.WriteEndArray();
                writer.WriteEndObject();
            }

            writer.WriteEndObject();
        }

        int length = (int)json.Length;
        int padded = (length + 7) / 8 * 8;
        var header = new byte[8 + padded];
        BitConverter.TryWriteBytes(header.AsSpan(0, 8), (ulong)padded);
        json.GetBuffer().AsSpan(0, length).CopyTo(header.AsSpan(8));
        header.AsSpan(8 + length).Fill((byte)' ');
        return header;
    }

    /// <summary>The index as Hugging Face writes it: indented, keys sorted, <c>metadata.total_size</c> and <c>weight_map</c>.</summary>
    private byte[] BuildIndex()
    {
        using var json = new MemoryStream();
        using (var writer = new Utf8JsonWriter(json, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            writer.WriteStartObject("metadata");
            writer.WriteNumber("total_size", TotalTensorBytes);
            writer.WriteEndObject();
            writer.WriteStartObject("weight_map");
            foreach (int i in Enumerable.Range(0, _tensors.Length).OrderBy(i => _tensors[i].Name, StringComparer.Ordinal))
            {
                writer.WriteString(_tensors[i].Name, _shardNames[_shardOfTensor[i]]);
            }

            writer.WriteEndObject();
            writer.WriteEndObject();
        }

        json.WriteByte((byte)'\n');
        return json.ToArray();
    }

    private static unsafe nint GetAddress(torch.Tensor tensor) => (nint)TensorMemory.DataPointer(tensor);

    private static unsafe void CopyOut(nint address, long offset, Span<byte> destination) =>
        new ReadOnlySpan<byte>((byte*)address + offset, destination.Length).CopyTo(destination);

    [GeneratedRegex(@"^model-\d{5,}-of-\d{5,}\.safetensors$", RegexOptions.CultureInvariant)]
    private static partial Regex ShardFileRegex();

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Debug, Message = "Writing {TensorCount} tensors ({TotalBytes} bytes) in {ShardCount} shard(s) to {Directory}")]
        public static partial void Planned(ILogger logger, int tensorCount, long totalBytes, int shardCount, string directory);

        [LoggerMessage(Level = LogLevel.Information, Message = "Wrote checkpoint {Directory}: {ShardCount} shard(s), {TotalBytes} tensor bytes")]
        public static partial void Completed(ILogger logger, string directory, int shardCount, long totalBytes);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Abandoned checkpoint {Directory}; temporary files removed")]
        public static partial void Abandoned(ILogger logger, string directory);

        [LoggerMessage(Level = LogLevel.Information, Message = "Deleted stale checkpoint file {Path}")]
        public static partial void DeletedStale(ILogger logger, string path);
    }
}
