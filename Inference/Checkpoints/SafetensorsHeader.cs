using Microsoft.Win32.SafeHandles;
using System.Text.Json;
using System.Text.Unicode;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>Reads and validates the header of a safetensors file with the rules of the reference implementation.</summary>
internal static class SafetensorsHeader
{
    /// <summary>Largest header accepted, as in the reference implementation (guards against absurd allocations).</summary>
    public const long MaxHeaderLength = 100_000_000;

    /// <summary>Key of the free-form string map in a header.</summary>
    public const string MetadataKey = "__metadata__";

    /// <summary>The parsed header: tensors sorted by offset, metadata, and where the data buffer starts in the file.</summary>
    public sealed record Parsed(IReadOnlyList<SafetensorsTensorInfo> Tensors, IReadOnlyDictionary<string, string> Metadata, long DataStart);

    /// <summary>Reads the header of <paramref name="path"/> through <paramref name="file"/> and validates it against the file length.</summary>
    public static Parsed Read(string path, SafeFileHandle file)
    {
        long fileLength = RandomAccess.GetLength(file);
        if (fileLength == 0)
        {
            throw Invalid(path, "the file is empty (expected an 8-byte header length followed by a JSON header)");
        }

        if (fileLength < 8)
        {
            throw Invalid(path, $"the file is {fileLength} bytes, shorter than the 8-byte header length prefix");
        }

        Span<byte> prefix = stackalloc byte[8];
        ReadExactly(file, 0, prefix);
        ulong headerLength = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > MaxHeaderLength)
        {
            throw Invalid(path, $"header length {headerLength} exceeds the limit of {MaxHeaderLength} bytes");
        }

        if ((long)headerLength > fileLength - 8)
        {
            throw Invalid(path, $"header length {headerLength} points past the end of the file ({fileLength} bytes)");
        }

        var header = new byte[headerLength];
        ReadExactly(file, 8, header);
        long dataStart = 8 + (long)headerLength;
        return Parse(path, header, fileLength - dataStart, dataStart);
    }

    private static void ReadExactly(SafeFileHandle file, long offset, Span<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            int read = RandomAccess.Read(file, buffer, offset);
            if (read == 0)
            {
                throw new EndOfStreamException("The file ended while reading its header.");
            }

            buffer = buffer[read..];
            offset += read;
        }
    }

    /// <summary>Validates header bytes for a data buffer of <paramref name="dataLength"/> bytes.</summary>
    public static Parsed Parse(string path, byte[] header, long dataLength, long dataStart)
    {
        if (!Utf8.IsValid(header))
        {
            throw Invalid(path, "the header is not valid UTF-8");
        }

        if (header.Length == 0 || header[0] != (byte)'{')
        {
            throw Invalid(path, "the header must be a JSON object starting with '{'");
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException ex)
        {
            throw Invalid(path, $"the header is not valid JSON ({ex.Message})", ex);
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw Invalid(path, "the header must be a JSON object");
            }

            var tensors = new List<SafetensorsTensorInfo>();
            var names = new HashSet<string>(StringComparer.Ordinal);
            IReadOnlyDictionary<string, string> metadata = new Dictionary<string, string>();
            bool sawMetadata = false;
            foreach (var property in document.RootElement.EnumerateObject())
            {
                if (property.Name == MetadataKey)
                {
                    if (sawMetadata)
                    {
                        throw Invalid(path, $"duplicate key '{MetadataKey}' in the header");
                    }

                    sawMetadata = true;
                    metadata = ParseMetadata(path, property.Value);
                    continue;
                }

                if (!names.Add(property.Name))
                {
                    throw InvalidTensor(path, property.Name, "the name appears more than once in the header");
                }

                tensors.Add(ParseEntry(path, property.Name, property.Value));
            }

            CheckLayout(path, tensors, dataLength);
            return new Parsed(tensors, metadata, dataStart);
        }
    }

    private static Dictionary<string, string> ParseMetadata(string path, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw Invalid(path, $"'{MetadataKey}' must be a JSON object mapping strings to strings, found {Kind(value)}");
        }

        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in value.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
            {
                throw Invalid(path, $"'{MetadataKey}' value of key '{entry.Name}' must be a string, found {Kind(entry.Value)}");
            }

            if (!metadata.TryAdd(entry.Name, entry.Value.GetString()!))
            {
                throw Invalid(path, $"'{MetadataKey}' has duplicate key '{entry.Name}'");
            }
        }

        return metadata;
    }

    private static SafetensorsTensorInfo ParseEntry(string path, string name, JsonElement entry)
    {
        if (entry.ValueKind != JsonValueKind.Object)
        {
            throw InvalidTensor(path, name, $"the entry must be a JSON object with dtype, shape and data_offsets, found {Kind(entry)}");
        }

        // Unknown fields are ignored, as the reference implementation does.
        JsonElement? dtypeElement = null, shapeElement = null, offsetsElement = null;
        foreach (var field in entry.EnumerateObject())
        {
            switch (field.Name)
            {
                case "dtype": dtypeElement = field.Value; break;
                case "shape": shapeElement = field.Value; break;
                case "data_offsets": offsetsElement = field.Value; break;
            }
        }

        if (dtypeElement is not { } dtypeValue)
        {
            throw InvalidTensor(path, name, "missing field 'dtype'");
        }

        if (shapeElement is not { } shapeValue)
        {
            throw InvalidTensor(path, name, "missing field 'shape'");
        }

        if (offsetsElement is not { } offsetsValue)
        {
            throw InvalidTensor(path, name, "missing field 'data_offsets'");
        }

        if (dtypeValue.ValueKind != JsonValueKind.String)
        {
            throw InvalidTensor(path, name, $"'dtype' must be a string, found {Kind(dtypeValue)}");
        }

        string dtypeText = dtypeValue.GetString()!;
        if (!SafetensorsDTypes.TryParse(dtypeText, out var dtype))
        {
            throw new InvalidDataException($"Invalid safetensors file '{path}': unsupported dtype {dtypeText} in tensor '{name}'.");
        }

        if (shapeValue.ValueKind != JsonValueKind.Array)
        {
            throw InvalidTensor(path, name, $"'shape' must be an array of non-negative integers, found {Kind(shapeValue)}");
        }

        var shape = new long[shapeValue.GetArrayLength()];
        int axis = 0;
        foreach (var dim in shapeValue.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out long size))
            {
                throw InvalidTensor(path, name, $"'shape' dimension {axis} must be an integer, found {dim.GetRawText()}");
            }

            if (size < 0)
            {
                throw InvalidTensor(path, name, $"'shape' dimension {axis} is negative ({size})");
            }

            shape[axis++] = size;
        }

        if (offsetsValue.ValueKind != JsonValueKind.Array || offsetsValue.GetArrayLength() != 2)
        {
            throw InvalidTensor(path, name, $"'data_offsets' must be an array of two non-negative integers [begin, end], found {offsetsValue.GetRawText()}");
        }

        long begin = ReadOffset(path, name, offsetsValue[0], "begin");
        long end = ReadOffset(path, name, offsetsValue[1], "end");
        if (end < begin)
        {
            throw InvalidTensor(path, name, $"'data_offsets' end {end} is before begin {begin}");
        }

        long elements = 1;
        long bytes;
        try
        {
            foreach (long size in shape)
            {
                elements = checked(elements * size);
            }

            bytes = checked(elements * dtype.ElementSize());
        }
        catch (OverflowException)
        {
            throw InvalidTensor(path, name, $"the byte size of shape [{string.Join(", ", shape)}] x {dtypeText} overflows");
        }

        if (end - begin != bytes)
        {
            throw InvalidTensor(path, name,
                $"'data_offsets' [{begin}, {end}] span {end - begin} bytes but shape [{string.Join(", ", shape)}] x {dtypeText} needs {bytes} bytes");
        }

        return new SafetensorsTensorInfo(name, dtype, shape, begin, end);
    }

    private static long ReadOffset(string path, string name, JsonElement value, string which)
    {
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt64(out long offset) || offset < 0)
        {
            throw InvalidTensor(path, name, $"'data_offsets' {which} must be a non-negative integer, found {value.GetRawText()}");
        }

        return offset;
    }

    /// <summary>Sorted by begin, the tensors must tile the data buffer exactly: from 0, no gaps, no overlaps, up to its end.</summary>
    private static void CheckLayout(string path, List<SafetensorsTensorInfo> tensors, long dataLength)
    {
        tensors.Sort((a, b) => a.DataBegin != b.DataBegin
            ? a.DataBegin.CompareTo(b.DataBegin)
            : a.DataEnd.CompareTo(b.DataEnd));
        long expected = 0;
        string? previous = null;
        foreach (var tensor in tensors)
        {
            if (tensor.DataBegin != expected)
            {
                string where = previous is null
                    ? "the first tensor must start at data offset 0"
                    : $"the previous tensor '{previous}' ends at {expected}";
                string rule = tensor.DataBegin > expected ? "leaves a gap" : "overlaps the data of another tensor";
                throw InvalidTensor(path, tensor.Name, $"'data_offsets' begin {tensor.DataBegin} {rule}: {where}");
            }

            expected = tensor.DataEnd;
            previous = tensor.Name;
        }

        if (expected != dataLength)
        {
            string rule = expected < dataLength
                ? $"the tensors cover {expected} bytes of the data buffer but it holds {dataLength} bytes (trailing bytes after the last tensor)"
                : $"the tensors need {expected} bytes of data but the file holds only {dataLength} bytes after the header (truncated file)";
            throw Invalid(path, previous is null ? rule : $"{rule}; last tensor '{previous}'");
        }
    }

    private static string Kind(JsonElement value) => value.ValueKind.ToString().ToLowerInvariant();

    private static InvalidDataException Invalid(string path, string rule, Exception? inner = null) =>
        new($"Invalid safetensors file '{path}': {rule}.", inner);

    private static InvalidDataException InvalidTensor(string path, string name, string rule) =>
        new($"Invalid safetensors file '{path}': tensor '{name}': {rule}.");
}
