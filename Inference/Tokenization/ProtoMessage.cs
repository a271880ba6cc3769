using System.Buffers.Binary;
using System.Text;
using Google.Protobuf;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>Protocol buffer wire types (the ones proto2 files still use); the values are the wire format's own.</summary>
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
/// byte for byte. The wire format is read and written by Google.Protobuf's coded streams; this type only keeps the
/// field list (no generated classes: SentencePiece's schema is a handful of fields, and unknown ones must survive).
/// </summary>
internal sealed class ProtoMessage
{
    public List<ProtoField> Fields { get; } = [];

    /// <summary>Reads every field of one message.</summary>
    /// <exception cref="InvalidDataException">The bytes are not a well-formed protobuf message; the message names <paramref name="source"/>.</exception>
    public static ProtoMessage Parse(ReadOnlySpan<byte> data, string source)
    {
        var message = new ProtoMessage();
        var input = new CodedInputStream(data.ToArray());
        try
        {
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                int number = WireFormat.GetTagFieldNumber(tag);
                WireFormat.WireType wireType = WireFormat.GetTagWireType(tag);
                switch (wireType)
                {
                    case WireFormat.WireType.Varint:
                        message.Fields.Add(new(number, ProtoWireType.Varint, input.ReadUInt64(), []));
                        break;
                    case WireFormat.WireType.Fixed64:
                        byte[] fixed64 = new byte[8];
                        BinaryPrimitives.WriteUInt64LittleEndian(fixed64, input.ReadFixed64());
                        message.Fields.Add(new(number, ProtoWireType.Fixed64, 0, fixed64));
                        break;
                    case WireFormat.WireType.Fixed32:
                        byte[] fixed32 = new byte[4];
                        BinaryPrimitives.WriteUInt32LittleEndian(fixed32, input.ReadFixed32());
                        message.Fields.Add(new(number, ProtoWireType.Fixed32, 0, fixed32));
                        break;
                    case WireFormat.WireType.LengthDelimited:
                        message.Fields.Add(new(number, ProtoWireType.LengthDelimited, 0, input.ReadBytes().ToByteArray()));
                        break;
                    default:
                        throw new InvalidDataException($"{source}: unsupported protobuf wire type {(int)wireType} for field {number} at byte {input.Position} (groups are not supported).");
                }
            }
        }
        catch (InvalidProtocolBufferException ex)
        {
            // Google.Protobuf's message says what is wrong (truncated, malformed varint, invalid tag) but not where or in which file.
            throw new InvalidDataException($"{source}: malformed protobuf data at byte {input.Position}: {ex.Message}", ex);
        }

        return message;
    }

    public byte[] ToBytes()
    {
        using var stream = new MemoryStream();
        var output = new CodedOutputStream(stream, leaveOpen: true);
        foreach (ProtoField field in Fields)
        {
            switch (field.WireType)
            {
                case ProtoWireType.Varint:
                    output.WriteTag(field.Number, WireFormat.WireType.Varint);
                    output.WriteUInt64(field.Varint);
                    break;
                case ProtoWireType.Fixed64:
                    output.WriteTag(field.Number, WireFormat.WireType.Fixed64);
                    output.WriteFixed64(BinaryPrimitives.ReadUInt64LittleEndian(field.Payload));
                    break;
                case ProtoWireType.Fixed32:
                    output.WriteTag(field.Number, WireFormat.WireType.Fixed32);
                    output.WriteFixed32(BinaryPrimitives.ReadUInt32LittleEndian(field.Payload));
                    break;
                default:
                    output.WriteTag(field.Number, WireFormat.WireType.LengthDelimited);
                    output.WriteBytes(ByteString.CopyFrom(field.Payload));
                    break;
            }
        }

        output.Flush();
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
}
