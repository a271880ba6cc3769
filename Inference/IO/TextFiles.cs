using System.Text;

namespace ModelSurgery.Inference.IO;

/// <summary>
/// Strict reading of text inputs (corpora, task files): bytes that are not UTF-8, or NUL characters (a binary file),
/// are refused with the file's name instead of being turned into replacement characters and trained or scored on.
/// </summary>
public static class TextFiles
{
    /// <summary>UTF-8 that throws on invalid bytes.</summary>
    public static Encoding StrictUtf8 { get; } = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Opens a text file for strict UTF-8 reading (a byte order mark is skipped).</summary>
    public static StreamReader Open(string path, int bufferSize = 1 << 16) =>
        new(File.OpenRead(path), StrictUtf8, detectEncodingFromByteOrderMarks: true, bufferSize);

    /// <summary>Wraps <paramref name="stream"/> in a strict UTF-8 reader.</summary>
    public static StreamReader Open(Stream stream, int bufferSize = 1 << 16) =>
        new(stream, StrictUtf8, detectEncodingFromByteOrderMarks: true, bufferSize);

    /// <summary>Reads a whole text file strictly.</summary>
    /// <exception cref="InvalidDataException">The file is not UTF-8 text.</exception>
    public static string ReadAllText(string path)
    {
        try
        {
            return CheckText(File.ReadAllText(path, StrictUtf8), path, line: null);
        }
        catch (DecoderFallbackException e)
        {
            throw NotText(path, e);
        }
    }

    /// <summary>Reads the lines of a text file strictly.</summary>
    /// <exception cref="InvalidDataException">The file is not UTF-8 text.</exception>
    public static IEnumerable<string> ReadLines(string path)
    {
        using StreamReader reader = Open(path);
        int number = 0;
        while (true)
        {
            string? line;
            try
            {
                line = reader.ReadLine();
            }
            catch (DecoderFallbackException e)
            {
                throw NotText(path, e);
            }

            if (line is null)
            {
                yield break;
            }

            yield return CheckText(line, path, ++number);
        }
    }

    /// <summary>Refuses text holding NUL characters, which no text file has (the file is binary).</summary>
    /// <exception cref="InvalidDataException">The text holds a NUL.</exception>
    public static string CheckText(string text, string path, int? line)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Contains('\0', StringComparison.Ordinal))
        {
            throw new InvalidDataException(line is null
                ? $"{path}: holds NUL bytes; it is a binary file, not text."
                : $"{path}: line {line} holds NUL bytes; it is a binary file, not text.");
        }

        return text;
    }

    /// <summary>The error for a decoding failure, naming the file.</summary>
    public static InvalidDataException NotText(string path, DecoderFallbackException e)
    {
        ArgumentNullException.ThrowIfNull(e);
        return new InvalidDataException($"{path}: is not valid UTF-8 text (invalid bytes at index {e.Index}); convert it to UTF-8 or leave it out.", e);
    }
}
