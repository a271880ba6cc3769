using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.IO;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery.Planning;
using TorchSharp;

namespace ModelSurgery.Surgery.Building;

/// <summary>The build stage's options (<see cref="StudentBuilder.BuildAsync"/>; a recipe's <c>build</c> section, keys in snake_case).</summary>
public sealed record StudentBuildOptions
{
    /// <summary>Stored dtype of the student (key <c>dtype</c>: <c>f32</c>, <c>bf16</c>, <c>f16</c>); null keeps each teacher tensor's dtype.</summary>
    [System.Text.Json.Serialization.JsonPropertyName("dtype")]
    public SafetensorsDType? DType { get; init; }

    /// <summary>Largest shard of the student checkpoint (default 2 GiB).</summary>
    public long MaxShardBytes { get; init; } = 2L << 30;

    /// <summary>
    /// Teacher bytes read per chunk when streaming a matrix (key <c>chunk_bytes</c>, default 16 MiB; bounds each chunk
    /// buffer). Larger chunks do not build faster: every buffer in flight is fresh memory the first time it is filled, which
    /// costs more than the per-chunk work saved (a 1.1B student: 64 MiB chunks took 10-30% more CPU and 120 MB more memory).
    /// </summary>
    public long ChunkBytes { get; init; } = 16L << 20;

    /// <summary>
    /// Read and gather the next chunks while the current one is written (key <c>read_ahead</c>, default true), on
    /// <see cref="ReadWorkers"/> workers. Memory stays bounded: each worker holds the buffer of the chunk it reads and the
    /// writer the one it writes. False reads, gathers and writes one chunk after the other; the output bytes are the same
    /// either way.
    /// </summary>
    public bool ReadAhead { get; init; } = true;

    /// <summary>
    /// Workers that read and gather chunks at once when reading ahead (key <c>read_workers</c>, at least 1). Null picks by
    /// the teacher's storage: 1 where Linux reports a rotational disk (concurrent reads would make it seek between them),
    /// else <see cref="StudentBuilder.DefaultReadWorkers"/>; each read's own gather already spreads its rows over LibTorch's
    /// threads, so more workers mainly keep more reads queued at the storage, reading the next tensors (and shards) while
    /// one chunk waits for its pages. Chunks are written in order whatever the count: the output bytes are the same.
    /// </summary>
    public int? ReadWorkers { get; init; }

    /// <summary>
    /// Write the student with direct I/O where the file system allows it (key <c>direct_write</c>, default true; see
    /// <see cref="CheckpointWriterOptions.DirectWrite"/>): the student's bytes go straight to storage instead of being copied
    /// into the page cache, the largest CPU cost of the write. The student is then not cached, so a step that reads it right
    /// after (training) reads it from storage. The output bytes are the same either way.
    /// </summary>
    public bool DirectWrite { get; init; } = true;

    /// <summary>Build even when the memory estimate exceeds <see cref="MemoryLimitBytes"/>.</summary>
    public bool IgnoreMemoryEstimate { get; init; }

    /// <summary>Memory the build may use; null means what this process may use (<see cref="MemoryGuard.AvailableBytes"/>).</summary>
    public long? MemoryLimitBytes { get; init; }

    /// <summary>
    /// A tokenizer file or folder to place in the student (e.g. the compressed tokenizer of a plan with kept tokens). When
    /// null, the teacher's tokenizer files are copied if the plan keeps the whole vocabulary.
    /// </summary>
    public string? Tokenizer { get; init; }

    /// <summary>
    /// Pads the student's vocab_size up to a multiple of this (1 = no padding) with zero rows in the embedding and the
    /// LM head, for faster matrix shapes. Padding ids are never produced by the tokenizer; their logits are 0.
    /// </summary>
    public int PadVocabToMultiple { get; init; } = 1;
}

/// <summary>Progress of a student build, reported after each tensor.</summary>
/// <param name="TensorsWritten">Student tensors finished.</param>
/// <param name="TensorCount">Student tensors in all.</param>
/// <param name="BytesRead">Teacher bytes read so far.</param>
/// <param name="Completed">Student bytes written so far.</param>
/// <param name="Total">Student bytes in all.</param>
public sealed record StudentBuildProgress(int TensorsWritten, int TensorCount, long BytesRead, long Completed, long? Total) : IProgressReport
{
    /// <summary>Always <see cref="ProgressUnit.Bytes"/> (student bytes written).</summary>
    public ProgressUnit Unit => ProgressUnit.Bytes;

    /// <summary>The tensors finished, e.g. <c>12/291 tensors</c>.</summary>
    public string Status => $"{TensorsWritten}/{TensorCount} tensors";
}

/// <summary>What a build produced and what it cost.</summary>
/// <param name="Directory">The student checkpoint folder.</param>
/// <param name="Config">The student's config.</param>
/// <param name="Parameters">The student's parameter count.</param>
/// <param name="BytesRead">Teacher bytes copied out of the memory-mapped files: the kept elements only (the storage pages they sit on are read whole).</param>
/// <param name="BytesWritten">Student tensor bytes written.</param>
/// <param name="Elapsed">Wall time.</param>
/// <param name="BytesFetched">
/// Teacher bytes asked of storage: whole pages of the kept ranges, coalesced into larger sequential reads across short gaps
/// within <see cref="SafetensorsFile.CoalesceSlack"/> of the pages they touch. Compare with <paramref name="BytesRead"/>, the
/// bytes needed.
/// </param>
/// <param name="ReadWorkers">Workers that read chunks at once (<see cref="StudentBuildOptions.ReadWorkers"/>, or what the storage called for; 1 without reading ahead).</param>
public sealed record StudentBuildResult(string Directory, LlamaConfig Config, ParameterCount Parameters, long BytesRead, long BytesWritten, TimeSpan Elapsed, long BytesFetched, int ReadWorkers);

/// <summary>
/// Builds a student checkpoint from a teacher checkpoint and a <see cref="SurgeryPlan"/>, copying only the kept rows and
/// columns of each teacher tensor out of the memory-mapped files (a chunk of rows at a time) and streaming the result into
/// a normal Hugging Face checkpoint. The teacher is never loaded whole. Reading and writing overlap: workers read and
/// gather the next chunks while the current one is written (<see cref="StudentBuildOptions.ReadAhead"/>,
/// <see cref="StudentBuildOptions.ReadWorkers"/>), with one chunk buffer per worker plus the one written in flight, so peak
/// memory is those chunks plus the runtime.
/// </summary>
public static partial class StudentBuilder
{
    /// <summary>Tokenizer files copied from the teacher when the vocabulary is unchanged.</summary>
    public static readonly IReadOnlyList<string> TokenizerFileNames = ModelFolderTokenizer.FileNames;

    /// <summary>Builds the student of <paramref name="plan"/> from <paramref name="teacherDirectory"/> into <paramref name="outputDirectory"/>.</summary>
    /// <exception cref="InvalidDataException">The plan is invalid or was made for another teacher, or a teacher tensor is missing or misshapen; the message names it.</exception>
    /// <exception cref="InvalidOperationException">The memory estimate exceeds what is available (see <see cref="StudentBuildOptions.IgnoreMemoryEstimate"/>).</exception>
    /// <exception cref="NotSupportedException">The plan has per-layer widths, which no single config.json describes.</exception>
    public static async Task<StudentBuildResult> BuildAsync(
        string teacherDirectory,
        SurgeryPlan plan,
        string outputDirectory,
        StudentBuildOptions? options = null,
        IProgress<StudentBuildProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        options ??= new StudentBuildOptions();
        logger ??= NullLogger.Instance;
        var clock = Stopwatch.StartNew();

        // Everything is checked before the first weight is read.
        plan.EnsureValid();
        if (!plan.IsUniform)
        {
            throw new NotSupportedException("The plan has per-layer widths (allow_non_uniform): no single config.json describes such a student, so it cannot be built as a loadable checkpoint.");
        }

        LlamaConfig teacher = LlamaConfig.Load(Path.Combine(teacherDirectory, "config.json"));
        EnsureSameArchitecture(teacher, plan.Teacher, teacherDirectory);
        if (options.PadVocabToMultiple < 1)
        {
            throw new ArgumentException($"PadVocabToMultiple must be at least 1, got {options.PadVocabToMultiple}.", nameof(options));
        }

        if (options.ReadWorkers is < 1)
        {
            throw new ArgumentException($"ReadWorkers (read_workers) must be at least 1, got {options.ReadWorkers}.", nameof(options));
        }

        LlamaConfig student = plan.Student;
        int paddedVocab = (student.VocabSize + options.PadVocabToMultiple - 1) / options.PadVocabToMultiple * options.PadVocabToMultiple;
        student = student with { VocabSize = paddedVocab };
        IReadOnlyList<TensorSelection> selections = TensorSelection.For(plan);

        using CheckpointReader reader = CheckpointReader.Open(teacherDirectory);
        var teacherShapes = LlamaTensorLayout.Tensors(teacher).ToDictionary(s => s.Name, s => s.Shape, StringComparer.Ordinal);
        foreach (TensorSelection selection in selections)
        {
            if (!reader.TryGetInfo(selection.TeacherName, out SafetensorsTensorInfo? info))
            {
                throw new InvalidDataException($"{teacherDirectory}: teacher tensor {selection.TeacherName} (needed for {selection.Student.Name}) is missing.");
            }

            if (!info.Shape.SequenceEqual(teacherShapes[selection.TeacherName]))
            {
                throw new InvalidDataException($"{teacherDirectory}: teacher tensor {selection.TeacherName} has shape [{string.Join(", ", info.Shape)}], its config calls for [{string.Join(", ", teacherShapes[selection.TeacherName])}].");
            }
        }

        SafetensorsDType storedDType = options.DType ?? reader.GetInfo(selections[0].TeacherName).DType;
        var writerOptions = new CheckpointWriterOptions { MaxShardBytes = options.MaxShardBytes, DirectWrite = options.DirectWrite };
        // Reading ahead keeps a chunk buffer per worker in flight besides the one written; a direct-writing writer holds its
        // own aligned buffer too.
        int readWorkers = options.ReadAhead ? ReadWorkersFor(options, reader, logger) : 1;
        long ioBufferBytes = (options.ReadAhead ? ReadAhead.ItemsInFlight(readWorkers) : 1) * options.ChunkBytes + writerOptions.HeldBufferBytes;
        PlanEstimate estimate = PlanEstimate.For(plan, reader.GetInfo(selections[0].TeacherName).DType.ToTorchDtypeName(), storedDType.ToTorchDtypeName(), ioBufferBytes);
        string estimateSummary = estimate.Summary();
        LogEstimate(logger, estimateSummary);
        MemoryGuard.EnsureFits(estimate, options.IgnoreMemoryEstimate, options.MemoryLimitBytes);

        Directory.CreateDirectory(outputDirectory);
        CheckpointTensor[] declared = [.. selections.Select(s => new CheckpointTensor(s.Student.Name, options.DType ?? reader.GetInfo(s.TeacherName).DType, StoredShape(s.Student, paddedVocab)))];
        long bytesRead = 0, bytesWritten = 0;
        await using (CheckpointWriter writer = CheckpointWriter.Create(outputDirectory, declared, writerOptions, logger))
        {
            List<ChunkRead> schedule = Schedule(reader, selections, options.ChunkBytes);
            Chunk Read(int k, CancellationToken stop) => ReadScheduled(reader, selections, declared, schedule, k, readWorkers, stop);
            IAsyncEnumerable<Chunk> source = options.ReadAhead
                ? ReadAhead.RunAsync(schedule.Count, Read, readWorkers, cancellationToken)
                : Enumerable.Range(0, schedule.Count).Select(k => Read(k, cancellationToken)).ToAsyncEnumerable();
            await foreach (Chunk chunk in source.WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                cancellationToken.ThrowIfCancellationRequested();
                int i = chunk.Tensor;
                if (chunk.Length > 0)
                {
                    await writer.WriteBytesAsync(selections[i].Student.Name, chunk.Buffer.AsMemory(0, chunk.Length), cancellationToken).ConfigureAwait(false);
                    ArrayPool<byte>.Shared.Return(chunk.Buffer);
                }

                bytesRead += chunk.TeacherBytes;
                if (chunk.LastOfTensor)
                {
                    await WritePaddingRowsAsync(writer, selections[i].Student, declared[i], cancellationToken).ConfigureAwait(false);
                    bytesWritten += declared[i].ByteLength;
                    progress?.Report(new StudentBuildProgress(i + 1, selections.Count, bytesRead, bytesWritten, writer.TotalTensorBytes));
                }
            }

            await writer.CompleteAsync(cancellationToken).ConfigureAwait(false);
        }

        LlamaConfig written = student with { TorchDtype = storedDType.ToTorchDtypeName() };
        written.Save(Path.Combine(outputDirectory, "config.json"));
        GenerationConfigFile.Write(outputDirectory, written, GenerationConfigFile.TryRead(teacherDirectory));
        CopyTokenizer(teacherDirectory, outputDirectory, plan, written, options.Tokenizer, logger);

        var result = new StudentBuildResult(outputDirectory, written, LlamaTensorLayout.CountParameters(written), bytesRead, bytesWritten, clock.Elapsed, reader.BytesFetched, readWorkers);
        LogBuilt(logger, outputDirectory, result.Parameters.Total, bytesRead, reader.BytesFetched, readWorkers, bytesWritten, clock.Elapsed.TotalSeconds);
        return result;
    }

    /// <summary>
    /// One chunk of kept rows of student tensor <paramref name="Tensor"/>, in the student's dtype, ready to append.
    /// </summary>
    /// <param name="Tensor">Index of the student tensor (in <see cref="TensorSelection.For"/> order).</param>
    /// <param name="Buffer">A buffer rented from <see cref="ArrayPool{T}.Shared"/> that starts with the chunk's bytes; the writer returns it.</param>
    /// <param name="Length">The chunk's bytes in <paramref name="Buffer"/> (0 for a tensor without rows).</param>
    /// <param name="TeacherBytes">Teacher bytes copied out for it.</param>
    /// <param name="LastOfTensor">Whether the tensor ends with this chunk.</param>
    private sealed record Chunk(int Tensor, byte[] Buffer, int Length, long TeacherBytes, bool LastOfTensor);

    /// <summary>One read of the build's schedule: kept rows start..start+count-1 of student tensor <paramref name="Tensor"/>.</summary>
    /// <param name="Tensor">Index of the student tensor (in <see cref="TensorSelection.For"/> order).</param>
    /// <param name="Start">First kept row.</param>
    /// <param name="Count">Kept rows (0 for a tensor without rows).</param>
    /// <param name="TeacherBytes">What the rows' kept elements take in the teacher's dtype.</param>
    /// <param name="Last">Whether the tensor ends with this read.</param>
    private readonly record struct ChunkRead(int Tensor, long Start, long Count, long TeacherBytes, bool Last);

    /// <summary>Every student tensor, a chunk of kept rows at a time, in write order: the whole schedule of teacher reads.</summary>
    private static List<ChunkRead> Schedule(CheckpointReader reader, IReadOnlyList<TensorSelection> selections, long chunkBytes)
    {
        var schedule = new List<ChunkRead>();
        for (int i = 0; i < selections.Count; i++)
        {
            TensorSelection selection = selections[i];
            SafetensorsTensorInfo info = reader.GetInfo(selection.TeacherName);
            long element = info.DType.ElementSize();
            long rowCount = selection.Rows?.Length ?? info.Shape[0];
            long rowBytes = info.Shape.Length == 1 ? element : (selection.Columns?.Length ?? info.Shape[1]) * element;
            long rowsPerChunk = Math.Max(1, chunkBytes / Math.Max(1, rowBytes));
            if (rowCount == 0)
            {
                schedule.Add(new ChunkRead(i, 0, 0, 0, true));
            }

            for (long start = 0; start < rowCount; start += rowsPerChunk)
            {
                long count = Math.Min(rowsPerChunk, rowCount - start);
                schedule.Add(new ChunkRead(i, start, count, count * rowBytes, start + count >= rowCount));
            }
        }

        return schedule;
    }

    /// <summary>
    /// Reads, checks and gathers read <paramref name="k"/> of the schedule. It first asks storage for the read
    /// <paramref name="readers"/> places after it, the next one no reader has taken yet, so storage stays busy while the
    /// chunks in hand are gathered and the previous one written.
    /// </summary>
    private static Chunk ReadScheduled(CheckpointReader reader, IReadOnlyList<TensorSelection> selections, CheckpointTensor[] declared, List<ChunkRead> schedule, int k, int readers, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        ChunkRead read = schedule[k];
        if (k + readers < schedule.Count && schedule[k + readers].Count > 0)
        {
            ChunkRead next = schedule[k + readers];
            reader.PrefetchRows(selections[next.Tensor].TeacherName, KeptRows(selections[next.Tensor], next.Start, next.Count));
        }

        if (read.Count == 0)
        {
            return new Chunk(read.Tensor, [], 0, 0, read.Last);
        }

        (byte[] buffer, int length) = ReadChunk(reader, selections[read.Tensor], read.Start, read.Count, read.TeacherBytes, declared[read.Tensor].DType);
        return new Chunk(read.Tensor, buffer, length, read.TeacherBytes, read.Last);
    }

    /// <summary>Teacher row indices of kept rows start..start+count-1 of a selection.</summary>
    private static IReadOnlyList<long> KeptRows(TensorSelection selection, long start, long count) => selection.Rows is null
        ? new RowRange(start, count)
        : new ArraySegment<long>(selection.Rows, (int)start, (int)count);

    /// <summary>
    /// Rows start..start+count-1 of the kept rows of one student tensor, as bytes of <paramref name="dtype"/> in a pooled
    /// buffer: the two buffers in flight are reused from chunk to chunk instead of allocating (and zeroing) new ones.
    /// <paramref name="teacherBytes"/> is what those rows' kept elements take in the teacher's dtype (the schedule's count).
    /// </summary>
    private static (byte[] Buffer, int Length) ReadChunk(CheckpointReader reader, TensorSelection selection, long start, long count, long teacherBytes, SafetensorsDType dtype)
    {
        IReadOnlyList<long> rows = KeptRows(selection, start, count);
        SafetensorsTensorInfo info = reader.GetInfo(selection.TeacherName);
        if (info.DType == dtype && TensorChecks.ChecksRawBytes(dtype))
        {
            // Stored dtype kept: the kept elements go straight from the map into the buffer the writer takes, copied once.
            byte[] direct = ArrayPool<byte>.Shared.Rent(checked((int)teacherBytes));
            return (direct, (int)reader.ReadRowsInto(selection.TeacherName, rows, selection.Columns, direct));
        }

        using var scope = torch.NewDisposeScope();
        torch.Tensor chunk = selection.Columns is not null
            ? reader.ReadSubmatrix(selection.TeacherName, rows, selection.Columns) // [count, kept columns]
            : selection.Rows is null
                ? reader.ReadSlice(selection.TeacherName, 0, start, count) // [count, in]
                : reader.ReadIndices(selection.TeacherName, 0, rows); // [count, in]
        ReadOnlySpan<byte> bytes = chunk.to(dtype.ToScalarType()).contiguous().bytes;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(bytes.Length);
        bytes.CopyTo(buffer);
        return (buffer, bytes.Length);
    }

    /// <summary>Read workers when the storage does not call for one (<see cref="StudentBuildOptions.ReadWorkers"/> null).</summary>
    public static int DefaultReadWorkers => Math.Clamp(Environment.ProcessorCount, 1, 2);

    /// <summary>The read workers a build uses: the option, else 1 on a rotational disk, else <see cref="DefaultReadWorkers"/>.</summary>
    private static int ReadWorkersFor(StudentBuildOptions options, CheckpointReader reader, ILogger logger)
    {
        if (options.ReadWorkers is int chosen)
        {
            return chosen;
        }

        string firstShard = reader.Shards[0].Path;
        if (StorageDevice.IsRotational(firstShard) == true)
        {
            LogRotational(logger, firstShard);
            return 1;
        }

        return DefaultReadWorkers;
    }

    /// <summary>Rows start..start+count-1 as an index list, without allocating it.</summary>
    private sealed class RowRange(long start, long count) : IReadOnlyList<long>
    {
        public long this[int index] => start + index;

        public int Count => (int)count;

        public IEnumerator<long> GetEnumerator()
        {
            for (long i = 0; i < count; i++)
            {
                yield return start + i;
            }
        }

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>The stored shape: vocabulary matrices get <paramref name="paddedVocab"/> rows, everything else is as planned.</summary>
    private static long[] StoredShape(TensorSpec spec, int paddedVocab) =>
        spec.Role is TensorRole.Embedding or TensorRole.LmHead && !spec.IsBias ? [paddedVocab, .. spec.Shape.Skip(1)] : spec.Shape;

    /// <summary>Appends zero rows to a vocabulary matrix whose stored shape is padded beyond the kept tokens.</summary>
    private static async Task WritePaddingRowsAsync(CheckpointWriter writer, TensorSpec planned, CheckpointTensor stored, CancellationToken cancellationToken)
    {
        long extraRows = stored.Shape[0] - planned.Shape[0];
        if (extraRows <= 0)
        {
            return;
        }

        long rowBytes = stored.ByteLength / stored.Shape[0];
        byte[] zeros = new byte[rowBytes * Math.Min(extraRows, 1024)];
        for (long done = 0; done < extraRows; done += 1024)
        {
            long rows = Math.Min(1024, extraRows - done);
            await writer.WriteBytesAsync(stored.Name, zeros.AsMemory(0, (int)(rows * rowBytes)), cancellationToken).ConfigureAwait(false);
        }
    }

    private static void EnsureSameArchitecture(LlamaConfig actual, LlamaConfig planned, string teacherDirectory)
    {
        (string Field, object A, object B)[] fields =
        [
            ("model_type", actual.ModelType, planned.ModelType),
            ("vocab_size", actual.VocabSize, planned.VocabSize),
            ("hidden_size", actual.HiddenSize, planned.HiddenSize),
            ("intermediate_size", actual.IntermediateSize, planned.IntermediateSize),
            ("num_hidden_layers", actual.NumHiddenLayers, planned.NumHiddenLayers),
            ("num_attention_heads", actual.NumAttentionHeads, planned.NumAttentionHeads),
            ("num_key_value_heads", actual.NumKeyValueHeads, planned.NumKeyValueHeads),
            ("head_dim", actual.HeadDim, planned.HeadDim),
            ("tie_word_embeddings", actual.TieWordEmbeddings, planned.TieWordEmbeddings),
            ("per-layer attention windows", Windows(actual), Windows(planned)),
        ];
        foreach (var (field, a, b) in fields)
        {
            if (!a.Equals(b))
            {
                throw new InvalidDataException($"{teacherDirectory}: the plan was made for another teacher: {field} is {a} here but {b} in the plan.");
            }
        }

        // The student's windows come from the plan's teacher config, so they must be the teacher's on disk.
        static string Windows(LlamaConfig config) => string.Join(",", config.LayerAttentionWindows.Select(w => w?.ToString(CultureInfo.InvariantCulture) ?? "full"));
    }

    private static void CopyTokenizer(string teacherDirectory, string outputDirectory, SurgeryPlan plan, LlamaConfig student, string? tokenizer, ILogger logger)
    {
        if (tokenizer is not null)
        {
            if (!ModelFolderTokenizer.CopyInto(tokenizer, outputDirectory, student))
            {
                throw new InvalidDataException($"{tokenizer}: holds no tokenizer (tokenizer.json, tokenizer.model or a .tiktoken file) to put in the student.");
            }

            return;
        }

        bool vocabularyKept = plan.KeptTokens is null || (plan.KeptTokens.Count == plan.Teacher.VocabSize && plan.KeptTokens.Select((t, i) => t == i).All(x => x));
        if (!vocabularyKept)
        {
            LogNoTokenizer(logger, outputDirectory);
            return;
        }

        ModelFolderTokenizer.CopyInto(teacherDirectory, outputDirectory, student);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Path} is on a rotational disk (as Linux reports it): one read worker, so reads do not make it seek between them; set read_workers to override")]
    private static partial void LogRotational(ILogger logger, string path);

    [LoggerMessage(Level = LogLevel.Information, Message = "Build estimate: {Summary}")]
    private static partial void LogEstimate(ILogger logger, string summary);

    [LoggerMessage(Level = LogLevel.Information, Message = "Built {Directory}: {Parameters:N0} parameters, {BytesRead:N0} teacher bytes needed, {BytesFetched:N0} fetched by {ReadWorkers} read workers, {BytesWritten:N0} bytes written in {Seconds:F1} s")]
    private static partial void LogBuilt(ILogger logger, string directory, long parameters, long bytesRead, long bytesFetched, int readWorkers, long bytesWritten, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Directory}: the plan compresses the vocabulary and no tokenizer was given, so none was written; pass the compressed tokenizer")]
    private static partial void LogNoTokenizer(ILogger logger, string directory);
}
