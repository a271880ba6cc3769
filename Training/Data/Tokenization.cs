using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace ModelSurgery.Training.Data;

/// <summary>Progress of <see cref="Tokenization.TokenizeAsync"/>.</summary>
/// <param name="Documents">Documents written so far.</param>
/// <param name="Tokens">Tokens written so far, separators included.</param>
/// <param name="CurrentFile">The input file being read.</param>
public sealed record TokenizeProgress(long Documents, long Tokens, string CurrentFile);

/// <summary>Summary of a finished tokenization.</summary>
/// <param name="OutputPath">The token file written.</param>
/// <param name="Files">Input files read.</param>
/// <param name="Documents">Documents written.</param>
/// <param name="Tokens">Tokens written, separators included.</param>
public sealed record TokenizeResult(string OutputPath, int Files, long Documents, long Tokens);

/// <summary>What to read and how to write it.</summary>
/// <param name="VocabSize">Vocabulary size (chooses uint16 or uint32 storage).</param>
/// <param name="SeparatorId">The id written between documents (the end-of-sequence id).</param>
/// <param name="JsonField">For .jsonl/.json lines: the string field holding the document text.</param>
/// <param name="DocumentsPerBatch">Documents tokenized in parallel at a time; output order never depends on it.</param>
public sealed record TokenizeOptions(int VocabSize, int SeparatorId, string JsonField = "text", int DocumentsPerBatch = 256);

/// <summary>
/// Turns text into a packed <see cref="TokenFile"/>. Inputs may be files, directories (every .txt, .jsonl and .json
/// file below them) or globs with <c>*</c>/<c>?</c> in the file name (e.g. <c>data/*.jsonl</c>). A plain text file is one
/// document; a JSONL file holds one document per line in <see cref="TokenizeOptions.JsonField"/>. Documents are
/// tokenized on all cores and written in input order, so the output is deterministic.
/// </summary>
public static class Tokenization
{
    /// <summary>Resolves files, directories and globs to a sorted, de-duplicated list of files.</summary>
    /// <param name="inputs">Paths, directories or globs.</param>
    /// <returns>Full paths in input order (each directory or glob sorted ordinally).</returns>
    public static IReadOnlyList<string> ResolveInputs(IEnumerable<string> inputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        var files = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string input in inputs)
        {
            IEnumerable<string> found;
            if (File.Exists(input))
            {
                found = [input];
            }
            else if (Directory.Exists(input))
            {
                found = Directory.EnumerateFiles(input, "*", SearchOption.AllDirectories)
                    .Where(f => f.EndsWith(".txt", StringComparison.OrdinalIgnoreCase) || IsJson(f))
                    .Order(StringComparer.Ordinal);
            }
            else if (input.IndexOfAny(['*', '?']) >= 0)
            {
                string directory = Path.GetDirectoryName(input) is { Length: > 0 } d ? d : ".";
                if (directory.IndexOfAny(['*', '?']) >= 0 || !Directory.Exists(directory))
                {
                    throw new ArgumentException($"Input glob '{input}': wildcards are only allowed in the file name and the folder '{directory}' must exist.", nameof(inputs));
                }

                found = Directory.EnumerateFiles(directory, Path.GetFileName(input)).Order(StringComparer.Ordinal);
            }
            else
            {
                throw new ArgumentException($"Input '{input}' is not a file, a directory or a glob.", nameof(inputs));
            }

            foreach (string file in found)
            {
                string full = Path.GetFullPath(file);
                if (seen.Add(full))
                {
                    files.Add(full);
                }
            }
        }

        return files;
    }

    /// <summary>Tokenizes the inputs into a token file.</summary>
    /// <param name="tokenizer">The tokenizer (must be safe for concurrent encoding, as the library's tokenizers are).</param>
    /// <param name="inputs">Files, directories or globs.</param>
    /// <param name="outputPath">The token file to write (atomically).</param>
    /// <param name="options">Vocabulary size, separator and JSON field.</param>
    /// <param name="progress">Optional progress, reported after each batch of documents.</param>
    /// <param name="cancellationToken">Cancels the work; no output file is left behind.</param>
    /// <returns>Counts of what was written.</returns>
    public static async Task<TokenizeResult> TokenizeAsync(
        Tokenizer tokenizer,
        IEnumerable<string> inputs,
        string outputPath,
        TokenizeOptions options,
        IProgress<TokenizeProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.DocumentsPerBatch);
        IReadOnlyList<string> files = ResolveInputs(inputs);
        if (files.Count == 0)
        {
            throw new ArgumentException("No input files matched.", nameof(inputs));
        }

        using var writer = new TokenFileWriter(outputPath, options.VocabSize, options.SeparatorId);
        var parallel = new ParallelOptions { CancellationToken = cancellationToken };
        var batch = new List<string>(options.DocumentsPerBatch);
        foreach (string file in files)
        {
            await foreach (string document in ReadDocumentsAsync(file, options.JsonField, cancellationToken).ConfigureAwait(false))
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

    private static void WriteBatch(Tokenizer tokenizer, List<string> batch, TokenFileWriter writer, ParallelOptions parallel)
    {
        var encoded = new int[batch.Count][];
        Parallel.For(0, batch.Count, parallel, i => encoded[i] = [.. tokenizer.EncodeToIds(batch[i])]);
        foreach (int[] tokens in encoded)
        {
            writer.AppendDocument(tokens);
        }

        batch.Clear();
    }

    private static bool IsJson(string file) =>
        file.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || file.EndsWith(".json", StringComparison.OrdinalIgnoreCase);

    private static async IAsyncEnumerable<string> ReadDocumentsAsync(
        string file, string field, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        if (!IsJson(file))
        {
            yield return Inference.IO.TextFiles.ReadAllText(file);
            yield break;
        }

        using var reader = Inference.IO.TextFiles.Open(file);
        int lineNumber = 0;
        while (true)
        {
            string? line;
            try
            {
                line = await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (System.Text.DecoderFallbackException e)
            {
                throw Inference.IO.TextFiles.NotText(file, e);
            }

            if (line is null)
            {
                break;
            }

            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }

            yield return Inference.IO.TextFiles.CheckText(ReadField(file, lineNumber, line, field), file, lineNumber);
        }
    }

    private static string ReadField(string file, int lineNumber, string line, string field)
    {
        try
        {
            using var json = JsonDocument.Parse(line);
            if (json.RootElement.ValueKind != JsonValueKind.Object
                || !json.RootElement.TryGetProperty(field, out JsonElement value)
                || value.ValueKind != JsonValueKind.String)
            {
                throw new InvalidDataException($"Line {lineNumber} of '{file}' has no string field '{field}'.");
            }

            return value.GetString()!;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Line {lineNumber} of '{file}' is not valid JSON: {e.Message}", e);
        }
    }
}
