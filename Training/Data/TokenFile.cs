using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace ModelSurgery.Training.Data;

/// <summary>
/// A packed token file opened read-only through a memory map. Layout (little endian): a 32-byte header
/// (<see cref="Magic"/> "MSTOKENS", uint32 version = 1, uint32 bytes per token = 2 or 4, int64 token count,
/// int32 document separator id, 4 reserved bytes) followed by the tokens as uint16 or uint32.
/// Documents are separated by the separator id (normally the end-of-sequence token).
/// </summary>
public sealed class TokenFile : IDisposable
{
    /// <summary>The eight magic bytes every token file starts with.</summary>
    public static ReadOnlySpan<byte> Magic => "MSTOKENS"u8;

    /// <summary>The format version this code reads and writes.</summary>
    public const int FormatVersion = 1;

    /// <summary>Size of the header in bytes.</summary>
    public const int HeaderSize = 32;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;

    private TokenFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, int bytesPerToken, long count, int separatorId)
    {
        Path = path;
        _map = map;
        _view = view;
        BytesPerToken = bytesPerToken;
        Count = count;
        SeparatorId = separatorId;
    }

    /// <summary>The file this reader was opened from.</summary>
    public string Path { get; }

    /// <summary>2 (uint16 tokens) or 4 (uint32 tokens).</summary>
    public int BytesPerToken { get; }

    /// <summary>Number of tokens, separators included.</summary>
    public long Count { get; }

    /// <summary>The document separator token id.</summary>
    public int SeparatorId { get; }

    /// <summary>Opens and validates a token file.</summary>
    /// <param name="path">The token file.</param>
    /// <returns>The open reader; dispose it to unmap the file.</returns>
    /// <exception cref="InvalidDataException">The header is missing, has the wrong magic, version or token width, or the size does not match the count.</exception>
    public static TokenFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var header = new byte[HeaderSize];
        long length;
        using (var stream = File.OpenRead(path))
        {
            length = stream.Length;
            if (length < HeaderSize || stream.ReadAtLeast(header, HeaderSize, throwOnEndOfStream: false) < HeaderSize)
            {
                throw new InvalidDataException($"Token file '{path}' is {length} bytes long, shorter than its {HeaderSize}-byte header.");
            }
        }

        if (!header.AsSpan(0, 8).SequenceEqual(Magic))
        {
            throw new InvalidDataException($"Token file '{path}' does not start with the magic bytes 'MSTOKENS'; it is not a token file.");
        }

        int version = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8));
        if (version != FormatVersion)
        {
            throw new InvalidDataException($"Token file '{path}' has format version {version}; only version {FormatVersion} is supported.");
        }

        int bytesPerToken = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(12));
        if (bytesPerToken is not (2 or 4))
        {
            throw new InvalidDataException($"Token file '{path}' declares {bytesPerToken} bytes per token; expected 2 (uint16) or 4 (uint32).");
        }

        long count = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(16));
        int separator = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(24));
        if (count < 0 || HeaderSize + (count * bytesPerToken) != length)
        {
            throw new InvalidDataException(
                $"Token file '{path}' declares {count} tokens of {bytesPerToken} bytes ({HeaderSize + (count * bytesPerToken)} bytes with the header) but is {length} bytes long; it is truncated or corrupt.");
        }

        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        try
        {
            var view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            return new TokenFile(path, map, view, bytesPerToken, count, separator);
        }
        catch
        {
            map.Dispose();
            throw;
        }
    }

    /// <summary>Copies tokens [offset, offset + destination.Length) into <paramref name="destination"/>.</summary>
    /// <param name="offset">First token index.</param>
    /// <param name="destination">Receives the tokens as 64-bit ids (the dtype torch embeddings take).</param>
    public void Read(long offset, Span<long> destination)
    {
        if (offset < 0 || offset + destination.Length > Count)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"Tokens [{offset}, {offset + destination.Length}) are outside token file '{Path}' of {Count} tokens.");
        }

        long position = HeaderSize + (offset * BytesPerToken);
        if (BytesPerToken == 2)
        {
            var raw = new ushort[destination.Length];
            _view.ReadArray(position, raw, 0, raw.Length);
            for (int i = 0; i < raw.Length; i++)
            {
                destination[i] = raw[i];
            }
        }
        else
        {
            var raw = new uint[destination.Length];
            _view.ReadArray(position, raw, 0, raw.Length);
            for (int i = 0; i < raw.Length; i++)
            {
                destination[i] = raw[i];
            }
        }
    }

    /// <summary>Reads tokens [offset, offset + length).</summary>
    /// <param name="offset">First token index.</param>
    /// <param name="length">Number of tokens.</param>
    /// <returns>The token ids.</returns>
    public long[] Read(long offset, int length)
    {
        var result = new long[length];
        Read(offset, result);
        return result;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _view.Dispose();
        _map.Dispose();
    }

    internal static void WriteHeader(Span<byte> header, int bytesPerToken, long count, int separatorId)
    {
        header.Clear();
        Magic.CopyTo(header);
        BinaryPrimitives.WriteInt32LittleEndian(header[8..], FormatVersion);
        BinaryPrimitives.WriteInt32LittleEndian(header[12..], bytesPerToken);
        BinaryPrimitives.WriteInt64LittleEndian(header[16..], count);
        BinaryPrimitives.WriteInt32LittleEndian(header[24..], separatorId);
    }

    internal static int BytesPerTokenFor(int vocabSize) => vocabSize <= 65535 ? 2 : 4;

    internal static void Encode(ReadOnlySpan<int> tokens, int bytesPerToken, Span<byte> destination)
    {
        if (bytesPerToken == 2)
        {
            for (int i = 0; i < tokens.Length; i++)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(destination[(2 * i)..], (ushort)tokens[i]);
            }
        }
        else
        {
            MemoryMarshal.AsBytes(tokens).CopyTo(destination);
            if (!BitConverter.IsLittleEndian)
            {
                for (int i = 0; i < tokens.Length; i++)
                {
                    BinaryPrimitives.WriteInt32LittleEndian(destination[(4 * i)..], tokens[i]);
                }
            }
        }
    }
}
