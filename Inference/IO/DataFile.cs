namespace ModelSurgery.Inference.IO;

/// <summary>Reads of the library's own data files (configs, plans, scores) with errors that name the file.</summary>
public static class DataFile
{
    private static readonly System.Text.UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The whole text of <paramref name="path"/>.</summary>
    /// <param name="path">The file.</param>
    /// <param name="what">What the file holds, for the message (e.g. <c>config</c>).</param>
    /// <returns>The text.</returns>
    /// <exception cref="InvalidDataException">The file cannot be read or is not UTF-8 text; the message names it and what it should hold.</exception>
    public static string ReadAllText(string path, string what)
    {
        try
        {
            return File.ReadAllText(path, StrictUtf8);
        }
        catch (System.Text.DecoderFallbackException ex)
        {
            // Replacement characters would only surface later as a puzzling missing key.
            throw new InvalidDataException($"{path}: the {what} file is not UTF-8 text ({ex.Message}).", ex);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"{path}: cannot read {what} ({ex.Message}).", ex);
        }
    }
}
