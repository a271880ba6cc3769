using ModelSurgery.Inference.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Checkpoints;

/// <summary>
/// The in-place finiteness check against torch's own <c>isfinite</c> on random tensors of every float dtype, with
/// NaN and infinities planted anywhere (the last element and vector tails included) and the finite extremes that must
/// not be mistaken for them.
/// </summary>
public sealed class TensorChecksTests
{
    private static readonly torch.ScalarType[] FloatTypes =
        [torch.ScalarType.Float32, torch.ScalarType.Float64, torch.ScalarType.BFloat16, torch.ScalarType.Float16];

    // Lengths around the widths of 128-, 256- and 512-bit vectors of every element size, times the 4-vector unroll.
    private static readonly int[] Lengths = [1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 4099];

    [TestCaseSource(nameof(FloatTypes))]
    public void Planted_non_finite_values_are_found_wherever_they_are(torch.ScalarType dtype)
    {
        var random = new Random(16);
        double[] planted = [double.NaN, double.PositiveInfinity, double.NegativeInfinity];
        foreach (int length in Lengths)
        {
            foreach (double bad in planted)
            {
                // The last element, the first, and a random position between them.
                foreach (int position in new[] { length - 1, 0, random.Next(length) })
                {
                    using var scope = torch.NewDisposeScope();
                    torch.Tensor values = Extremes(dtype, length, random);
                    values[position] = torch.tensor(bad, torch.ScalarType.Float64).to(dtype);

                    Assert.That(TensorChecks.IsFinite(values), Is.EqualTo(Reference(values)).And.False, $"{dtype}, {length} elements, {bad} at {position}");
                }
            }
        }
    }

    [TestCaseSource(nameof(FloatTypes))]
    public void Subnormals_zeros_and_the_largest_finite_values_are_finite(torch.ScalarType dtype)
    {
        var random = new Random(61);
        foreach (int length in Lengths)
        {
            using var scope = torch.NewDisposeScope();
            torch.Tensor values = Extremes(dtype, length, random);

            Assert.That(TensorChecks.IsFinite(values), Is.EqualTo(Reference(values)).And.True, $"{dtype}, {length} elements");
        }
    }

    [TestCaseSource(nameof(FloatTypes))]
    public void Random_tensors_agree_with_torch(torch.ScalarType dtype)
    {
        var random = new Random(7);
        for (int trial = 0; trial < 200; trial++)
        {
            using var scope = torch.NewDisposeScope();
            int length = random.Next(1, 3000);
            torch.Tensor values = Extremes(dtype, length, random);
            int planted = random.Next(3); // 0, 1 or 2 bad values; a third of the tensors stay finite
            for (int p = 0; p < planted; p++)
            {
                double bad = random.Next(3) switch { 0 => double.NaN, 1 => double.PositiveInfinity, _ => double.NegativeInfinity };
                values[random.Next(length)] = torch.tensor(bad, torch.ScalarType.Float64).to(dtype);
            }

            Assert.That(TensorChecks.IsFinite(values), Is.EqualTo(Reference(values)), $"{dtype}, trial {trial}");
        }
    }

    [TestCaseSource(nameof(FloatTypes))]
    public void Views_with_an_offset_and_non_contiguous_views_check_only_their_own_elements(torch.ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        torch.Tensor matrix = torch.randn(37, 29, torch.ScalarType.Float64).to(dtype);
        matrix[0, 0] = torch.tensor(double.NaN, torch.ScalarType.Float64).to(dtype);
        matrix[36, 28] = torch.tensor(double.PositiveInfinity, torch.ScalarType.Float64).to(dtype);

        torch.Tensor inner = matrix.narrow(0, 1, 35); // contiguous, starts one row in
        torch.Tensor column = matrix.select(1, 3); // strided: the fallback
        torch.Tensor transposed = matrix.t(); // not contiguous, holds both bad values

        Assert.That(inner.is_contiguous() && inner.storage_offset() > 0, Is.True);
        Assert.That(TensorChecks.IsFinite(inner), Is.True);
        Assert.That(TensorChecks.IsFinite(column), Is.True);
        Assert.That(TensorChecks.IsFinite(transposed), Is.False);
        Assert.That(TensorChecks.IsFinite(matrix.narrow(0, 1, 36)), Is.False, "the infinity in the last element of a view");
    }

    [TestCase(SafetensorsDType.BOOL)]
    [TestCase(SafetensorsDType.U8)]
    [TestCase(SafetensorsDType.I16)]
    [TestCase(SafetensorsDType.I32)]
    [TestCase(SafetensorsDType.U64)]
    public void Raw_integer_values_are_finite_whatever_their_bits(SafetensorsDType dtype)
    {
        // Every byte 0xFF: NaN in every float dtype of any width.
        byte[] allOnes = Enumerable.Repeat((byte)0xFF, 64).ToArray();

        Assert.That(TensorChecks.ChecksRawBytes(dtype), Is.True);
        Assert.That(TensorChecks.IsFinite(dtype, allOnes), Is.True);
        Assert.That(TensorChecks.IsFinite(SafetensorsDType.F32, allOnes), Is.False, "the same bytes as floats");
    }

    [TestCase(SafetensorsDType.F8_E4M3)]
    [TestCase(SafetensorsDType.F8_E5M2)]
    public void Raw_8_bit_floats_are_not_checked(SafetensorsDType dtype)
    {
        Assert.That(TensorChecks.ChecksRawBytes(dtype), Is.False);
        Assert.That(() => TensorChecks.IsFinite(dtype, new byte[4]), Throws.TypeOf<NotSupportedException>());
    }

    [Test]
    public void Integer_and_empty_tensors_are_finite()
    {
        using var scope = torch.NewDisposeScope();
        Assert.That(TensorChecks.IsFinite(torch.tensor(new long[] { long.MaxValue, -1 })), Is.True);
        Assert.That(TensorChecks.IsFinite(torch.empty(0, torch.ScalarType.Float32)), Is.True);
    }

    /// <summary>Random normal values of every magnitude, with zeros, subnormals and the largest finite values mixed in.</summary>
    private static torch.Tensor Extremes(torch.ScalarType dtype, int length, Random random)
    {
        var info = torch.finfo(dtype);
        double[] special = [0.0, -0.0, info.max, -info.max, info.tiny, -info.tiny, info.tiny / 2, -info.tiny / 4];
        torch.Tensor values = torch.randn(length, torch.ScalarType.Float64) * Math.Pow(10, random.Next(-3, 4));
        for (int s = 0; s < Math.Min(length, 6); s++)
        {
            values[random.Next(length)] = torch.tensor(special[random.Next(special.Length)], torch.ScalarType.Float64);
        }

        return values.to(dtype);
    }

    private static bool Reference(torch.Tensor values) => torch.isfinite(values).all().item<bool>();
}
