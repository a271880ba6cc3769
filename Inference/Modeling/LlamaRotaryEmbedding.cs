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
    internal RotaryTables(long positionOffset, long length, Tensor cos, Tensor sin)
    {
        PositionOffset = positionOffset;
        Length = length;
        Cos = cos;
        Sin = sin;
    }

    /// <summary>Position of the first row.</summary>
    public long PositionOffset { get; }

    /// <summary>Number of positions (rows).</summary>
    public long Length { get; }

    /// <summary>cos(position * frequency), [T, headDim], in the model dtype.</summary>
    public Tensor Cos { get; }

    /// <summary>sin(position * frequency), [T, headDim], in the model dtype.</summary>
    public Tensor Sin { get; }

    /// <summary>Rotates queries or keys [B, heads, T, headDim] by their positions: <c>x cos + rotate_half(x) sin</c>.</summary>
    public Tensor Apply(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (RowRotary.Applies(x, Cos, Sin))
        {
            // One position without gradients (a decoding step on the CPU): the same roundings in managed code.
            return RowRotary.Compute(x, Cos, Sin);
        }

        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        Tensor first = x.narrow(-1, 0, half); // [B, H, T, hd/2]
        Tensor second = x.narrow(-1, half, half); // [B, H, T, hd/2]
        Tensor rotated = torch.cat([second.neg(), first], -1); // [B, H, T, hd]
        return (x * Cos + rotated * Sin).MoveToOuterDisposeScope(); // [B, H, T, hd]
    }

    /// <summary>Releases the two tables.</summary>
    public void Dispose()
    {
        Cos.Dispose();
        Sin.Dispose();
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
    /// The tensors belong to the caller (or the current dispose scope).
    /// </summary>
    public RotaryTables CreateTables(long positionOffset, long length, ScalarType dtype, Device device)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(positionOffset);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        using var scope = NewDisposeScope();
        Tensor positions = torch.arange(positionOffset, positionOffset + length, dtype: ScalarType.Float32, device: device); // [T]
        Tensor inverse = torch.tensor(_inverseFrequencies, device: device); // [hd/2]
        Tensor angles = torch.outer(positions, inverse); // [T, hd/2]
        Tensor doubled = torch.cat([angles, angles], -1); // [T, hd]
        Tensor cos = doubled.cos().to_type(dtype).MoveToOuterDisposeScope(); // [T, hd]
        Tensor sin = doubled.sin().to_type(dtype).MoveToOuterDisposeScope(); // [T, hd]
        return new RotaryTables(positionOffset, length, cos, sin);
    }
}
