using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training.Data;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ModelSurgery.Training.Distillation;

/// <summary>Progress of <see cref="TeacherLogitCache.WriteAsync"/>.</summary>
/// <param name="Completed">Windows written so far.</param>
/// <param name="Total">Windows to write in all.</param>
public sealed record TeacherCacheProgress(long Completed, long? Total) : IProgressReport
{
    /// <summary>Always <see cref="ProgressUnit.Windows"/>.</summary>
    public ProgressUnit Unit => ProgressUnit.Windows;

    /// <summary>Always null: the count says it all.</summary>
    public string? Status => null;
}

/// <summary>
/// An offline cache of the teacher's top-k logits for every training window, so distillation does not need the teacher
/// in memory. Layout (little endian): a 32-byte header ("MSTOPK01", int32 version = 1, int32 k, int32 sequence length,
/// 4 reserved bytes, int64 window count), the window ids (int64 each), then one record per window in the same order:
/// [T, k] float32 logits followed by [T, k] int32 ids (student ids when a vocabulary map was applied).
/// </summary>
public sealed class TeacherLogitCache : IDisposable
{
    private const int HeaderSize = 32;
    private const int FormatVersion = 1;
    private static ReadOnlySpan<byte> Magic => "MSTOPK01"u8;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly Dictionary<long, long> _recordOf;
    private readonly long _recordsStart;

    private TeacherLogitCache(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, int k, int seqLen, Dictionary<long, long> recordOf, long recordsStart)
    {
        Path = path;
        _map = map;
        _view = view;
        K = k;
        SeqLen = seqLen;
        _recordOf = recordOf;
        _recordsStart = recordsStart;
    }

    /// <summary>The cache file.</summary>
    public string Path { get; }

    /// <summary>Logits kept per position.</summary>
    public int K { get; }

    /// <summary>Positions per window (T).</summary>
    public int SeqLen { get; }

    /// <summary>Number of cached windows.</summary>
    public int Count => _recordOf.Count;

    private long RecordBytes => RecordBytesOf(SeqLen, K);

    /// <summary>
    /// The size of a cache file of <paramref name="windows"/> windows, exactly as <see cref="WriteAsync"/> writes it:
    /// the header, one int64 id per window, and per window <paramref name="seqLen"/> x <paramref name="k"/> float32
    /// logits and as many int32 ids (8 bytes per kept logit).
    /// </summary>
    /// <param name="windows">Windows cached.</param>
    /// <param name="seqLen">Positions per window (T).</param>
    /// <param name="k">Logits kept per position.</param>
    /// <returns>The file size in bytes.</returns>
    public static long FileBytes(long windows, int seqLen, int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(windows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(seqLen);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(k);
        return checked(HeaderSize + (windows * sizeof(long)) + (windows * RecordBytesOf(seqLen, k)));
    }

    /// <summary>
    /// Throws before the teacher is loaded when the cache file would not fit on the disk of <paramref name="path"/>
    /// (<see cref="MemoryPreflight.EnsureDiskSpace"/>). The whole file counts even when it replaces one, because the new
    /// file is written in full beside the old before it takes the old one's name.
    /// </summary>
    /// <param name="path">The cache file to write.</param>
    /// <param name="windows">Windows cached.</param>
    /// <param name="seqLen">Positions per window (T).</param>
    /// <param name="k">Logits kept per position.</param>
    /// <param name="what">Who writes it, for the message (e.g. <c>cache-teacher --out</c>).</param>
    /// <param name="lower">How to lower or override the estimate, appended to the message; null for the library's wording.</param>
    /// <exception cref="IOException">Not enough free space; the message names the path, both figures and the factors.</exception>
    public static void EnsureFits(string path, long windows, int seqLen, int k, string? what = null, string? lower = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        long bytes = FileBytes(windows, seqLen, k);
        string directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        MemoryPreflight.EnsureDiskSpace(
            directory,
            bytes,
            $"Caching teacher logits to {path}{(what is null ? string.Empty : $" ({what})")}",
            string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"That is {windows:N0} windows x {seqLen} positions x top-{k} x 8 bytes (a float32 logit and an int32 id) plus {HeaderSize + (windows * sizeof(long)):N0} bytes of header and window ids. {lower ?? "Free space, choose another path, or keep fewer logits or positions."}"));
    }

    private static long RecordBytesOf(int seqLen, int k) => (long)seqLen * k * (sizeof(float) + sizeof(int));

    /// <summary>Runs the teacher over the windows and writes their top-k logits (atomically).</summary>
    /// <param name="teacher">The teacher: ids [B, T] to logits [B, T, Vt].</param>
    /// <param name="file">The token file (student ids when <paramref name="vocabularyMap"/> is given).</param>
    /// <param name="windows">Windows to cache (normally the training windows).</param>
    /// <param name="path">Output cache file.</param>
    /// <param name="k">Logits kept per position.</param>
    /// <param name="seqLen">Inputs per window (T).</param>
    /// <param name="batchSize">Windows per teacher forward pass.</param>
    /// <param name="vocabularyMap">
    /// The student's compressed vocabulary (student id i is teacher id kept[i]), or null when the vocabularies are equal:
    /// the teacher reads the original ids, and its logits are restricted to the kept ids before the top-k, so the cached
    /// ids are student ids.
    /// </param>
    /// <param name="progress">Optional count of windows written (reported after each batch).</param>
    /// <param name="cancellationToken">Cancels the work; no file is left behind.</param>
    /// <returns>A task that completes when the file is in place.</returns>
    public static async Task WriteAsync(
        nn.Module<Tensor, Tensor> teacher,
        TokenFile file,
        IReadOnlyList<long> windows,
        string path,
        int k,
        int seqLen,
        int batchSize = 8,
        VocabularyMap? vocabularyMap = null,
        IProgress<TeacherCacheProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(windows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(k);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(seqLen);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        long[]? teacherIds = StudentToTeacherIds.Of(vocabularyMap);
        var restrict = new DistillationLoss(keptTeacherIds: teacherIds);
        string full = System.IO.Path.GetFullPath(path);
        string directory = System.IO.Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(directory);
        string temp = System.IO.Path.Combine(directory, $".{System.IO.Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            await using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                var header = new byte[HeaderSize];
                Magic.CopyTo(header);
                BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), FormatVersion);
                BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(12), k);
                BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(16), seqLen);
                BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(24), windows.Count);
                await stream.WriteAsync(header, cancellationToken).ConfigureAwait(false);
                var ids = new byte[windows.Count * 8L];
                for (int i = 0; i < windows.Count; i++)
                {
                    BinaryPrimitives.WriteInt64LittleEndian(ids.AsSpan(i * 8), windows[i]);
                }

                await stream.WriteAsync(ids, cancellationToken).ConfigureAwait(false);
                teacher.eval();
                for (int start = 0; start < windows.Count; start += batchSize)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    int rows = Math.Min(batchSize, windows.Count - start);
                    byte[] records = TopKRecords(teacher, file, windows, start, rows, seqLen, k, teacherIds, restrict);
                    await stream.WriteAsync(records, cancellationToken).ConfigureAwait(false);
                    progress?.Report(new TeacherCacheProgress(start + rows, windows.Count));
                }

                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }

    /// <summary>Opens and validates a cache file.</summary>
    /// <param name="path">The cache file.</param>
    /// <returns>The reader.</returns>
    /// <exception cref="InvalidDataException">The file is not a cache or is truncated.</exception>
    public static TeacherLogitCache Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        long length = new FileInfo(path).Length;
        var header = new byte[HeaderSize];
        using (var stream = File.OpenRead(path))
        {
            if (stream.ReadAtLeast(header, HeaderSize, throwOnEndOfStream: false) < HeaderSize || !header.AsSpan(0, 8).SequenceEqual(Magic))
            {
                throw new InvalidDataException($"Teacher logit cache '{path}' does not start with 'MSTOPK01'; it is not a logit cache.");
            }
        }

        int version = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8));
        int k = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(12));
        int seqLen = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(16));
        long count = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(24));
        if (version != FormatVersion || k <= 0 || seqLen <= 0 || count < 0)
        {
            throw new InvalidDataException($"Teacher logit cache '{path}' has an invalid header (version {version}, k {k}, sequence length {seqLen}, windows {count}).");
        }

        long recordsStart = HeaderSize + (count * 8);
        long expected = recordsStart + (count * seqLen * k * 8L);
        if (expected != length)
        {
            throw new InvalidDataException($"Teacher logit cache '{path}' should be {expected} bytes for {count} windows of {seqLen} x {k} but is {length}; it is truncated or corrupt.");
        }

        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor view;
        try
        {
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        }
        catch
        {
            map.Dispose();
            throw;
        }

        var recordOf = new Dictionary<long, long>((int)count);
        for (long i = 0; i < count; i++)
        {
            recordOf[view.ReadInt64(HeaderSize + (i * 8))] = i;
        }

        return new TeacherLogitCache(path, map, view, k, seqLen, recordOf, recordsStart);
    }

    /// <summary>Reads the cached top-k logits of some windows.</summary>
    /// <param name="windows">Window ids, one per batch row.</param>
    /// <returns>Values [B, T, k] float32 and ids [B, T, k] int64, in the caller's dispose scope.</returns>
    public (Tensor Values, Tensor Indices) Read(IReadOnlyList<long> windows)
    {
        ArgumentNullException.ThrowIfNull(windows);
        int perRecord = SeqLen * K;
        var values = new float[windows.Count * perRecord];
        var indices = new int[windows.Count * perRecord];
        for (int row = 0; row < windows.Count; row++)
        {
            if (!_recordOf.TryGetValue(windows[row], out long record))
            {
                throw new ArgumentException($"Window {windows[row]} is not in teacher logit cache '{Path}'.", nameof(windows));
            }

            long offset = _recordsStart + (record * RecordBytes);
            _view.ReadArray(offset, values, row * perRecord, perRecord);
            _view.ReadArray(offset + (perRecord * 4L), indices, row * perRecord, perRecord);
        }

        long[] shape = [windows.Count, SeqLen, K];
        using Tensor ids = torch.tensor(indices, shape); // [B, T, k] int32
        return (torch.tensor(values, shape), ids.to(ScalarType.Int64));
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _view.Dispose();
        _map.Dispose();
    }

    private static byte[] TopKRecords(nn.Module<Tensor, Tensor> teacher, TokenFile file, IReadOnlyList<long> windows, int start, int rows, int seqLen, int k, long[]? teacherIds, DistillationLoss restrict)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var tokens = new long[rows * seqLen];
        for (int r = 0; r < rows; r++)
        {
            file.Read(TokenWindows.Start(windows[start + r], seqLen), tokens.AsSpan(r * seqLen, seqLen));
        }

        Tensor studentIds = torch.tensor(tokens, [rows, seqLen], ScalarType.Int64); // [B, T]
        Tensor inputs = StudentToTeacherIds.Map(studentIds, teacherIds).to(Trainer.ModelDevice(teacher)); // [B, T] teacher ids
        Tensor logits = restrict.RestrictTeacher(teacher.forward(inputs)).to(ScalarType.Float32); // [B, T, V]
        if (logits.shape[^1] < k)
        {
            throw new ArgumentException($"k = {k} exceeds the vocabulary of {logits.shape[^1]}.", nameof(k));
        }

        (Tensor top, Tensor ids) = logits.topk(k, dim: -1); // [B, T, k] each
        top = top.cpu();
        ids = ids.cpu();
        float[] topValues = top.contiguous().data<float>().ToArray();
        int[] topIds = ids.to(ScalarType.Int32).contiguous().data<int>().ToArray();
        int perRecord = seqLen * k;
        var bytes = new byte[rows * perRecord * 8L];
        for (int r = 0; r < rows; r++)
        {
            Span<byte> record = bytes.AsSpan(r * perRecord * 8, perRecord * 8);
            for (int i = 0; i < perRecord; i++)
            {
                BinaryPrimitives.WriteSingleLittleEndian(record[(i * 4)..], topValues[(r * perRecord) + i]);
                BinaryPrimitives.WriteInt32LittleEndian(record[((perRecord + i) * 4)..], topIds[(r * perRecord) + i]);
            }
        }

        return bytes;
    }
}

/// <summary>Distillation from a <see cref="TeacherLogitCache"/>: alpha * top-k KD + (1 - alpha) * CE.</summary>
/// <param name="cache">The cached teacher logits of the training windows.</param>
/// <param name="loss">Temperature and alpha (and nothing else) are taken from it.</param>
public sealed class CachedDistillationObjective(TeacherLogitCache cache, DistillationLoss loss) : ITrainingObjective
{
    private readonly TeacherLogitCache _cache = cache ?? throw new ArgumentNullException(nameof(cache));
    private readonly DistillationLoss _loss = loss ?? throw new ArgumentNullException(nameof(loss));

    /// <inheritdoc />
    public IReadOnlyList<(string Name, Parameter Parameter)> Parameters => [];

    /// <inheritdoc />
    public Tensor Loss(nn.Module<Tensor, Tensor> model, TrainingBatch batch)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batch);
        using var scope = torch.NewDisposeScope();
        Tensor inputs = batch.Inputs; // [B, T]
        if (inputs.shape[1] != _cache.SeqLen)
        {
            throw new ArgumentException($"Batch windows have {inputs.shape[1]} positions but teacher logit cache '{_cache.Path}' has {_cache.SeqLen}.", nameof(batch));
        }

        (Tensor values, Tensor indices) = _cache.Read(batch.Windows); // [B, T, k] each
        Tensor logits = model.forward(inputs); // [B, T, V]
        return _loss.ComputeTopK(logits, values.to(logits.device), indices.to(logits.device), batch.Targets).MoveToOuterDisposeScope();
    }
}
