namespace ModelSurgery.Inference.Checkpoints;

/// <summary>One tensor entry of a safetensors header.</summary>
/// <param name="Name">Tensor name (state-dict key).</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions; empty for a scalar.</param>
/// <param name="DataBegin">First byte of the tensor, relative to the start of the data buffer (after the header).</param>
/// <param name="DataEnd">One past the last byte, relative to the start of the data buffer.</param>
public sealed record SafetensorsTensorInfo(string Name, SafetensorsDType DType, long[] Shape, long DataBegin, long DataEnd)
{
    /// <summary>Bytes the tensor occupies.</summary>
    public long ByteLength => DataEnd - DataBegin;

    /// <summary>Number of elements (1 for a scalar).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>Number of dimensions.</summary>
    public int Rank => Shape.Length;
}
