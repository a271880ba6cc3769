using System.Diagnostics.CodeAnalysis;
using TorchSharp;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>Element types of the safetensors format, named as in the <c>dtype</c> field of a header.</summary>
/// <remarks>
/// Every byte-sized type of the format is listed, so any well-formed file opens; the ones without a TorchSharp counterpart
/// (<see cref="U16"/>, <see cref="U32"/>, <see cref="U64"/>, <see cref="F8_E4M3"/>, <see cref="F8_E5M2"/>) can be read as
/// raw bytes only.
/// </remarks>
[SuppressMessage("Naming", "CA1707:Identifiers should not contain underscores", Justification = "Names follow the safetensors dtype strings.")]
[SuppressMessage("Naming", "CA1720:Identifier contains type name", Justification = "Names follow the safetensors dtype strings.")]
public enum SafetensorsDType
{
    /// <summary>Boolean, one byte.</summary>
    BOOL,

    /// <summary>Unsigned 8-bit integer.</summary>
    U8,

    /// <summary>Signed 8-bit integer.</summary>
    I8,

    /// <summary>Signed 16-bit integer.</summary>
    I16,

    /// <summary>Unsigned 16-bit integer (raw bytes only).</summary>
    U16,

    /// <summary>Signed 32-bit integer.</summary>
    I32,

    /// <summary>Unsigned 32-bit integer (raw bytes only).</summary>
    U32,

    /// <summary>Signed 64-bit integer.</summary>
    I64,

    /// <summary>Unsigned 64-bit integer (raw bytes only).</summary>
    U64,

    /// <summary>IEEE half precision.</summary>
    F16,

    /// <summary>bfloat16.</summary>
    BF16,

    /// <summary>IEEE single precision.</summary>
    F32,

    /// <summary>IEEE double precision.</summary>
    F64,

    /// <summary>8-bit float, 4 exponent and 3 mantissa bits (raw bytes only).</summary>
    F8_E4M3,

    /// <summary>8-bit float, 5 exponent and 2 mantissa bits (raw bytes only).</summary>
    F8_E5M2,
}

/// <summary>Conversions between <see cref="SafetensorsDType"/>, header strings and TorchSharp scalar types.</summary>
public static class SafetensorsDTypes
{
    /// <summary>Parses a header <c>dtype</c> string (exact, case-sensitive, as the format requires).</summary>
    /// <returns>False for a string that names no supported type.</returns>
    public static bool TryParse(string? text, out SafetensorsDType dtype)
    {
        switch (text)
        {
            case "BOOL": dtype = SafetensorsDType.BOOL; return true;
            case "U8": dtype = SafetensorsDType.U8; return true;
            case "I8": dtype = SafetensorsDType.I8; return true;
            case "I16": dtype = SafetensorsDType.I16; return true;
            case "U16": dtype = SafetensorsDType.U16; return true;
            case "I32": dtype = SafetensorsDType.I32; return true;
            case "U32": dtype = SafetensorsDType.U32; return true;
            case "I64": dtype = SafetensorsDType.I64; return true;
            case "U64": dtype = SafetensorsDType.U64; return true;
            case "F16": dtype = SafetensorsDType.F16; return true;
            case "BF16": dtype = SafetensorsDType.BF16; return true;
            case "F32": dtype = SafetensorsDType.F32; return true;
            case "F64": dtype = SafetensorsDType.F64; return true;
            case "F8_E4M3": dtype = SafetensorsDType.F8_E4M3; return true;
            case "F8_E5M2": dtype = SafetensorsDType.F8_E5M2; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>Parses a dtype given by a user (case-insensitive), e.g. for a command-line option.</summary>
    /// <exception cref="ArgumentException">The text names no supported type.</exception>
    public static SafetensorsDType Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (TryParse(text.Trim().ToUpperInvariant(), out var dtype))
        {
            return dtype;
        }

        throw new ArgumentException(
            $"Unknown safetensors dtype '{text}': use one of {string.Join(", ", Enum.GetValues<SafetensorsDType>().Select(ToHeaderString))}.",
            nameof(text));
    }

    /// <summary>The string written in a header's <c>dtype</c> field.</summary>
    public static string ToHeaderString(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.BOOL => "BOOL",
        SafetensorsDType.U8 => "U8",
        SafetensorsDType.I8 => "I8",
        SafetensorsDType.I16 => "I16",
        SafetensorsDType.U16 => "U16",
        SafetensorsDType.I32 => "I32",
        SafetensorsDType.U32 => "U32",
        SafetensorsDType.I64 => "I64",
        SafetensorsDType.U64 => "U64",
        SafetensorsDType.F16 => "F16",
        SafetensorsDType.BF16 => "BF16",
        SafetensorsDType.F32 => "F32",
        SafetensorsDType.F64 => "F64",
        SafetensorsDType.F8_E4M3 => "F8_E4M3",
        SafetensorsDType.F8_E5M2 => "F8_E5M2",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Not a safetensors dtype."),
    };

    /// <summary>Bytes per element.</summary>
    public static int ElementSize(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.BOOL or SafetensorsDType.U8 or SafetensorsDType.I8
            or SafetensorsDType.F8_E4M3 or SafetensorsDType.F8_E5M2 => 1,
        SafetensorsDType.I16 or SafetensorsDType.U16 or SafetensorsDType.F16 or SafetensorsDType.BF16 => 2,
        SafetensorsDType.I32 or SafetensorsDType.U32 or SafetensorsDType.F32 => 4,
        SafetensorsDType.I64 or SafetensorsDType.U64 or SafetensorsDType.F64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Not a safetensors dtype."),
    };

    /// <summary>The TorchSharp type with the same bytes, if TorchSharp has one.</summary>
    public static bool TryToScalarType(this SafetensorsDType dtype, out torch.ScalarType scalarType)
    {
        torch.ScalarType? result = dtype switch
        {
            SafetensorsDType.BOOL => torch.ScalarType.Bool,
            SafetensorsDType.U8 => torch.ScalarType.Byte,
            SafetensorsDType.I8 => torch.ScalarType.Int8,
            SafetensorsDType.I16 => torch.ScalarType.Int16,
            SafetensorsDType.I32 => torch.ScalarType.Int32,
            SafetensorsDType.I64 => torch.ScalarType.Int64,
            SafetensorsDType.F16 => torch.ScalarType.Float16,
            SafetensorsDType.BF16 => torch.ScalarType.BFloat16,
            SafetensorsDType.F32 => torch.ScalarType.Float32,
            SafetensorsDType.F64 => torch.ScalarType.Float64,
            _ => null,
        };
        scalarType = result.GetValueOrDefault();
        return result.HasValue;
    }

    /// <summary>The TorchSharp type with the same bytes.</summary>
    /// <exception cref="NotSupportedException">TorchSharp has no such type (U16, U32, U64, F8_*).</exception>
    public static torch.ScalarType ToScalarType(this SafetensorsDType dtype) =>
        dtype.TryToScalarType(out var scalarType)
            ? scalarType
            : throw new NotSupportedException($"safetensors dtype {dtype.ToHeaderString()} has no TorchSharp counterpart; read it as raw bytes.");

    /// <summary>The safetensors type of a TorchSharp type.</summary>
    /// <exception cref="NotSupportedException">The type cannot be stored in safetensors here (complex and quantized types).</exception>
    public static SafetensorsDType FromScalarType(torch.ScalarType scalarType) => scalarType switch
    {
        torch.ScalarType.Bool => SafetensorsDType.BOOL,
        torch.ScalarType.Byte => SafetensorsDType.U8,
        torch.ScalarType.Int8 => SafetensorsDType.I8,
        torch.ScalarType.Int16 => SafetensorsDType.I16,
        torch.ScalarType.Int32 => SafetensorsDType.I32,
        torch.ScalarType.Int64 => SafetensorsDType.I64,
        torch.ScalarType.Float16 => SafetensorsDType.F16,
        torch.ScalarType.BFloat16 => SafetensorsDType.BF16,
        torch.ScalarType.Float32 => SafetensorsDType.F32,
        torch.ScalarType.Float64 => SafetensorsDType.F64,
        _ => throw new NotSupportedException($"TorchSharp type {scalarType} cannot be stored in a safetensors checkpoint."),
    };
}
