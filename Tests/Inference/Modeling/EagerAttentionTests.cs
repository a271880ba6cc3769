using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Modeling;

/// <summary>
/// <see cref="EagerAttention"/> computes what LibTorch's <c>scaled_dot_product_attention</c> computes with the same mask,
/// forward and backward, and is taken exactly where its rule says.
/// </summary>
public sealed class EagerAttentionTests
{
    /// <summary>Unit roundoff of float64.</summary>
    private const double Float64Roundoff = 1.0 / (1L << 53);

    [TestCase(2, 3, 7, 7, null, Description = "causal over a whole sequence")]
    [TestCase(2, 3, 9, 9, 3, Description = "a window shorter than the sequence")]
    [TestCase(1, 2, 3, 8, null, Description = "new queries after cached keys")]
    [TestCase(1, 1, 2, 2, null, Description = "the shortest sequence it takes")]
    public void Matches_the_fused_kernel_in_float64_forward_and_backward(int batch, int heads, int queries, int keys, int? window)
    {
        const int headDim = 8;
        using var scope = NewDisposeScope();
        var generator = new Generator(11);
        Tensor q = torch.randn([batch, heads, queries, headDim], ScalarType.Float64, generator: generator).mul_(2).requires_grad_();
        Tensor k = torch.randn([batch, heads, keys, headDim], ScalarType.Float64, generator: generator).mul_(2).requires_grad_();
        Tensor v = torch.randn([batch, heads, keys, headDim], ScalarType.Float64, generator: generator).requires_grad_();
        Tensor allowed = AttentionMasks.Build(queries, keys, window, torch.CPU);
        Tensor outputGradient = torch.randn([batch, heads, queries, headDim], ScalarType.Float64, generator: generator);

        Tensor eager = EagerAttention.Compute(q, k, v, allowed);
        Tensor[] eagerGradients = torch.autograd.grad([eager], [q, k, v], [outputGradient]).ToArray();
        Tensor fused = nn.functional.scaled_dot_product_attention(q, k, v, allowed);
        Tensor[] fusedGradients = torch.autograd.grad([fused], [q, k, v], [outputGradient]).ToArray();

        // A dot product of n float64 terms is off by at most n * u * (sum of |terms|); forward and backward chain the scores
        // (hd terms), the softmax (S) and the weighted sum (S), so 2 (hd + 2S) terms bound every element here relative to
        // the largest reference value. A gradient sums up to S such chains whose terms may cancel, so it is bounded
        // relative to S times its largest value.
        double bound = 2.0 * (headDim + (2.0 * keys)) * Float64Roundoff;
        Assert.Multiple(() =>
        {
            Assert.That(MaxAbsDiff(eager, fused), Is.LessThanOrEqualTo(bound * MaxAbs(fused)), "output");
            string[] names = ["queries", "keys", "values"];
            for (int i = 0; i < 3; i++)
            {
                Assert.That(MaxAbsDiff(eagerGradients[i], fusedGradients[i]), Is.LessThanOrEqualTo(bound * MaxAbs(fusedGradients[i]) * keys), $"gradient of the {names[i]}");
            }
        });

        // Sharpness: without the mask the same inputs miss the masked attention by far more than the bound.
        Tensor unmasked = EagerAttention.Compute(q, k, v, torch.ones([queries, keys], ScalarType.Bool));
        Assert.That(MaxAbsDiff(unmasked, fused), Is.GreaterThan(1e6 * bound * MaxAbs(fused)));
    }

    [Test]
    public void Reduced_precision_takes_its_softmax_in_float32()
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(5);
        Tensor q = torch.randn([1, 2, 16, 8], ScalarType.Float64, generator: generator).mul_(3);
        Tensor k = torch.randn([1, 2, 16, 8], ScalarType.Float64, generator: generator).mul_(3);
        Tensor v = torch.randn([1, 2, 16, 8], ScalarType.Float64, generator: generator);
        Tensor allowed = AttentionMasks.Build(16, 16, null, torch.CPU);
        Tensor exact = EagerAttention.Compute(q, k, v, allowed);

        // Hugging Face's eager attention: bf16 scores, float32 softmax cast back to bf16, bf16 product with the values.
        Tensor qb = q.to(ScalarType.BFloat16), kb = k.to(ScalarType.BFloat16), vb = v.to(ScalarType.BFloat16);
        Tensor scores = qb.matmul(kb.transpose(2, 3)).mul(1.0 / Math.Sqrt(8)).masked_fill(allowed.logical_not(), double.NegativeInfinity);
        Tensor expected = scores.softmax(-1, ScalarType.Float32).to(ScalarType.BFloat16).matmul(vb);
        Tensor actual = EagerAttention.Compute(qb, kb, vb, allowed);

        Assert.That(actual.dtype, Is.EqualTo(ScalarType.BFloat16));
        Assert.That(TinyModels.AreEqual(actual, expected), Is.True, "the same operations in the same dtypes");
        Tensor softmaxInBf16 = scores.softmax(-1).matmul(vb);
        Assert.That(MaxAbsDiff(actual, exact), Is.LessThanOrEqualTo(MaxAbsDiff(softmaxInBf16, exact)), "no further from exact than a bf16 softmax");
    }

    [TestCase(ScalarType.BFloat16, DeviceType.CPU, 256, true)]
    [TestCase(ScalarType.Float16, DeviceType.CPU, 256, true)]
    [TestCase(ScalarType.BFloat16, DeviceType.CPU, EagerAttention.MaxKeys, true)]
    [TestCase(ScalarType.BFloat16, DeviceType.CPU, EagerAttention.MaxKeys + 1, false, Description = "long sequences keep the fused kernel")]
    [TestCase(ScalarType.BFloat16, DeviceType.CPU, 1, false)]
    [TestCase(ScalarType.Float32, DeviceType.CPU, 256, false, Description = "float32 steps are as fast either way")]
    [TestCase(ScalarType.BFloat16, DeviceType.CUDA, 256, false)]
    public void Applies_to_reduced_precision_training_on_the_cpu_over_short_sequences(ScalarType dtype, DeviceType device, long keys, bool applies) =>
        Assert.That(EagerAttention.AppliesInTraining(dtype, device, keys), Is.EqualTo(applies));

    private static double MaxAbsDiff(Tensor a, Tensor b) => a.to(ScalarType.Float64).sub(b.to(ScalarType.Float64)).abs().max().item<double>();

    private static double MaxAbs(Tensor a) => a.to(ScalarType.Float64).abs().max().item<double>();
}
