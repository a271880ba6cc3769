using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Modeling;

/// <summary>
/// Cosine and sine tables of rotary position embeddings for the positions
/// [<see cref="PositionOffset"/>, <see cref="PositionOffset"/> + <see cref="Length"/>), in Hugging Face's
/// <c>rotate_half</c> layout (the frequency vector repeated twice along the head dimension).
/// </summary>
public sealed class RotaryTables : IDisposable
{
    private readonly LlamaRotaryEmbedding.PositionTable? _table;
    private Tensor? _cos;
    private Tensor? _sin;

    internal RotaryTables(long positionOffset, long length, Tensor cos, Tensor sin)
    {
        PositionOffset = positionOffset;
        Length = length;
        _cos = cos;
        _sin = sin;
    }

    // One position read from a table precomputed in memory; the tensors are made only if asked for.
    internal RotaryTables(long position, LlamaRotaryEmbedding.PositionTable table)
    {
        PositionOffset = position;
        Length = 1;
        _table = table;
    }

    /// <summary>Position of the first row.</summary>
    public long PositionOffset { get; }

    /// <summary>Number of positions (rows).</summary>
    public long Length { get; }

    /// <summary>cos(position * frequency), [T, headDim], in the model dtype.</summary>
    public Tensor Cos => _cos ??= _table!.Row(PositionOffset, sine: false);

    /// <summary>sin(position * frequency), [T, headDim], in the model dtype.</summary>
    public Tensor Sin => _sin ??= _table!.Row(PositionOffset, sine: true);

    /// <summary>Rotates queries or keys [B, heads, T, headDim] by their positions: <c>x cos + rotate_half(x) sin</c>.</summary>
    public Tensor Apply(Tensor x) => Apply(x, null);

    /// <summary>
    /// As <see cref="Apply(Tensor)"/>; one position the managed kernel rotates is written into <paramref name="output"/>
    /// when given (a decoding step's buffer, see <see cref="DecodingBuffers"/>), which is then returned.
    /// </summary>
    internal Tensor Apply(Tensor x, Tensor? output)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (TryRowAddresses(x.dtype, x.size(-1), out nint cos, out nint sin) && RowRotary.AppliesTo(x, x.dtype))
        {
            // One position without gradients (a decoding step on the CPU), its tables read in place.
            unsafe
            {
                return RowRotary.Compute(x, (byte*)cos, (byte*)sin, output);
            }
        }

        if (RowRotary.Applies(x, Cos, Sin))
        {
            // One position without gradients (a decoding step on the CPU): the same roundings in managed code.
            return RowRotary.Compute(x, Cos, Sin, output);
        }

        using var scope = NewDisposeScope();
        long half = x.size(-1) / 2;
        Tensor first = x.narrow(-1, 0, half); // [B, H, T, hd/2]
        Tensor second = x.narrow(-1, half, half); // [B, H, T, hd/2]
        Tensor rotated = torch.cat([second.neg(), first], -1); // [B, H, T, hd]
        return (x * Cos + rotated * Sin).MoveToOuterDisposeScope(); // [B, H, T, hd]
    }

    /// <summary>
    /// The addresses of this position's cos and sin rows (headDim elements each, in <paramref name="dtype"/>) when they
    /// are held in memory for one position of that dtype and head size; false otherwise.
    /// </summary>
    internal bool TryRowAddresses(ScalarType dtype, long headDim, out nint cos, out nint sin)
    {
        if (_table is null || _table.DType != dtype || _table.HeadDim != headDim)
        {
            (cos, sin) = (0, 0);
            return false;
        }

        (cos, sin) = _table.RowAddresses(PositionOffset);
        return true;
    }

    /// <summary>Releases the two tables.</summary>
    public void Dispose()
    {
        _cos?.Dispose();
        _sin?.Dispose();
    }
}

/// <summary>
/// Rotary position embedding frequencies of a config, with <c>llama3</c> <c>rope_scaling</c> applied to the inverse
/// frequencies exactly as Hugging Face's <c>_compute_llama3_parameters</c>. Holds no tensors, so it follows the model to
/// any device: tables are built on the device and in the dtype asked for.
/// </summary>
public sealed class LlamaRotaryEmbedding
{
    private readonly float[] _inverseFrequencies;

    /// <summary>Computes the inverse frequencies of <paramref name="config"/>.</summary>
    public LlamaRotaryEmbedding(LlamaConfig config)
    {
        _inverseFrequencies = ComputeInverseFrequencies(config);
    }

    /// <summary>Inverse frequencies, headDim / 2 values (after any rope scaling).</summary>
    public IReadOnlyList<float> InverseFrequencies => _inverseFrequencies;

    /// <summary>
    /// <c>1 / theta^(2i / headDim)</c> for i in [0, headDim/2), then llama3 scaling when the config asks for it:
    /// wavelengths shorter than original/high_freq_factor are kept, longer than original/low_freq_factor are divided by
    /// factor, and the band between is interpolated smoothly.
    /// </summary>
    public static float[] ComputeInverseFrequencies(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        int dim = config.HeadDim;
        var result = new float[dim / 2];
        for (int i = 0; i < result.Length; i++)
        {
            double inverse = 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / dim);
            if (config.RopeScaling is { RopeType: "llama3" } scaling)
            {
                inverse = ScaleLlama3(inverse, scaling);
            }

            result[i] = (float)inverse;
        }

        return result;
    }

    private static double ScaleLlama3(double inverse, RopeScaling scaling)
    {
        double lowFreqWavelength = scaling.OriginalMaxPositionEmbeddings / scaling.LowFreqFactor;
        double highFreqWavelength = scaling.OriginalMaxPositionEmbeddings / scaling.HighFreqFactor;
        double wavelength = 2 * Math.PI / inverse;
        if (wavelength < highFreqWavelength)
        {
            return inverse;
        }

        if (wavelength > lowFreqWavelength)
        {
            return inverse / scaling.Factor;
        }

        double smooth = ((scaling.OriginalMaxPositionEmbeddings / wavelength) - scaling.LowFreqFactor)
            / (scaling.HighFreqFactor - scaling.LowFreqFactor);
        return ((1 - smooth) * inverse / scaling.Factor) + (smooth * inverse);
    }

    /// <summary>
    /// Builds the tables for positions [<paramref name="positionOffset"/>, <paramref name="positionOffset"/> +
    /// <paramref name="length"/>). Angles are computed in float32 like Hugging Face, then cast to <paramref name="dtype"/>.
    /// The tensors belong to the caller (or the current dispose scope). One fp32 or bf16 position on the CPU (a decoding
    /// step) is read from a table precomputed for this model (up to position 16,383), with the same values.
    /// </summary>
    public RotaryTables CreateTables(long positionOffset, long length, ScalarType dtype, Device device)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(positionOffset);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        if (length == 1 && positionOffset < MaxTablePositions && device.type == DeviceType.CPU
            && (dtype == ScalarType.Float32 || dtype == ScalarType.BFloat16))
        {
            return new RotaryTables(positionOffset, TableCovering(positionOffset, dtype));
        }

        (Tensor cos, Tensor sin) = Build(positionOffset, length, dtype, device);
        return new RotaryTables(positionOffset, length, cos, sin);
    }

    // The precomputed table of dtype covering `position`, grown (doubled, rebuilt from position 0) when too short.
    private PositionTable TableCovering(long position, ScalarType dtype)
    {
        ref PositionTable? slot = ref dtype == ScalarType.Float32 ? ref _singleTable : ref _bfloat16Table;
        PositionTable? table = Volatile.Read(ref slot);
        if (table is not null && position < table.Positions)
        {
            return table;
        }

        lock (_growLock)
        {
            table = slot;
            if (table is null || position >= table.Positions)
            {
                long positions = Math.Min(Math.Max(Math.Max(MinTablePositions, 2 * (table?.Positions ?? 0)), position + 1), MaxTablePositions);
                table = new PositionTable(this, positions, dtype);
                Volatile.Write(ref slot, table);
            }

            return table;
        }
    }

    private const long MinTablePositions = 256;

    // Positions a table covers at most (16 MB per table at head size 128 in fp32); later ones are built per call.
    private const long MaxTablePositions = 16384;
    private readonly Lock _growLock = new();
    private PositionTable? _singleTable;
    private PositionTable? _bfloat16Table;

    // The tables of positions [offset, offset + length) as LibTorch computes them, each [T, hd] in the caller's scope.
    internal (Tensor Cos, Tensor Sin) Build(long positionOffset, long length, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        Tensor positions = torch.arange(positionOffset, positionOffset + length, dtype: ScalarType.Float32, device: device); // [T]
        Tensor inverse = torch.tensor(_inverseFrequencies, device: device); // [hd/2]
        Tensor angles = torch.outer(positions, inverse); // [T, hd/2]
        Tensor doubled = torch.cat([angles, angles], -1); // [T, hd]
        Tensor cos = doubled.cos().to_type(dtype).MoveToOuterDisposeScope(); // [T, hd]
        Tensor sin = doubled.sin().to_type(dtype).MoveToOuterDisposeScope(); // [T, hd]
        return (cos, sin);
    }

    // As Build for positions [first, first + count) on the CPU, each row computed by LibTorch's cos and sin as a loop of
    // its own: the angles are a view of a wider tensor, so the rows cannot be merged into one run.
    private (Tensor Cos, Tensor Sin) BuildRowByRow(long first, long count, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        Tensor positions = torch.arange(first, first + count, dtype: ScalarType.Float32); // [T]
        Tensor inverse = torch.tensor(_inverseFrequencies); // [hd/2]
        Tensor angles = torch.outer(positions, inverse); // [T, hd/2]
        Tensor widened = torch.cat([angles, angles, angles.narrow(-1, 0, 1)], -1); // [T, hd + 1]
        Tensor doubled = widened.narrow(-1, 0, 2 * angles.size(-1)); // [T, hd], rows hd + 1 apart
        Tensor cos = doubled.cos().to_type(dtype).contiguous().MoveToOuterDisposeScope(); // [T, hd]
        Tensor sin = doubled.sin().to_type(dtype).contiguous().MoveToOuterDisposeScope(); // [T, hd]
        return (cos, sin);
    }

    /// <summary>
    /// cos and sin of positions [0, <see cref="Positions"/>) in one dtype, held in pinned managed memory (no tensor to
    /// dispose): one position's tables for a decoding step without building them per token.
    /// </summary>
    internal sealed unsafe class PositionTable
    {
        private readonly byte[] _cos;
        private readonly byte[] _sin;
        private readonly long _rowBytes;

        public PositionTable(LlamaRotaryEmbedding rotary, long positions, ScalarType dtype)
        {
            DType = dtype;
            HeadDim = 2L * rotary._inverseFrequencies.Length;
            Positions = positions;
            _rowBytes = HeadDim * (dtype == ScalarType.BFloat16 ? 2 : 4);
            _cos = GC.AllocateUninitializedArray<byte>(checked((int)(positions * _rowBytes)), pinned: true);
            _sin = GC.AllocateUninitializedArray<byte>(_cos.Length, pinned: true);

            // Built in blocks of positions whose rows LibTorch cannot merge into one run (a view of a wider tensor), so
            // its cos and sin loop over each row as they do over a one-position table and every element takes the same
            // lane as when one position was built, in case a build rounds a vectorised loop's tail differently (the one
            // measured did not: contiguous blocks gave the same bits too). Blocks stay under LibTorch's grain size, so
            // no row is split between threads either.
            long blockPositions = Math.Max(1, BlockElements / HeadDim);
            for (long first = 0; first < positions; first += blockPositions)
            {
                using var scope = NewDisposeScope();
                long count = Math.Min(blockPositions, positions - first);
                (Tensor cos, Tensor sin) = rotary.BuildRowByRow(first, count, dtype); // [count, hd] each, contiguous
                int bytes = (int)(count * _rowBytes), offset = (int)(first * _rowBytes);
                new ReadOnlySpan<byte>(TensorMemory.DataPointer(cos), bytes).CopyTo(_cos.AsSpan(offset));
                new ReadOnlySpan<byte>(TensorMemory.DataPointer(sin), bytes).CopyTo(_sin.AsSpan(offset));
            }
        }

        // Elements per block: half of LibTorch's grain size (32,768), under which an element-wise op runs on one thread.
        private const long BlockElements = 16384;

        public ScalarType DType { get; }

        public long HeadDim { get; }

        public long Positions { get; }

        public (nint Cos, nint Sin) RowAddresses(long position)
        {
            long offset = position * _rowBytes;
            fixed (byte* cos = _cos, sin = _sin)
            {
                // Pinned for their lifetime, so the addresses stay valid after the fixed block.
                return ((nint)(cos + offset), (nint)(sin + offset));
            }
        }

        // One position's row as a [1, hd] tensor of its own.
        public Tensor Row(long position, bool sine)
        {
            Tensor row = torch.empty([1, HeadDim], DType, CPU); // [1, hd]
            ReadOnlySpan<byte> source = (sine ? _sin : _cos).AsSpan((int)(position * _rowBytes), (int)_rowBytes);
            source.CopyTo(new Span<byte>(TensorMemory.DataPointer(row), (int)_rowBytes));
            return row;
        }
    }
}
