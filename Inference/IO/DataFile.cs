namespace ModelSurgery.Inference.IO;

/// <summary>Reads of the library's own data files (configs, plans, scores) with errors that name the file.</summary>
public static class DataFile
{
    /// <summary>The whole text of <paramref name="path"/>.</summary>
    /// <param name="path">The file.</param>
    /// <param name="what">What the file holds, for the message (e.g. <c>config</c>).</param>
    /// <returns>The text.</returns>
    /// <exception cref="InvalidDataException">The file cannot be read; the message names it and what it should hold.</exception>
    public static string ReadAllText(string path, string what)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"{path}: cannot read {what} ({ex.Message}).", ex);
        }
    }
}
