using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Inference;

/// <summary>
/// The managed one-position rotary embedding rounds as LibTorch's element-wise steps do, so it equals
/// <see cref="RotaryTables.Apply"/>'s LibTorch path (taken for the same tensor when it needs a gradient) bit for bit.
/// </summary>
public sealed class RowRotaryTests
{
    [Test, Combinatorial]
    public void One_position_equals_libtorch_bit_for_bit(
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType dtype,
        [Values(2L, 8L, 40L, 64L)] long headDim,
        [Values(0L, 1L, 37L, 4095L)] long position)
    {
        using var scope = NewDisposeScope();
        var config = new LlamaConfig
        {
            VocabSize = 16, HiddenSize = (int)headDim * 2, IntermediateSize = 8, NumHiddenLayers = 1, NumAttentionHeads = 2,
            NumKeyValueHeads = 2, MaxPositionEmbeddings = 8192,
        };
        using RotaryTables tables = new LlamaRotaryEmbedding(config).CreateTables(position, 1, dtype, CPU);
        using var generator = new Generator((ulong)(headDim + position));
        Tensor x = (torch.randn([2, 3, 1, headDim], generator: generator) * 4).to_type(dtype); // [B, H, 1, hd]

        Tensor reference; // [B, H, 1, hd]
        using (torch.enable_grad())
        {
            Tensor tracked = x.clone().requires_grad_(true);
            Assert.That(RowRotary.Applies(tracked, tables.Cos, tables.Sin), Is.False, "a tensor that needs its gradient takes LibTorch's path");
            reference = tables.Apply(tracked).detach();
        }

        Tensor result;
        using (torch.no_grad())
        {
            Assert.That(RowRotary.Applies(x, tables.Cos, tables.Sin), Is.True);
            result = tables.Apply(x);
        }

        Assert.That(result.dtype, Is.EqualTo(dtype));
        double largest = (result.to_type(ScalarType.Float64) - reference.to_type(ScalarType.Float64)).abs().max().item<double>();
        Assert.That(result.eq(reference).all().item<bool>(), Is.True, $"the same roundings give the same bits; largest difference {largest}");
    }

    [Test, Combinatorial]
    public void Precomputed_one_position_tables_equal_the_ones_built_per_position(
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType dtype,
        [Values(2L, 8L, 40L, 64L, 96L, 128L)] long headDim)
    {
        using var scope = NewDisposeScope();
        var config = new LlamaConfig
        {
            VocabSize = 16, HiddenSize = (int)headDim * 2, IntermediateSize = 8, NumHiddenLayers = 1, NumAttentionHeads = 2,
            NumKeyValueHeads = 2, MaxPositionEmbeddings = 8192,
        };
        var rotary = new LlamaRotaryEmbedding(config);

        // Every position of the first table and of two growths (256, 512, then 4,096 positions), block edges included.
        IEnumerable<long> positions = Enumerable.Range(0, 600).Select(p => (long)p).Concat([1023, 1024, 4095]);
        foreach (long position in positions)
        {
            using RotaryTables tables = rotary.CreateTables(position, 1, dtype, CPU);
            Assert.That(tables.TryRowAddresses(dtype, headDim, out _, out _), Is.True, "one CPU position reads the table");
            (Tensor cos, Tensor sin) = rotary.Build(position, 1, dtype, CPU); // [1, hd] each, as built per token before
            Assert.That(tables.Cos.eq(cos).all().item<bool>() && tables.Sin.eq(sin).all().item<bool>(), Is.True, $"position {position}");
            cos.Dispose();
            sin.Dispose();
        }

        using RotaryTables far = rotary.CreateTables(20000, 1, dtype, CPU);
        Assert.That(far.TryRowAddresses(dtype, headDim, out _, out _), Is.False, "beyond the largest table: built per call");
    }

    [Test]
    public void Several_positions_odd_widths_and_views_are_left_to_libtorch()
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        Tensor cos = torch.ones([1, 8]), sin = torch.zeros([1, 8]);
        Assert.That(RowRotary.Applies(torch.randn([1, 2, 1, 8]), cos, sin), Is.True);
        Assert.That(RowRotary.Applies(torch.randn([1, 2, 2, 8]), torch.ones([2, 8]), torch.zeros([2, 8])), Is.False, "two positions");
        Assert.That(RowRotary.Applies(torch.randn([1, 2, 1, 7]), torch.ones([1, 7]), torch.zeros([1, 7])), Is.False, "an odd head size");
        Assert.That(RowRotary.Applies(torch.randn([1, 2, 1, 8]), cos.to_type(ScalarType.BFloat16), sin), Is.False, "mixed dtypes");
        Assert.That(RowRotary.Applies(torch.randn([1, 1, 2, 8]).transpose(1, 2), cos, sin), Is.True, "a transposed size-1 dimension is still contiguous");
        Assert.That(RowRotary.Applies(torch.randn([1, 4, 1, 8])[.., TensorIndex.Slice(0, 4, 2), .., ..], cos, sin), Is.False, "every other head: strided apart");
    }
}
