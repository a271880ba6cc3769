using System.Runtime.InteropServices;
using ModelSurgery.Inference.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Inference;

/// <summary>
/// The managed one-row projection behind <see cref="CpuLinear"/>: equal to <c>nn.functional.linear</c> within the
/// rounding of two fp32 reductions (and the bf16 rounding of the result), for sizes that are not multiples of the
/// vector width, with and without bias, on 1 to 3 threads; everything it does not handle takes LibTorch's path.
/// </summary>
[NonParallelizable]
public sealed class RowProjectionTests
{
    private static (Tensor Input, Tensor Weight, Tensor Bias) Operands(long inFeatures, long outFeatures, ScalarType dtype, int seed)
    {
        using var generator = new Generator((ulong)seed);
        Tensor input = torch.randn([1, 1, inFeatures], generator: generator).to_type(dtype); // [1, 1, in]
        Tensor weight = (torch.randn([outFeatures, inFeatures], generator: generator) * 0.05).to_type(dtype); // [out, in]
        Tensor bias = torch.randn([outFeatures], generator: generator).to_type(dtype); // [out]
        return (input, weight, bias);
    }

    // Each path sums in + 1 terms (the bias last) in fp32: at most (in + 1) eps32 of sum |x w| + |b| away from the exact
    // value, then rounds to the output dtype: half an ulp of that dtype, relative to the same magnitude. Two correct
    // paths differ by at most twice that.
    private static double Excess(Tensor result, Tensor plain, Tensor input, Tensor weight, Tensor? bias)
    {
        long inFeatures = weight.shape[1];
        Tensor magnitude = input.to_type(ScalarType.Float64).abs().matmul(weight.to_type(ScalarType.Float64).abs().t()); // [..., out]
        if (bias is not null)
        {
            magnitude += bias.to_type(ScalarType.Float64).abs();
        }

        double outputRounding = result.dtype == ScalarType.BFloat16 ? torch.finfo(ScalarType.BFloat16).eps / 2 : 0;
        double perUnit = 2 * (outputRounding + ((inFeatures + 1) * torch.finfo(ScalarType.Float32).eps));
        Tensor excess = (result.to_type(ScalarType.Float64) - plain.to_type(ScalarType.Float64)).abs() - (magnitude * perUnit); // [..., out]
        return excess.max().item<double>();
    }

    [Test, Combinatorial]
    public void The_kernel_equals_linear_within_two_fp32_reductions(
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType dtype,
        [Values(7L, 64L, 781L, 813L)] long inFeatures,
        [Values(1L, 3L, 1000L)] long outFeatures,
        [Values] bool withBias,
        [Values(1, 2, 3)] int threads)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var (input, weight, bias) = Operands(inFeatures, outFeatures, dtype, seed: (int)(inFeatures * 31 + outFeatures));
        Tensor? b = withBias ? bias : null;
        Assert.That(RowProjection.Applies(input, weight, b), Is.True);

        Tensor result = RowProjection.Compute(input, weight, b, threads); // [1, 1, out]
        Tensor plain = nn.functional.linear(input, weight, b); // [1, 1, out]
        Assert.That(result.dtype, Is.EqualTo(plain.dtype));
        Assert.That(result.shape, Is.EqualTo(plain.shape));
        Assert.That(Excess(result, plain, input, weight, b), Is.LessThanOrEqualTo(0.0));
    }

    [TestCase(1)]
    [TestCase(2)]
    public void CpuLinear_takes_the_kernel_on_torchs_thread_count_for_one_row(int threads)
    {
        int saved = torch.get_num_threads();
        torch.set_num_threads(threads);
        try
        {
            using var scope = NewDisposeScope();
            using var noGrad = torch.no_grad();
            foreach (ScalarType dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            {
                var (input, weight, bias) = Operands(781, 1000, dtype, seed: 17);
                Tensor flat = input.reshape(781); // [in]: a 1-D input gives [out], as linear does
                Assert.That(CpuLinear.Linear(flat, weight, bias).shape, Is.EqualTo(new long[] { 1000 }));
                Tensor result = CpuLinear.Linear(input, weight, bias); // [1, 1, out]
                Tensor expected = RowProjection.Compute(input, weight, bias, threads); // [1, 1, out]
                Assert.That(result.eq(expected).all().item<bool>(), Is.True, "the same kernel, the same split");
                Assert.That(Excess(result, nn.functional.linear(input, weight, bias), input, weight, bias), Is.LessThanOrEqualTo(0.0));
            }
        }
        finally
        {
            torch.set_num_threads(saved);
        }
    }

    [Test]
    public void The_split_across_threads_does_not_change_a_row()
    {
        // Each output row is one reduction in a fixed order, whichever thread computes it.
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        foreach (ScalarType dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var (input, weight, bias) = Operands(781, 1000, dtype, seed: 19);
            Tensor one = RowProjection.Compute(input, weight, bias, threads: 1);
            Tensor three = RowProjection.Compute(input, weight, bias, threads: 3);
            Assert.That(one.eq(three).all().item<bool>(), Is.True);
        }
    }

    [Test, Combinatorial]
    public void Several_products_in_one_region_equal_the_separate_products_bit_for_bit(
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType dtype,
        [Values(7L, 781L)] long inFeatures,
        [Values] bool withBias,
        [Values(1, 2)] int threads)
    {
        // Row counts that are not multiples of the kernel's 4-row block, so task ranges straddle two products.
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        long[] outFeatures = [130, 3, 67];
        var projections = new (Tensor Weight, Tensor? Bias)[outFeatures.Length];
        Tensor input = Operands(inFeatures, 1, dtype, seed: 41).Input; // [1, 1, in]
        for (int i = 0; i < outFeatures.Length; i++)
        {
            var (_, weight, bias) = Operands(inFeatures, outFeatures[i], dtype, seed: 43 + i);
            projections[i] = (weight, withBias ? bias : null);
        }

        Tensor[] together = RowProjection.ComputeMany(input, projections, threads);
        for (int i = 0; i < outFeatures.Length; i++)
        {
            Tensor alone = RowProjection.Compute(input, projections[i].Weight, projections[i].Bias, threads); // [1, 1, out_i]
            Assert.That(together[i].shape, Is.EqualTo(alone.shape));
            Assert.That(together[i].eq(alone).all().item<bool>(), Is.True, $"product {i}");
        }
    }

    [Test, Combinatorial]
    public void The_residual_epilogue_equals_adding_the_rounded_product_bit_for_bit(
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType dtype,
        [Values(7L, 781L)] long inFeatures,
        [Values(3L, 1000L)] long outFeatures,
        [Values] bool withBias,
        [Values(1, 2)] int threads)
    {
        // LibTorch adds the rounded projection to the residual in fp32 and rounds once more: the kernel does the same.
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var (input, weight, bias) = Operands(inFeatures, outFeatures, dtype, seed: 47);
        Tensor? b = withBias ? bias : null;
        Tensor residual = (torch.randn([1, 1, outFeatures], generator: new Generator(53)) * 4).to_type(dtype); // [1, 1, out]
        Assert.That(RowProjection.ResidualApplies(residual, input, weight), Is.True);
        Tensor fused = RowProjection.Compute(input, weight, b, residual, threads); // [1, 1, out]
        Tensor separate = residual + RowProjection.Compute(input, weight, b, threads); // [1, 1, out]
        Assert.That(fused.eq(separate).all().item<bool>(), Is.True);
        Assert.That(RowProjection.ResidualApplies(residual.to_type(ScalarType.Float64), input, weight), Is.False, "another dtype");
        Assert.That(RowProjection.ResidualApplies(residual.narrow(-1, 0, outFeatures - 1), input, weight), Is.False, "another width");
    }

    [Test, Combinatorial]
    public void Products_written_into_given_tensors_equal_the_products_they_allocate_bit_for_bit(
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType dtype,
        [Values(1, 2)] int threads)
    {
        // A decoding step's buffers: the plain product, the residual added in place into the residual itself, the fused
        // q/k/v and SwiGLU products, and the head's fp32 logits of bf16 weights (the rounded bf16 values widened).
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var (input, weight, bias) = Operands(781, 1000, dtype, seed: 67);
        var (_, second, _) = Operands(781, 1000, dtype, seed: 71);
        Tensor Target(long width, ScalarType type) => torch.full([1, 1, width], float.NaN).to_type(type); // [1, 1, width]

        Tensor plain = Target(1000, dtype);
        Assert.That(ReferenceEquals(RowProjection.Compute(input, weight, bias, null, threads, plain), plain), Is.True);
        Assert.That(plain.eq(RowProjection.Compute(input, weight, bias, threads)).all().item<bool>(), Is.True, "plain");

        Tensor residual = (torch.randn([1, 1, 1000], generator: new Generator(73)) * 4).to_type(dtype); // [1, 1, out]
        Tensor expected = RowProjection.Compute(input, weight, bias, residual, threads); // [1, 1, out]
        RowProjection.Compute(input, weight, bias, residual, threads, residual);
        Assert.That(residual.eq(expected).all().item<bool>(), Is.True, "residual added in place");

        Tensor widened = Target(1000, ScalarType.Float32);
        RowProjection.Compute(input, weight, null, null, threads, widened);
        Assert.That(widened.eq(RowProjection.Compute(input, weight, null, threads).to_type(ScalarType.Float32)).all().item<bool>(), Is.True, "fp32 logits");

        Tensor[] into = [Target(1000, dtype), Target(1000, dtype)];
        Tensor[] many = RowProjection.ComputeMany(input, [(weight, bias), (second, null)], threads, into);
        Assert.That(ReferenceEquals(many, into), Is.True);
        Assert.That(into[0].eq(RowProjection.Compute(input, weight, bias, threads)).all().item<bool>() && into[1].eq(RowProjection.Compute(input, second, null, threads)).all().item<bool>(), Is.True, "q/k/v");

        Tensor activation = Target(1000, dtype);
        RowProjection.ComputeSwiGlu(input, weight, bias, second, null, threads, activation);
        Assert.That(activation.eq(RowProjection.ComputeSwiGlu(input, weight, bias, second, null, threads)).all().item<bool>(), Is.True, "SwiGLU");
    }

    [Test, Combinatorial]
    public void SwiGlu_in_one_region_equals_silu_times_up_within_one_rounding_of_silu(
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType dtype,
        [Values(7L, 781L)] long inFeatures,
        [Values(5L, 1027L)] long hidden,
        [Values] bool withBias,
        [Values(1, 2)] int threads)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var (input, gate, gateBias) = Operands(inFeatures, hidden, dtype, seed: 59);
        var (_, up, upBias) = Operands(inFeatures, hidden, dtype, seed: 61);
        Tensor? gb = withBias ? gateBias : null, ub = withBias ? upBias : null;
        Tensor fused = RowProjection.ComputeSwiGlu(input, gate, gb, up, ub, threads); // [1, 1, F]
        Tensor plain = nn.functional.silu(RowProjection.Compute(input, gate, gb, threads)) * RowProjection.Compute(input, up, ub, threads); // [1, 1, F]
        Assert.That(fused.shape, Is.EqualTo(plain.shape));
        Assert.That(fused.dtype, Is.EqualTo(dtype));

        // The projections are the same; only silu's exponential may differ, by at most an fp32 ulp or two on either side
        // (about 3 eps32 relative in silu after the division), then the product rounds. In fp32 that leaves 4 eps32 of
        // the product; in bf16 the rounded silu can move by one bf16 ulp (eps_bf16 relative), and the product's rounding
        // adds half an ulp on each side: 2 eps_bf16 of the product.
        double eps = dtype == ScalarType.BFloat16 ? 2 * torch.finfo(ScalarType.BFloat16).eps : 4 * torch.finfo(ScalarType.Float32).eps;
        Tensor ours = fused.to_type(ScalarType.Float64), theirs = plain.to_type(ScalarType.Float64); // [1, 1, F]
        Tensor excess = (ours - theirs).abs() - (torch.maximum(ours.abs(), theirs.abs()) * eps); // [1, 1, F]
        Assert.That(excess.max().item<double>(), Is.LessThanOrEqualTo(0.0));
    }

    [Test]
    public void Non_contiguous_multi_row_mixed_and_gradient_inputs_take_the_plain_path_bit_for_bit()
    {
        using var scope = NewDisposeScope();
        foreach (ScalarType dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var (input, weight, bias) = Operands(96, 40, dtype, seed: 23);
            Tensor transposedWeight = weight.t().contiguous().t(); // [out, in], column-major
            Tensor strided = torch.cat([input, input], -1)[.., .., TensorIndex.Slice(null, null, 2)]; // [1, 1, in], stride 2
            Tensor twoRows = torch.cat([input, input], 1); // [1, 2, in]
            Tensor otherBias = bias.to_type(dtype == ScalarType.Float32 ? ScalarType.BFloat16 : ScalarType.Float32); // [out]
            var cases = new (string Name, Tensor Input, Tensor Weight, Tensor? Bias)[]
            {
                ("non-contiguous weight", input, transposedWeight, bias),
                ("non-contiguous input", strided, weight, null),
                ("two rows", twoRows, weight, bias),
            };
            using (torch.no_grad())
            {
                foreach (var (name, x, w, b) in cases)
                {
                    Assert.That(RowProjection.Applies(x, w, b), Is.False, name);
                    Assert.That(CpuLinear.Linear(x, w, b).eq(nn.functional.linear(x, w, b)).all().item<bool>(), Is.True, name);
                }

                Assert.That(RowProjection.Applies(input, weight, otherBias), Is.False, "a bias of another dtype");
                Assert.That(RowProjection.Applies(input.to_type(ScalarType.Float64), weight, null), Is.False, "an input of another dtype");
            }

            // With autograd on and a weight that needs its gradient, LibTorch's path records the graph.
            Tensor trained = weight.clone().requires_grad_(true); // [out, in]
            Assert.That(RowProjection.Applies(input, trained, bias), Is.False);
            Tensor y = CpuLinear.Linear(input, trained, bias); // [1, 1, out]
            Assert.That(y.requires_grad, Is.True);
            Assert.That(y.eq(nn.functional.linear(input, trained, bias)).all().item<bool>(), Is.True);
        }
    }

    [Test]
    public void Float_to_bf16_rounds_to_nearest_even_as_torch()
    {
        // Random bit patterns, with every fourth one an exact tie (low half 0x8000), and the edges.
        var random = new Random(29);
        var bits = new List<uint> { 0x7F7F_FFFFu, 0xFF7F_FFFFu, 0x7F80_0000u, 0x0000_8000u, 0x0001_8000u, 0x3F80_8000u, 0x3F81_8000u, 0 };
        for (int i = 0; i < 4000; i++)
        {
            uint value = (uint)random.NextInt64(0, 1L << 32);
            bits.Add(i % 4 == 0 ? (value & 0xFFFF_0000u) | 0x8000u : value);
        }

        float[] values = [.. bits.Select(BitConverter.UInt32BitsToSingle).Where(v => !float.IsNaN(v))];
        using var scope = NewDisposeScope();
        Tensor rounded = torch.tensor(values).to_type(ScalarType.BFloat16); // [n]
        ushort[] expected = MemoryMarshal.Cast<byte, ushort>(rounded.bytes).ToArray();
        for (int i = 0; i < values.Length; i++)
        {
            Assert.That(RowProjection.SingleToBFloat16(values[i]), Is.EqualTo(expected[i]), $"0x{BitConverter.SingleToUInt32Bits(values[i]):X8}");
        }

        Assert.That(float.IsNaN(RowProjection.BFloat16ToSingle(RowProjection.SingleToBFloat16(float.NaN))), Is.True);
    }
}
