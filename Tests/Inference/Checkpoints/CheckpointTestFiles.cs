using System.Text;

namespace ModelSurgery.Tests.Checkpoints;

/// <summary>A fresh directory under the system temp folder, deleted on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "modelsurgery-checkpoints-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>File names in the directory, sorted.</summary>
    public string[] FileNames() => Directory.EnumerateFiles(Path).Select(System.IO.Path.GetFileName).Order(StringComparer.Ordinal).ToArray()!;

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp folder must not fail a test.
        }
    }
}

/// <summary>Builds safetensors files byte by byte, so malformed ones can be made on purpose.</summary>
internal static class RawSafetensors
{
    /// <summary>Writes the 8-byte little-endian length (the real one unless overridden), the header text and the data.</summary>
    public static string Write(string path, string header, byte[]? data = null, ulong? headerLength = null) =>
        WriteBytes(path, Encoding.UTF8.GetBytes(header), data, headerLength);

    public static string WriteBytes(string path, byte[] header, byte[]? data = null, ulong? headerLength = null)
    {
        using var stream = System.IO.File.Create(path);
        Span<byte> prefix = stackalloc byte[8];
        BitConverter.TryWriteBytes(prefix, headerLength ?? (ulong)header.Length);
        stream.Write(prefix);
        stream.Write(header);
        stream.Write(data ?? []);
        return path;
    }
}
