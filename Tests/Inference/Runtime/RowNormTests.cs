using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Inference;

/// <summary>
/// The managed one-row RMSNorm equals LibTorch's steps in <see cref="LlamaRmsNorm"/> (run on the same row with gradients
/// on, which keeps it on LibTorch's path) within a bound derived from fp32 and bf16 rounding.
/// </summary>
public sealed class RowNormTests
{
    [Test, Combinatorial]
    public void One_row_equals_libtorch_steps(
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType dtype,
        [Values(1L, 7L, 64L, 768L, 1001L)] long width,
        [Values(1e-6, 1e-5)] double eps)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator((ulong)width);
        using var norm = new LlamaRmsNorm("norm", width, eps, dtype, CPU);
        using (torch.no_grad())
        {
            norm.Weight.copy_((torch.randn([width], generator: generator) * 0.5 + 1).to_type(dtype));
        }

        Tensor row = (torch.randn([1, 1, width], generator: generator) * 3).to_type(dtype); // [1, 1, D]
        Tensor reference; // [1, 1, D]
        using (torch.enable_grad())
        {
            Tensor tracked = row.clone().requires_grad_(true);
            Assert.That(RowNorm.Applies(tracked, norm.Weight), Is.False, "a row that needs its gradient takes LibTorch's path");
            reference = norm.forward(tracked).detach();
        }

        Tensor result;
        using (torch.no_grad())
        {
            Assert.That(RowNorm.Applies(row, norm.Weight), Is.True);
            result = norm.forward(row);
        }

        Assert.That(result.dtype, Is.EqualTo(dtype));
        Assert.That(result.shape, Is.EqualTo(row.shape));

        // fp32: the mean of squares carries D roundings, the inverse square root and the two products a few more, in
        // each implementation (D + 8 fp32 epsilons of |w x r| apart at most). bf16 adds the two roundings to bf16, each
        // of which may land one bf16 step apart when the fp32 values straddle a rounding boundary.
        double eps32 = torch.finfo(ScalarType.Float32).eps;
        double epsBf16 = dtype == ScalarType.BFloat16 ? torch.finfo(ScalarType.BFloat16).eps : 0;
        Tensor x = row.to_type(ScalarType.Float64); // [1, 1, D]
        Tensor r = (x.square().mean([-1], keepdim: true) + eps).rsqrt(); // [1, 1, 1]
        Tensor magnitude = (norm.Weight.to_type(ScalarType.Float64) * x * r).abs(); // [1, 1, D]
        Tensor bound = magnitude * ((2 * (width + 8) * eps32) + (3 * epsBf16)); // [1, 1, D]
        Tensor excess = (result.to_type(ScalarType.Float64) - reference.to_type(ScalarType.Float64)).abs() - bound;
        Assert.That(excess.max().item<double>(), Is.LessThanOrEqualTo(0.0));
    }

    [Test]
    public void Batches_other_dtypes_and_views_are_left_to_libtorch()
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        Tensor weight = torch.ones([8]);
        Assert.That(RowNorm.Applies(torch.randn([1, 1, 8]), weight), Is.True);
        Assert.That(RowNorm.Applies(torch.randn([1, 2, 8]), weight), Is.False, "two rows");
        Assert.That(RowNorm.Applies(torch.randn([1, 1, 8], ScalarType.Float64), weight.to_type(ScalarType.Float64)), Is.False, "fp64");
        Assert.That(RowNorm.Applies(torch.randn([1, 1, 8]), weight.to_type(ScalarType.BFloat16)), Is.False, "mixed dtypes");
        Assert.That(RowNorm.Applies(torch.randn([1, 1, 16]).narrow(-1, 0, 8).contiguous().unsqueeze(0), weight), Is.True, "a contiguous row");
        Assert.That(RowNorm.Applies(torch.randn([1, 1, 16])[.., .., TensorIndex.Slice(0, 16, 2)], weight), Is.False, "a strided row");
    }
}
