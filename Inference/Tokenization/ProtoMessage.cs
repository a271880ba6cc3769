using System.Buffers.Binary;
using System.Text;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>Protocol buffer wire types (the ones proto2 files still use).</summary>
internal enum ProtoWireType
{
    Varint = 0,
    Fixed64 = 1,
    LengthDelimited = 2,
    Fixed32 = 5,
}

/// <summary>One field occurrence: varint fields keep the value, the others keep their raw payload bytes.</summary>
internal sealed record ProtoField(int Number, ProtoWireType WireType, ulong Varint, byte[] Payload);

/// <summary>
/// A protobuf message kept as its ordered list of fields, so fields this library does not model are written back
/// byte for byte. Only what SentencePiece model files need: varints, fixed32/64 and length-delimited fields.
/// </summary>
internal sealed class ProtoMessage
{
    public List<ProtoField> Fields { get; } = [];

    public static ProtoMessage Parse(ReadOnlySpan<byte> data, string source)
    {
        var message = new ProtoMessage();
        int position = 0;
        while (position < data.Length)
        {
            ulong key = ReadVarint(data, ref position, source);
            int number = (int)(key >> 3);
            var wireType = (ProtoWireType)(key & 7);
            if (number <= 0)
            {
                throw new InvalidDataException($"{source}: invalid protobuf field number {number} at byte {position}.");
            }

            switch (wireType)
            {
                case ProtoWireType.Varint:
                    message.Fields.Add(new(number, wireType, ReadVarint(data, ref position, source), []));
                    break;
                case ProtoWireType.Fixed64:
                    message.Fields.Add(new(number, wireType, 0, Take(data, ref position, 8, source)));
                    break;
                case ProtoWireType.Fixed32:
                    message.Fields.Add(new(number, wireType, 0, Take(data, ref position, 4, source)));
                    break;
                case ProtoWireType.LengthDelimited:
                    ulong length = ReadVarint(data, ref position, source);
                    if (length > int.MaxValue)
                    {
                        throw new InvalidDataException($"{source}: protobuf field {number} claims {length} bytes.");
                    }

                    message.Fields.Add(new(number, wireType, 0, Take(data, ref position, (int)length, source)));
                    break;
                default:
                    throw new InvalidDataException($"{source}: unsupported protobuf wire type {(int)wireType} for field {number} (groups are not supported).");
            }
        }

        return message;
    }

    public byte[] ToBytes()
    {
        using var stream = new MemoryStream();
        foreach (ProtoField field in Fields)
        {
            WriteVarint(stream, ((ulong)field.Number << 3) | (ulong)field.WireType);
            switch (field.WireType)
            {
                case ProtoWireType.Varint:
                    WriteVarint(stream, field.Varint);
                    break;
                case ProtoWireType.LengthDelimited:
                    WriteVarint(stream, (ulong)field.Payload.Length);
                    stream.Write(field.Payload);
                    break;
                default:
                    stream.Write(field.Payload);
                    break;
            }
        }

        return stream.ToArray();
    }

    public ProtoField? Last(int number) => Fields.LastOrDefault(f => f.Number == number);

    public long? GetInt(int number) => Last(number) is { WireType: ProtoWireType.Varint } f ? (long)f.Varint : null;

    public string? GetString(int number) => Last(number) is { WireType: ProtoWireType.LengthDelimited } f ? Encoding.UTF8.GetString(f.Payload) : null;

    public float? GetFloat(int number) => Last(number) is { WireType: ProtoWireType.Fixed32 } f ? BinaryPrimitives.ReadSingleLittleEndian(f.Payload) : null;

    /// <summary>Replaces every occurrence of <paramref name="number"/> by one varint (negative ints as 10-byte two's complement, as protobuf does).</summary>
    public void SetInt(int number, long value) => Set(new ProtoField(number, ProtoWireType.Varint, unchecked((ulong)value), []));

    public void SetFloat(int number, float value)
    {
        byte[] payload = new byte[4];
        BinaryPrimitives.WriteSingleLittleEndian(payload, value);
        Set(new ProtoField(number, ProtoWireType.Fixed32, 0, payload));
    }

    public void SetString(int number, string value) => SetBytes(number, Encoding.UTF8.GetBytes(value));

    public void SetBytes(int number, byte[] value) => Set(new ProtoField(number, ProtoWireType.LengthDelimited, 0, value));

    private void Set(ProtoField field)
    {
        int index = Fields.FindIndex(f => f.Number == field.Number);
        Fields.RemoveAll(f => f.Number == field.Number);
        if (index < 0 || index > Fields.Count)
        {
            // Keep fields in number order when adding a new one, as protobuf encoders do.
            index = Fields.FindIndex(f => f.Number > field.Number);
            if (index < 0)
            {
                index = Fields.Count;
            }
        }

        Fields.Insert(index, field);
    }

    private static byte[] Take(ReadOnlySpan<byte> data, ref int position, int count, string source)
    {
        if (position + count > data.Length)
        {
            throw new InvalidDataException($"{source}: truncated protobuf data at byte {position} (needs {count} more bytes).");
        }

        byte[] result = data.Slice(position, count).ToArray();
        position += count;
        return result;
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> data, ref int position, string source)
    {
        ulong result = 0;
        for (int shift = 0; shift < 70; shift += 7)
        {
            if (position >= data.Length)
            {
                throw new InvalidDataException($"{source}: truncated protobuf varint at byte {position}.");
            }

            byte b = data[position++];
            result |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0)
            {
                return result;
            }
        }

        throw new InvalidDataException($"{source}: malformed protobuf varint ending at byte {position}.");
    }

    private static void WriteVarint(Stream stream, ulong value)
    {
        while (value >= 0x80)
        {
            stream.WriteByte((byte)(value | 0x80));
            value >>= 7;
        }

        stream.WriteByte((byte)value);
    }
}
