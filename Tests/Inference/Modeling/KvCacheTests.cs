using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Inference;

/// <summary>
/// A decoding step writes its rotated keys and values straight into the cache rows; the cache then holds the same bits
/// as after <see cref="KvCache.Append"/> of LibTorch-shaped, rotated keys.
/// </summary>
public sealed class KvCacheTests
{
    [Test, Combinatorial]
    public void One_row_written_in_place_equals_an_append_bit_for_bit(
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType dtype,
        [Values(0, 3)] int prompt)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        const long batch = 2, kvHeads = 2, headDim = 40;
        var config = new LlamaConfig
        {
            VocabSize = 16, HiddenSize = 80, IntermediateSize = 8, NumHiddenLayers = 1, NumAttentionHeads = 2,
            NumKeyValueHeads = 2, MaxPositionEmbeddings = 64,
        };
        var rotary = new LlamaRotaryEmbedding(config);
        using var generator = new Generator(7);
        using var written = new KvCache(1, 8);
        using var appended = new KvCache(1, 8);
        if (prompt > 0)
        {
            // A prompt through the LibTorch path fills both caches alike.
            Tensor promptKeys = torch.randn([batch, kvHeads, prompt, headDim], generator: generator).to_type(dtype); // [B, KV, T, hd]
            Tensor promptValues = torch.randn([batch, kvHeads, prompt, headDim], generator: generator).to_type(dtype);
            written.Append(0, promptKeys, promptValues);
            appended.Append(0, promptKeys, promptValues);
        }

        for (int step = 0; step < 3; step++)
        {
            long position = prompt + step;
            Tensor keys = (torch.randn([batch, 1, kvHeads * headDim], generator: generator) * 4).to_type(dtype); // [B, 1, KV*hd]
            Tensor values = torch.randn([batch, 1, kvHeads * headDim], generator: generator).to_type(dtype); // [B, 1, KV*hd]
            using RotaryTables rope = rotary.CreateTables(position, 1, dtype, CPU);
            Assert.That(written.TryAppendRow(0, keys, values, kvHeads, headDim, rope, out Tensor cachedKeys, out Tensor cachedValues), Is.True);
            Tensor rotated = rope.Apply(keys.view(batch, 1, kvHeads, headDim).transpose(1, 2)); // [B, KV, 1, hd]
            (Tensor expectedKeys, Tensor expectedValues) = appended.Append(0, rotated, values.view(batch, 1, kvHeads, headDim).transpose(1, 2));
            Assert.That(written.Length, Is.EqualTo(position + 1));
            Assert.That(cachedKeys.eq(expectedKeys).all().item<bool>() && cachedValues.eq(expectedValues).all().item<bool>(), Is.True, $"step {step}");
        }
    }

    [Test]
    public void Rows_the_kernel_cannot_write_are_left_to_append()
    {
        using var scope = NewDisposeScope();
        var config = new LlamaConfig
        {
            VocabSize = 16, HiddenSize = 16, IntermediateSize = 8, NumHiddenLayers = 1, NumAttentionHeads = 2,
            NumKeyValueHeads = 2, MaxPositionEmbeddings = 64,
        };
        var rotary = new LlamaRotaryEmbedding(config);
        using var cache = new KvCache(1, 2);
        using RotaryTables rope = rotary.CreateTables(0, 1, ScalarType.Float32, CPU);
        Tensor keys = torch.randn([1, 1, 16]), values = torch.randn([1, 1, 16]); // [B, 1, KV*hd]
        using (torch.enable_grad())
        {
            Tensor tracked = keys.clone().requires_grad_(true);
            Assert.That(cache.TryAppendRow(0, tracked, values, 2, 8, rope, out _, out _), Is.False, "a gradient to track");
        }

        using var noGrad = torch.no_grad();
        Assert.That(cache.TryAppendRow(0, keys.to_type(ScalarType.BFloat16), values.to_type(ScalarType.BFloat16), 2, 8, rope, out _, out _), Is.False, "tables of another dtype");
        using (RotaryTables two = rotary.CreateTables(0, 2, ScalarType.Float32, CPU))
        {
            Assert.That(cache.TryAppendRow(0, keys, values, 2, 8, two, out _, out _), Is.False, "tables of two positions");
        }

        Assert.That(cache.LengthOf(0), Is.EqualTo(0), "nothing written");
        Assert.That(cache.TryAppendRow(0, keys, values, 2, 8, rope, out _, out _), Is.True);
        using RotaryTables next = rotary.CreateTables(1, 1, ScalarType.Float32, CPU);
        Assert.That(cache.TryAppendRow(0, keys, values, 2, 8, next, out _, out _), Is.True);
        using RotaryTables full = rotary.CreateTables(2, 1, ScalarType.Float32, CPU);
        Assert.That(cache.TryAppendRow(0, keys, values, 2, 8, full, out _, out _), Is.False, "a full cache: Append reports it");
    }
}
