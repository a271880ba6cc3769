using ModelSurgery.Inference.IO;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Training.Data;

/// <summary>Progress of <see cref="Tokenization.TokenizeAsync"/>.</summary>
/// <param name="Completed">Documents written so far (their number is not known before the inputs are read).</param>
/// <param name="Tokens">Tokens written so far, separators included.</param>
/// <param name="CurrentFile">The input file being read.</param>
public sealed record TokenizeProgress(long Completed, long Tokens, string CurrentFile) : IProgressReport
{
    /// <summary>Always null: the inputs are streamed, so their document count is not known in advance.</summary>
    public long? Total => null;

    /// <summary>Always <see cref="ProgressUnit.Documents"/>.</summary>
    public ProgressUnit Unit => ProgressUnit.Documents;

    /// <summary>Tokens so far and the file being read, e.g. <c>12,345 tokens, part-001.jsonl</c>.</summary>
    public string Status => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{Tokens:N0} tokens, {Path.GetFileName(CurrentFile)}");
}

/// <summary>Summary of a finished tokenization.</summary>
/// <param name="OutputPath">The token file written.</param>
/// <param name="Files">Input files read.</param>
/// <param name="Documents">Documents written.</param>
/// <param name="Tokens">Tokens written, separators included.</param>
public sealed record TokenizeResult(string OutputPath, int Files, long Documents, long Tokens);

/// <summary>What to read and how to write it.</summary>
/// <param name="VocabSize">Vocabulary size (chooses uint16 or uint32 storage).</param>
/// <param name="SeparatorId">The id written between documents (the end-of-sequence id).</param>
/// <param name="JsonField">For .jsonl/.json lines: the string field holding the document text (dotted path for nested fields).</param>
/// <param name="DocumentsPerBatch">Documents tokenized in parallel at a time; output order never depends on it.</param>
public sealed record TokenizeOptions(int VocabSize, int SeparatorId, string JsonField = "text", int DocumentsPerBatch = 256);

/// <summary>
/// Turns text into a packed <see cref="TokenFile"/>. Inputs are read by <see cref="CorpusReader"/>: files, folders or
/// globs; a plain text file (optionally .gz) is one document, a JSONL file (optionally .gz) holds one document per line
/// in <see cref="TokenizeOptions.JsonField"/> (a dotted path reaches nested fields). Documents are tokenized on all cores
/// and written in input order, so the output is deterministic.
/// </summary>
public static class Tokenization
{
    /// <summary>Tokenizes the inputs into a token file.</summary>
    /// <param name="tokenizer">The tokenizer (must be safe for concurrent encoding, as the library's tokenizers are).</param>
    /// <param name="inputs">Files, directories or globs.</param>
    /// <param name="outputPath">The token file to write (atomically).</param>
    /// <param name="options">Vocabulary size, separator and JSON field.</param>
    /// <param name="progress">Optional progress, reported after each batch of documents.</param>
    /// <param name="cancellationToken">Cancels the work; no output file is left behind.</param>
    /// <returns>Counts of what was written.</returns>
    public static async Task<TokenizeResult> TokenizeAsync(
        ModelTokenizer tokenizer,
        IEnumerable<string> inputs,
        string outputPath,
        TokenizeOptions options,
        IProgress<TokenizeProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.DocumentsPerBatch);
        IReadOnlyList<string> files = CorpusReader.ExpandPaths(inputs);
        if (files.Count == 0)
        {
            throw new ArgumentException("No input files matched.", nameof(inputs));
        }

        using var writer = new TokenFileWriter(outputPath, options.VocabSize, options.SeparatorId);
        var parallel = new ParallelOptions { CancellationToken = cancellationToken };
        var batch = new List<string>(options.DocumentsPerBatch);
        foreach (string file in files)
        {
            await foreach (string document in CorpusReader.ReadDocumentsAsync([file], options.JsonField, chunkChars: null, cancellationToken).ConfigureAwait(false))
            {
                batch.Add(document);
                if (batch.Count == options.DocumentsPerBatch)
                {
                    WriteBatch(tokenizer, batch, writer, parallel);
                    progress?.Report(new TokenizeProgress(writer.Documents, writer.Count, file));
                }
            }

            WriteBatch(tokenizer, batch, writer, parallel);
            progress?.Report(new TokenizeProgress(writer.Documents, writer.Count, file));
        }

        cancellationToken.ThrowIfCancellationRequested();
        if (writer.Count == 0)
        {
            // An empty token file would only fail later (no windows to train on, NaN metrics); say so here.
            throw new InvalidDataException($"The inputs ({string.Join(", ", files.Take(3))}{(files.Count > 3 ? ", ..." : string.Empty)}) hold no text: 0 tokens. Check the files and the JSON field '{options.JsonField}'.");
        }

        writer.Complete();
        return new TokenizeResult(writer.Path, files.Count, writer.Documents, writer.Count);
    }

    private static void WriteBatch(ModelTokenizer tokenizer, List<string> batch, TokenFileWriter writer, ParallelOptions parallel)
    {
        var encoded = new int[batch.Count][];
        Parallel.For(0, batch.Count, parallel, i => encoded[i] = [.. tokenizer.Encode(batch[i])]);
        foreach (int[] tokens in encoded)
        {
            writer.AppendDocument(tokens);
        }

        batch.Clear();
    }
}
