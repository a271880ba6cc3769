using System.IO.Compression;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace ModelSurgery.Inference.IO;

/// <summary>
/// The one reader of text corpora, for token counting and for tokenization: JSONL records (one named string field per
/// line; <c>.jsonl</c>, <c>.ndjson</c>, <c>.json</c>) or plain text (any other file), each optionally gzip-compressed
/// (<c>.gz</c>, decompressed on the fly). Paths may be files, folders (every corpus file below, recursively: <c>.txt</c>
/// and the JSONL extensions, optionally <c>.gz</c>) or glob patterns (<c>*</c>, <c>?</c>, <c>**</c>). Text must be UTF-8:
/// invalid bytes or NUL characters (a binary file) are an error naming the file.
/// </summary>
public static class CorpusReader
{
    /// <summary>The field read from JSONL records when none is named.</summary>
    public const string DefaultJsonlField = "text";

    /// <summary>
    /// Expands files, folders (corpus files only, see <see cref="IsCorpusFile"/>) and glob patterns into full paths in
    /// input order, each folder or glob sorted ordinally, without repeats.
    /// </summary>
    /// <exception cref="ArgumentException">A path matches nothing; the message names it.</exception>
    public static IReadOnlyList<string> ExpandPaths(IEnumerable<string> paths)
    {
        ArgumentNullException.ThrowIfNull(paths);
        var files = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string path in paths)
        {
            IEnumerable<string> matches = File.Exists(path) ? [path]
                : Directory.Exists(path) ? Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Where(IsCorpusFile).Order(StringComparer.Ordinal)
                : path.IndexOfAny(['*', '?']) >= 0 ? Glob(path)
                : [];
            int before = files.Count;
            foreach (string file in matches)
            {
                string full = Path.GetFullPath(file);
                if (seen.Add(full))
                {
                    files.Add(full);
                }
            }

            if (files.Count == before && !matches.Any())
            {
                throw new ArgumentException($"Corpus path '{path}' matches no file.", nameof(paths));
            }
        }

        return files;
    }

    /// <summary>True for the files a folder contributes: .txt, .jsonl, .ndjson or .json, optionally .gz.</summary>
    public static bool IsCorpusFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string name = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? path[..^3] : path;
        return IsJsonl(path) || Path.GetExtension(name).Equals(".txt", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>True when the file is read as JSONL (.jsonl, .ndjson or .json, optionally .gz).</summary>
    public static bool IsJsonl(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string name = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? path[..^3] : path;
        return Path.GetExtension(name).ToLowerInvariant() is ".jsonl" or ".ndjson" or ".json";
    }

    /// <summary>
    /// Streams the documents of <paramref name="files"/>: each JSONL record's <paramref name="jsonlField"/>
    /// (a dotted path such as <c>meta.text</c> reaches nested objects), or a plain text file whole when
    /// <paramref name="chunkChars"/> is null, else in chunks of about <paramref name="chunkChars"/> characters ending at a
    /// blank line (or any line when none comes).
    /// </summary>
    /// <exception cref="InvalidDataException">A file is not UTF-8 text or not gzip where named .gz, or a JSONL line is not
    /// JSON or lacks the string field; the message names the file (and line and field).</exception>
    public static async IAsyncEnumerable<string> ReadDocumentsAsync(IEnumerable<string> files, string? jsonlField = null, int? chunkChars = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(files);
        if (chunkChars is int size)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(size, 1, nameof(chunkChars));
        }

        foreach (string file in files)
        {
            using TextReader reader = OpenText(file);
            if (IsJsonl(file))
            {
                string[] field = (jsonlField ?? DefaultJsonlField).Split('.');
                int lineNumber = 0;
                while (await ReadLineAsync(reader, file, cancellationToken).ConfigureAwait(false) is { } line)
                {
                    lineNumber++;
                    if (!string.IsNullOrWhiteSpace(line))
                    {
                        yield return ExtractField(line, field, file, lineNumber);
                    }
                }

                continue;
            }

            if (chunkChars is not int chunkSize)
            {
                yield return await ReadToEndAsync(reader, file, cancellationToken).ConfigureAwait(false);
                continue;
            }

            var chunk = new StringBuilder();
            while (await ReadLineAsync(reader, file, cancellationToken).ConfigureAwait(false) is { } line)
            {
                chunk.Append(line).Append('\n');
                // Cut at paragraph breaks so words are not split; cut anyway when a chunk grows 4x too long.
                if ((chunk.Length >= chunkSize && line.Length == 0) || chunk.Length >= 4 * chunkSize)
                {
                    yield return chunk.ToString();
                    chunk.Clear();
                }
            }

            if (chunk.Length > 0)
            {
                yield return chunk.ToString();
            }
        }
    }

    /// <summary>Reads the string at a dotted field path of one JSON record.</summary>
    /// <exception cref="InvalidDataException">Not JSON, the field is missing, or not a string.</exception>
    public static string ExtractField(string jsonLine, IReadOnlyList<string> fieldPath, string file, int lineNumber)
    {
        ArgumentNullException.ThrowIfNull(fieldPath);
        string field = string.Join('.', fieldPath);
        try
        {
            using JsonDocument document = JsonDocument.Parse(jsonLine);
            JsonElement element = document.RootElement;
            foreach (string part in fieldPath)
            {
                if (element.ValueKind != JsonValueKind.Object || !element.TryGetProperty(part, out element))
                {
                    throw new InvalidDataException($"{file}: line {lineNumber} has no field '{field}'.");
                }
            }

            return element.ValueKind == JsonValueKind.String
                ? element.GetString()!
                : throw new InvalidDataException($"{file}: line {lineNumber} field '{field}' is {element.ValueKind}, not a string.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{file}: line {lineNumber} is not valid JSON ({e.Message}).", e);
        }
    }

    private static StreamReader OpenText(string file)
    {
        Stream stream = File.OpenRead(file);
        if (file.EndsWith(".gz", StringComparison.OrdinalIgnoreCase))
        {
            stream = new GZipStream(stream, CompressionMode.Decompress);
        }

        // Strict UTF-8: a binary or wrongly encoded file fails with its name instead of turning into replacement characters.
        return TextFiles.Open(stream);
    }

    private static async Task<string?> ReadLineAsync(TextReader reader, string file, CancellationToken cancellationToken)
    {
        string? line;
        try
        {
            line = await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is DecoderFallbackException or InvalidDataException)
        {
            throw Unreadable(file, e);
        }

        return line is not null && line.Contains('\0', StringComparison.Ordinal) ? throw Binary(file) : line;
    }

    private static async Task<string> ReadToEndAsync(TextReader reader, string file, CancellationToken cancellationToken)
    {
        string text;
        try
        {
            text = await reader.ReadToEndAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is DecoderFallbackException or InvalidDataException)
        {
            throw Unreadable(file, e);
        }

        return text.Contains('\0', StringComparison.Ordinal) ? throw Binary(file) : text;
    }

    private static InvalidDataException Unreadable(string file, Exception e) => e is DecoderFallbackException
        ? new InvalidDataException($"{file}: not UTF-8 text ({e.Message}); corpus files must be UTF-8 text or JSONL.", e)
        : new InvalidDataException($"{file}: not a valid gzip file ({e.Message}).", e);

    private static InvalidDataException Binary(string file) =>
        new($"{file}: contains NUL characters, so it looks binary; corpus files must be UTF-8 text or JSONL.");

    private static IEnumerable<string> Glob(string pattern)
    {
        string normalized = pattern.Replace('\\', '/');
        int wildcard = normalized.IndexOfAny(['*', '?']);
        int slash = normalized.LastIndexOf('/', wildcard);
        string root = slash < 0 ? "." : normalized[..slash];
        if (root.Length == 0)
        {
            root = "/";
        }

        if (!Directory.Exists(root))
        {
            return [];
        }

        string relativePattern = slash < 0 ? normalized : normalized[(slash + 1)..];
        string regex = "^" + Regex.Escape(relativePattern).Replace(@"\*\*/", "(.*/)?", StringComparison.Ordinal)
            .Replace(@"\*\*", ".*", StringComparison.Ordinal).Replace(@"\*", "[^/]*", StringComparison.Ordinal)
            .Replace(@"\?", "[^/]", StringComparison.Ordinal) + "$";
        var matcher = new Regex(regex, RegexOptions.CultureInvariant);
        return Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .Where(f => matcher.IsMatch(Path.GetRelativePath(root, f).Replace('\\', '/')))
            .Select(f => slash < 0 ? Path.GetRelativePath(".", f) : f)
            .Order(StringComparer.Ordinal);
    }
}
