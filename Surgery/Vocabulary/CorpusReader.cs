using System.IO.Compression;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace ModelSurgery.Surgery.Vocabulary;

/// <summary>
/// Streams a text corpus as documents: JSONL records (one named string field per line) or plain text cut into
/// chunks at paragraph boundaries. Paths may be files, folders (all files below, recursively) or glob patterns
/// (<c>*</c>, <c>?</c>, <c>**</c>); <c>.gz</c> files are decompressed on the fly.
/// </summary>
public static class CorpusReader
{
    /// <summary>The field read from JSONL records when none is named.</summary>
    public const string DefaultJsonlField = "text";

    /// <summary>Expands files, folders and glob patterns into an ordered, de-duplicated file list.</summary>
    /// <exception cref="ArgumentException">A path matches nothing; the message names it.</exception>
    public static IReadOnlyList<string> ExpandPaths(IEnumerable<string> paths)
    {
        ArgumentNullException.ThrowIfNull(paths);
        var files = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string path in paths)
        {
            IEnumerable<string> matches = File.Exists(path) ? [path]
                : Directory.Exists(path) ? Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal)
                : path.IndexOfAny(['*', '?']) >= 0 ? Glob(path)
                : [];
            int before = files.Count;
            foreach (string file in matches)
            {
                if (seen.Add(Path.GetFullPath(file)))
                {
                    files.Add(file);
                }
            }

            if (files.Count == before && !matches.Any())
            {
                throw new ArgumentException($"Corpus path '{path}' matches no file.", nameof(paths));
            }
        }

        return files;
    }

    /// <summary>True when the file is read as JSONL (.jsonl, .ndjson or .json, optionally .gz).</summary>
    public static bool IsJsonl(string path)
    {
        string name = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? path[..^3] : path;
        return Path.GetExtension(name).ToLowerInvariant() is ".jsonl" or ".ndjson" or ".json";
    }

    /// <summary>
    /// Streams the documents of <paramref name="files"/>: each JSONL record's <paramref name="jsonlField"/>
    /// (a dotted path such as <c>meta.text</c> reaches nested objects), or plain text in chunks of about
    /// <paramref name="chunkChars"/> characters ending at a blank line (or any line when none comes).
    /// </summary>
    /// <exception cref="InvalidDataException">A JSONL line is not JSON or lacks the string field; the message names file, line and field.</exception>
    public static async IAsyncEnumerable<string> ReadDocumentsAsync(IEnumerable<string> files, string? jsonlField = null, int chunkChars = 1 << 16,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(files);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkChars, 1);
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

            var chunk = new StringBuilder();
            while (await ReadLineAsync(reader, file, cancellationToken).ConfigureAwait(false) is { } line)
            {
                chunk.Append(line).Append('\n');
                // Cut at paragraph breaks so words are not split; cut anyway when a chunk grows 4x too long.
                if ((chunk.Length >= chunkChars && line.Length == 0) || chunk.Length >= 4 * chunkChars)
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

    // Strict UTF-8: invalid bytes or NULs (a binary file) are refused with the file's name.
    private static async Task<string?> ReadLineAsync(TextReader reader, string file, CancellationToken cancellationToken)
    {
        try
        {
            string? line = await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false);
            return line is null ? null : Inference.IO.TextFiles.CheckText(line, file, line: null);
        }
        catch (DecoderFallbackException e)
        {
            throw Inference.IO.TextFiles.NotText(file, e);
        }
    }

    private static StreamReader OpenText(string file)
    {
        Stream stream = File.OpenRead(file);
        if (file.EndsWith(".gz", StringComparison.OrdinalIgnoreCase))
        {
            stream = new GZipStream(stream, CompressionMode.Decompress);
        }

        return Inference.IO.TextFiles.Open(stream);
    }

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
