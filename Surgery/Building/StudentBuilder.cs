using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Threading.Channels;
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

    /// <summary>Teacher rows read per chunk when streaming a matrix (bounds the read buffer).</summary>
    public long ChunkBytes { get; init; } = 64L << 20;

    /// <summary>
    /// Read and gather the next chunk while the current one is written (key <c>read_ahead</c>, default true). Memory stays
    /// bounded: at most two chunks' buffers are in flight, the one being written and the one being read. False reads,
    /// gathers and writes one chunk after the other; the output bytes are the same either way.
    /// </summary>
    public bool ReadAhead { get; init; } = true;

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
public sealed record StudentBuildResult(string Directory, LlamaConfig Config, ParameterCount Parameters, long BytesRead, long BytesWritten, TimeSpan Elapsed, long BytesFetched);

/// <summary>
/// Builds a student checkpoint from a teacher checkpoint and a <see cref="SurgeryPlan"/>, copying only the kept rows and
/// columns of each teacher tensor out of the memory-mapped files (a chunk of rows at a time) and streaming the result into
/// a normal Hugging Face checkpoint. The teacher is never loaded whole. Reading and writing overlap: a worker reads and
/// gathers the next chunk while the current one is written (<see cref="StudentBuildOptions.ReadAhead"/>), with at most two
/// chunks' buffers in flight, so peak memory is about two read chunks plus the runtime.
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
        // Reading ahead keeps a second chunk buffer in flight; a direct-writing writer holds its own aligned buffer too.
        long ioBufferBytes = (options.ReadAhead ? 2 * options.ChunkBytes : options.ChunkBytes) + writerOptions.HeldBufferBytes;
        PlanEstimate estimate = PlanEstimate.For(plan, reader.GetInfo(selections[0].TeacherName).DType.ToTorchDtypeName(), storedDType.ToTorchDtypeName(), ioBufferBytes);
        string estimateSummary = estimate.Summary();
        LogEstimate(logger, estimateSummary);
        MemoryGuard.EnsureFits(estimate, options.IgnoreMemoryEstimate, options.MemoryLimitBytes);

        Directory.CreateDirectory(outputDirectory);
        CheckpointTensor[] declared = [.. selections.Select(s => new CheckpointTensor(s.Student.Name, options.DType ?? reader.GetInfo(s.TeacherName).DType, StoredShape(s.Student, paddedVocab)))];
        long bytesRead = 0, bytesWritten = 0;
        await using (CheckpointWriter writer = CheckpointWriter.Create(outputDirectory, declared, writerOptions, logger))
        {
            IEnumerable<Chunk> chunks = Chunks(reader, selections, declared, options.ChunkBytes, cancellationToken);
            IAsyncEnumerable<Chunk> source = options.ReadAhead ? ReadAheadAsync(chunks, cancellationToken) : chunks.ToAsyncEnumerable();
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

        var result = new StudentBuildResult(outputDirectory, written, LlamaTensorLayout.CountParameters(written), bytesRead, bytesWritten, clock.Elapsed, reader.BytesFetched);
        LogBuilt(logger, outputDirectory, result.Parameters.Total, bytesRead, reader.BytesFetched, bytesWritten, clock.Elapsed.TotalSeconds);
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

    /// <summary>
    /// Every student tensor, a chunk of kept rows at a time, in write order. Each chunk is read, checked and gathered when
    /// it is enumerated, so the enumeration order is the whole schedule of teacher reads.
    /// </summary>
    private static IEnumerable<Chunk> Chunks(CheckpointReader reader, IReadOnlyList<TensorSelection> selections, CheckpointTensor[] declared, long chunkBytes, CancellationToken cancellationToken)
    {
        // The whole schedule first, so each read can ask storage for the one after it before copying its own rows:
        // storage then stays busy while this chunk is gathered and the previous one written.
        var schedule = new List<(int Tensor, long Start, long Count, long TeacherBytes, bool Last)>();
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
                schedule.Add((i, 0, 0, 0, true));
            }

            for (long start = 0; start < rowCount; start += rowsPerChunk)
            {
                long count = Math.Min(rowsPerChunk, rowCount - start);
                schedule.Add((i, start, count, count * rowBytes, start + count >= rowCount));
            }
        }

        for (int k = 0; k < schedule.Count; k++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var (tensor, start, count, teacherBytes, last) = schedule[k];
            if (k + 1 < schedule.Count && schedule[k + 1].Count > 0)
            {
                var next = schedule[k + 1];
                reader.PrefetchRows(selections[next.Tensor].TeacherName, KeptRows(selections[next.Tensor], next.Start, next.Count));
            }

            if (count == 0)
            {
                yield return new Chunk(tensor, [], 0, 0, last);
                continue;
            }

            (byte[] buffer, int length) = ReadChunk(reader, selections[tensor], start, count, teacherBytes, declared[tensor].DType);
            yield return new Chunk(tensor, buffer, length, teacherBytes, last);
        }
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

    /// <summary>Chunks in flight: the one being written and the one being read behind it.</summary>
    internal const int ChunksInFlight = 2;

    /// <summary>
    /// Enumerates <paramref name="items"/> on a worker while the caller consumes them, so reading and gathering chunk
    /// i+1 overlaps writing chunk i. A slot is taken before an item is produced and given back only once the caller has asked
    /// for the next one (it is done with the previous), so at most <see cref="ChunksInFlight"/> chunks exist at once.
    /// Order is kept (one reader, one writer, FIFO); a failure or cancellation on either side stops the other.
    /// </summary>
    internal static async IAsyncEnumerable<T> ReadAheadAsync<T>(IEnumerable<T> items, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var pipe = Channel.CreateUnbounded<T>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var slots = new SemaphoreSlim(ChunksInFlight);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        Task reading = Task.Run(
            () =>
            {
                try
                {
                    foreach (T item in WithSlots(items, slots, stop.Token))
                    {
                        pipe.Writer.TryWrite(item);
                    }

                    pipe.Writer.Complete();
                }
                catch (Exception ex)
                {
                    // Handed to the consumer, which rethrows it from its next wait (a damaged tensor, a cancellation).
                    pipe.Writer.Complete(ex);
                }
            },
            CancellationToken.None);

        try
        {
            bool holding = false;
            while (await pipe.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                while (pipe.Reader.TryRead(out T? item))
                {
                    if (holding)
                    {
                        // The consumer asks for a chunk only once it is done with the previous one.
                        slots.Release();
                    }

                    holding = true;
                    yield return item!;
                }
            }
        }
        finally
        {
            // Stops a reader still waiting for a slot (the consumer failed or was cancelled) before the slots go away.
            await stop.CancelAsync().ConfigureAwait(false);
            await reading.ConfigureAwait(false);
        }
    }

    /// <summary>Takes a slot before each item of <paramref name="items"/> is produced.</summary>
    private static IEnumerable<T> WithSlots<T>(IEnumerable<T> items, SemaphoreSlim slots, CancellationToken cancellationToken)
    {
        using IEnumerator<T> each = items.GetEnumerator();
        while (true)
        {
            slots.Wait(cancellationToken);
            if (!each.MoveNext())
            {
                yield break;
            }

            yield return each.Current;
        }
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

    [LoggerMessage(Level = LogLevel.Information, Message = "Build estimate: {Summary}")]
    private static partial void LogEstimate(ILogger logger, string summary);

    [LoggerMessage(Level = LogLevel.Information, Message = "Built {Directory}: {Parameters:N0} parameters, {BytesRead:N0} teacher bytes needed, {BytesFetched:N0} fetched, {BytesWritten:N0} bytes written in {Seconds:F1} s")]
    private static partial void LogBuilt(ILogger logger, string directory, long parameters, long bytesRead, long bytesFetched, long bytesWritten, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Directory}: the plan compresses the vocabulary and no tokenizer was given, so none was written; pass the compressed tokenizer")]
    private static partial void LogNoTokenizer(ILogger logger, string directory);
}
