using System.Text;

namespace ModelSurgery.Inference.IO;

/// <summary>Atomic file writes: the bytes go to a temp file in the same folder, which then replaces the target.</summary>
public static class AtomicFile
{
    /// <summary>Writes <paramref name="bytes"/> to <paramref name="path"/> atomically, creating the folder if needed.</summary>
    public static void WriteAllBytes(string path, byte[] bytes)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(bytes);
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        Replace(full, temp => File.WriteAllBytes(temp, bytes));
    }

    /// <summary>Copies <paramref name="source"/> to <paramref name="destination"/> atomically: no reader ever sees a half-copied file.</summary>
    public static void Copy(string source, string destination)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(source);
        ArgumentException.ThrowIfNullOrWhiteSpace(destination);
        Replace(Path.GetFullPath(destination), temp => File.Copy(source, temp));
    }

    /// <summary>Writes <paramref name="text"/> as UTF-8 (no byte order mark) to <paramref name="path"/> atomically.</summary>
    public static void WriteAllText(string path, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        WriteAllBytes(path, new UTF8Encoding(false).GetBytes(text));
    }

    // Writes a temp file beside the target, then moves it over the target; the temp file never outlives the call.
    private static void Replace(string full, Action<string> writeTemp)
    {
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            writeTemp(temp);
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp))
            {
                File.Delete(temp);
            }
        }
    }
}
