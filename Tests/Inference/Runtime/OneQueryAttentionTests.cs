using ModelSurgery.Inference.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Inference;

/// <summary>
/// The managed attention of one query over a cache equals LibTorch's <c>scaled_dot_product_attention</c> with the
/// grouped key/value heads repeated, within a bound derived from fp32 (and bf16) rounding; it reads cache views in place.
/// </summary>
[NonParallelizable]
public sealed class OneQueryAttentionTests
{
    [Test, Combinatorial]
    public void One_query_equals_sdpa_over_repeated_heads(
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType dtype,
        [Values(8L, 40L, 64L)] long headDim,
        [Values(1L, 2L, 3L)] long group,
        [Values(1L, 37L)] long length)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        const long Batch = 2, KvHeads = 2, Capacity = 50;
        long heads = KvHeads * group;
        using var generator = new Generator((ulong)(headDim * 100 + group * 10 + length));
        Tensor queries = torch.randn([Batch, heads, 1, headDim], generator: generator).to_type(dtype); // [B, H, 1, hd]
        // As the KV cache hands them out: the first S positions of larger buffers.
        Tensor keyBuffer = (torch.randn([Batch, KvHeads, Capacity, headDim], generator: generator) * 2).to_type(dtype); // [B, KV, C, hd]
        Tensor valueBuffer = torch.randn([Batch, KvHeads, Capacity, headDim], generator: generator).to_type(dtype); // [B, KV, C, hd]
        Tensor keys = keyBuffer.narrow(2, 0, length); // [B, KV, S, hd]
        Tensor values = valueBuffer.narrow(2, 0, length); // [B, KV, S, hd]
        Assert.That(OneQueryAttention.Applies(queries, keys, values), Is.True);

        Tensor result = OneQueryAttention.Compute(queries, keys, values); // [B, H, 1, hd]
        Tensor reference = nn.functional.scaled_dot_product_attention(
            queries, keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)); // [B, H, 1, hd]
        Assert.That(result.dtype, Is.EqualTo(dtype));
        Assert.That(result.shape, Is.EqualTo(reference.shape));

        // Scores: hd + 1 roundings of sum |q k| / sqrt(hd) in fp32 (delta); a score off by delta moves its weight by a
        // factor within e^(+-delta), so the weighted mean of values moves by at most about 2 delta max |v|; the softmax sum
        // and the weighted sum add S + 2 roundings of max |v|. Two implementations differ by twice that. In bf16 the
        // reference may also round the weights to bf16 before the product (eps_bf16 / 2 each) and both round the result.
        double eps32 = torch.finfo(ScalarType.Float32).eps;
        Tensor q64 = queries.to_type(ScalarType.Float64).abs(); // [B, H, 1, hd]
        Tensor k64 = keys.repeat_interleave(group, 1).to_type(ScalarType.Float64).abs(); // [B, H, S, hd]
        Tensor delta = q64.matmul(k64.transpose(2, 3)).amax([-1], keepdim: true) * ((headDim + 1) * eps32 / Math.Sqrt(headDim)); // [B, H, 1, 1]
        Tensor maxValue = values.repeat_interleave(group, 1).to_type(ScalarType.Float64).abs().amax([2], keepdim: true); // [B, H, 1, hd]
        double bf16Terms = dtype == ScalarType.BFloat16 ? 2 * torch.finfo(ScalarType.BFloat16).eps : 0;
        Tensor bound = maxValue * ((2 * ((2 * delta) + ((length + 2) * eps32))) + bf16Terms); // [B, H, 1, hd]
        Tensor excess = (result.to_type(ScalarType.Float64) - reference.to_type(ScalarType.Float64)).abs() - bound;
        Assert.That(excess.max().item<double>(), Is.LessThanOrEqualTo(0.0));
    }

    [Test, Combinatorial]
    public void Attention_over_the_cache_buffers_equals_attention_over_their_views_bit_for_bit(
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType dtype,
        [Values(0L, 5L)] long first)
    {
        // A decoding step with buffers reads the cache in place from position `first` (a window's start) without views.
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        const long Batch = 1, KvHeads = 2, Heads = 4, HeadDim = 40, Capacity = 30, Filled = 17;
        using var generator = new Generator(29);
        Tensor queries = torch.randn([Batch, Heads, 1, HeadDim], generator: generator).to_type(dtype); // [B, H, 1, hd]
        Tensor keyBuffer = (torch.randn([Batch, KvHeads, Capacity, HeadDim], generator: generator) * 2).to_type(dtype); // [B, KV, C, hd]
        Tensor valueBuffer = torch.randn([Batch, KvHeads, Capacity, HeadDim], generator: generator).to_type(dtype); // [B, KV, C, hd]
        Assert.That(OneQueryAttention.AppliesOverCache(queries, keyBuffer, valueBuffer), Is.True);

        Tensor output = torch.full([Batch, Heads, 1, HeadDim], float.NaN).to_type(dtype); // [B, H, 1, hd]
        Tensor result = OneQueryAttention.ComputeOverCache(queries, keyBuffer, valueBuffer, first, Filled - first, output); // [B, H, 1, hd]
        Tensor expected = OneQueryAttention.Compute(queries, keyBuffer.narrow(2, first, Filled - first), valueBuffer.narrow(2, first, Filled - first)); // [B, H, 1, hd]
        Assert.That(ReferenceEquals(result, output), Is.True);
        Assert.That(result.eq(expected).all().item<bool>(), Is.True);
    }

    [Test]
    public void Heads_split_across_threads_equal_one_thread_bit_for_bit(
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType dtype)
    {
        // Enough scores (2 x 6 heads x 200 positions) for the heads to be split into ranges; each head is one computation
        // in a fixed order, whichever thread runs it.
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        using var generator = new Generator(71);
        Tensor queries = torch.randn([2, 6, 1, 40], generator: generator).to_type(dtype); // [B, H, 1, hd]
        Tensor keys = torch.randn([2, 3, 200, 40], generator: generator).to_type(dtype); // [B, KV, S, hd]
        Tensor values = torch.randn([2, 3, 200, 40], generator: generator).to_type(dtype); // [B, KV, S, hd]
        Assert.That(2 * 6 * 200 / OneQueryAttention.MinScoresPerRange, Is.GreaterThan(1), "the work is split");
        int saved = torch.get_num_threads();
        try
        {
            torch.set_num_threads(1);
            Tensor one = OneQueryAttention.Compute(queries, keys, values); // [B, H, 1, hd]
            torch.set_num_threads(2);
            Tensor two = OneQueryAttention.Compute(queries, keys, values); // [B, H, 1, hd]
            Assert.That(one.eq(two).all().item<bool>(), Is.True);
        }
        finally
        {
            torch.set_num_threads(saved);
        }
    }

    [Test]
    public void Other_shapes_and_gradients_are_left_to_libtorch()
    {
        using var scope = NewDisposeScope();
        Tensor queries = torch.randn([1, 4, 1, 16]); // [B, H, 1, hd]
        Tensor keys = torch.randn([1, 2, 5, 16]); // [B, KV, S, hd]
        using (torch.no_grad())
        {
            Assert.That(OneQueryAttention.Applies(queries, keys, keys), Is.True);
            Assert.That(OneQueryAttention.Applies(torch.randn([1, 4, 2, 16]), keys, keys), Is.False, "two queries");
            Assert.That(OneQueryAttention.Applies(torch.randn([1, 3, 1, 16]), keys, keys), Is.False, "heads not a multiple of the KV heads");
            Assert.That(OneQueryAttention.Applies(queries, keys.transpose(2, 3).contiguous().transpose(2, 3), keys), Is.False, "keys strided along hd");
            Assert.That(OneQueryAttention.Applies(queries.to_type(ScalarType.Float64), keys.to_type(ScalarType.Float64), keys.to_type(ScalarType.Float64)), Is.False, "fp64");
            Assert.That(OneQueryAttention.Applies(queries, torch.randn([1, 2, 0, 16]), torch.randn([1, 2, 0, 16])), Is.False, "an empty cache");
        }

        Assert.That(OneQueryAttention.Applies(queries.requires_grad_(true), keys, keys), Is.False, "a query that needs its gradient");
    }
}
