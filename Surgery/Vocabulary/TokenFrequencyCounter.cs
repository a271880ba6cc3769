using System.Diagnostics;
using System.Text;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.IO;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Surgery.Vocabulary;

/// <summary>Progress of a frequency count.</summary>
/// <param name="Documents">Documents tokenized so far.</param>
/// <param name="Completed">UTF-8 bytes of text tokenized so far.</param>
/// <param name="Tokens">Tokens produced so far.</param>
/// <param name="MegabytesPerSecond">Throughput so far.</param>
public sealed record CountingProgress(long Documents, long Completed, long Tokens, double MegabytesPerSecond) : IProgressReport
{
    /// <summary>
    /// Always null: the corpus is streamed, and its text bytes differ from its file sizes (JSON fields, compression), so
    /// no honest total exists before the end.
    /// </summary>
    public long? Total => null;

    /// <summary>Always <see cref="ProgressUnit.Bytes"/>.</summary>
    public ProgressUnit Unit => ProgressUnit.Bytes;

    /// <summary>Documents, tokens and throughput so far.</summary>
    public string Status => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{Documents:N0} documents {Tokens:N0} tokens {MegabytesPerSecond:F1} MB/s");
}

/// <summary>Settings of a frequency count.</summary>
public sealed record CountingOptions
{
    /// <summary>The model whose embedding share to report along the coverage curve, or null.</summary>
    public LlamaConfig? Config { get; init; }

    /// <summary>Counts array length; null takes the tokenizer's vocabulary size (or the largest id seen, for tiktoken).</summary>
    public int? VocabSize { get; init; }

    /// <summary>Recorded in <see cref="VocabularyStatistics.Tokenizer"/>.</summary>
    public string TokenizerName { get; init; } = "";

    /// <summary>Worker threads; null uses every core.</summary>
    public int? MaxDegreeOfParallelism { get; init; }

    /// <summary>Plain-text chunk size in characters.</summary>
    public int ChunkChars { get; init; } = 1 << 16;

    /// <summary>Stop after this many documents (null = all), for quick estimates.</summary>
    public long? MaxDocuments { get; init; }
}

/// <summary>
/// Counts how often each token id occurs in a corpus, streaming documents to one worker per core; each worker keeps
/// its own counts, merged at the end, so no locking is needed per token.
/// </summary>
public static class TokenFrequencyCounter
{
    private const int BatchChars = 1 << 18;

    /// <summary>Counts token frequencies over corpus files (files, folders, globs; JSONL or plain text).</summary>
    /// <param name="tokenizer">The tokenizer whose ids to count (called from several threads; every ModelTokenizer this library returns is safe for that).</param>
    /// <param name="corpusPaths">Files, folders or glob patterns.</param>
    /// <param name="jsonlField">The text field of JSONL records (default <c>text</c>).</param>
    /// <param name="options">Count settings; null for defaults.</param>
    /// <param name="progress">Receives progress after each batch.</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="cancellationToken">Stops the count.</param>
    public static Task<VocabularyStatistics> ComputeAsync(ModelTokenizer tokenizer, IEnumerable<string> corpusPaths, string? jsonlField = null,
        CountingOptions? options = null, IProgress<CountingProgress>? progress = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        IReadOnlyList<string> files = CorpusReader.ExpandPaths(corpusPaths);
        options ??= new CountingOptions();
        VocabularyLog.CountingFiles(logger ?? NullLogger.Instance, files.Count);
        return ComputeAsync(tokenizer, CorpusReader.ReadDocumentsAsync(files, jsonlField, options.ChunkChars, cancellationToken), options, progress, logger, cancellationToken);
    }

    /// <summary>Counts token frequencies over a stream of documents.</summary>
    /// <param name="tokenizer">The tokenizer whose ids to count.</param>
    /// <param name="documents">The texts.</param>
    /// <param name="options">Count settings; null for defaults.</param>
    /// <param name="progress">Receives progress after each batch.</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="cancellationToken">Stops the count.</param>
    public static async Task<VocabularyStatistics> ComputeAsync(ModelTokenizer tokenizer, IAsyncEnumerable<string> documents, CountingOptions? options = null,
        IProgress<CountingProgress>? progress = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(documents);
        options ??= new CountingOptions();
        logger ??= NullLogger.Instance;
        int workers = Math.Max(1, options.MaxDegreeOfParallelism ?? Environment.ProcessorCount);
        int? vocabSize = options.VocabSize ?? tokenizer.VocabularySize;
        int initialSize = vocabSize ?? 1024;
        var channel = Channel.CreateBounded<List<string>>(new BoundedChannelOptions(2 * workers) { SingleWriter = true });
        var stopwatch = Stopwatch.StartNew();
        long documentCount = 0, byteCount = 0, tokenCount = 0;

        void Report()
        {
            long bytes = Interlocked.Read(ref byteCount);
            progress?.Report(new CountingProgress(Interlocked.Read(ref documentCount), bytes, Interlocked.Read(ref tokenCount), Throughput(bytes, stopwatch.Elapsed.TotalSeconds)));
        }

        // A failing worker cancels the producer, so it never waits forever on a full channel.
        using var workerFailed = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        Task<long[]>[] consumers = [.. Enumerable.Range(0, workers).Select(_ => Task.Run(async () =>
        {
            long[] counts = new long[initialSize];
            try
            {
                await foreach (List<string> batch in channel.Reader.ReadAllAsync(workerFailed.Token).ConfigureAwait(false))
                {
                    CountBatch(batch, ref counts);
                }
            }
            catch
            {
                await workerFailed.CancelAsync().ConfigureAwait(false);
                throw;
            }

            return counts;
        }, cancellationToken))];

        void CountBatch(List<string> batch, ref long[] counts)
        {
            long bytes = 0, tokens = 0;
            foreach (string document in batch)
            {
                int[] ids = tokenizer.Encode(document);
                foreach (int id in ids)
                {
                    if (id >= counts.Length)
                    {
                        Array.Resize(ref counts, Math.Max(id + 1, counts.Length * 2));
                    }

                    counts[id]++;
                }

                tokens += ids.Length;
                bytes += Encoding.UTF8.GetByteCount(document);
            }

            Interlocked.Add(ref documentCount, batch.Count);
            Interlocked.Add(ref byteCount, bytes);
            Interlocked.Add(ref tokenCount, tokens);
            Report();
        }

        try
        {
            var batch = new List<string>();
            int batchChars = 0;
            long produced = 0;
            await foreach (string document in documents.WithCancellation(workerFailed.Token).ConfigureAwait(false))
            {
                if (options.MaxDocuments is long max && produced >= max)
                {
                    break;
                }

                produced++;
                batch.Add(document);
                batchChars += document.Length;
                if (batchChars >= BatchChars)
                {
                    await channel.Writer.WriteAsync(batch, workerFailed.Token).ConfigureAwait(false);
                    batch = [];
                    batchChars = 0;
                }
            }

            if (batch.Count > 0)
            {
                await channel.Writer.WriteAsync(batch, workerFailed.Token).ConfigureAwait(false);
            }

            channel.Writer.Complete();
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            // A worker failed and cancelled the producer: report the worker's error.
            channel.Writer.TryComplete();
            await AwaitWorkersAsync(consumers).ConfigureAwait(false);
            throw;
        }
        catch
        {
            // The producer failed (e.g. a malformed JSONL line): stop the workers, then report the producer's error.
            await workerFailed.CancelAsync().ConfigureAwait(false);
            channel.Writer.TryComplete();
            await Task.WhenAny(Task.WhenAll(consumers)).ConfigureAwait(false);
            throw;
        }

        long[][] perWorker = await AwaitWorkersAsync(consumers).ConfigureAwait(false);
        stopwatch.Stop();
        int size = Math.Max(vocabSize ?? 0, perWorker.Max(c => LastNonZero(c) + 1));
        long[] merged = new long[size];
        foreach (long[] counts in perWorker)
        {
            for (int i = 0; i < Math.Min(counts.Length, size); i++)
            {
                merged[i] += counts[i];
            }
        }

        double seconds = stopwatch.Elapsed.TotalSeconds;
        var statistics = new VocabularyStatistics
        {
            Tokenizer = options.TokenizerName,
            Counts = merged,
            TotalTokens = merged.Sum(),
            TotalBytes = byteCount,
            Documents = documentCount,
            ElapsedSeconds = seconds,
            MegabytesPerSecond = Throughput(byteCount, seconds),
            CoverageCurve = VocabularyStatistics.BuildCoverageCurve(merged, options.Config),
        };
        VocabularyLog.Counted(logger, statistics.TotalTokens, statistics.Documents, statistics.TotalBytes, statistics.MegabytesPerSecond, statistics.DistinctTokensSeen, statistics.VocabSize);
        Report();
        return statistics;
    }

    /// <summary>Waits for every worker; when some failed, throws the first error that is not the cancellation it caused in the others.</summary>
    private static async Task<long[][]> AwaitWorkersAsync(Task<long[]>[] workers)
    {
        Task<long[][]> all = Task.WhenAll(workers);
        try
        {
            return await all.ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (all.Exception?.InnerExceptions.FirstOrDefault(e => e is not OperationCanceledException) is { } error)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
            throw;
        }
    }

    private static double Throughput(long bytes, double seconds) => seconds > 0 ? bytes / 1e6 / seconds : 0;

    private static int LastNonZero(long[] counts)
    {
        for (int i = counts.Length - 1; i >= 0; i--)
        {
            if (counts[i] != 0)
            {
                return i;
            }
        }

        return -1;
    }
}
