using ModelSurgery.Inference.Configuration;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Llama2C;

/// <summary>
/// A plain-ops Llama forward over Hugging Face tensors with Hugging Face's <c>rotate_half</c> RoPE, used to check that
/// converted llama2.c weights compute what the raw weights compute in <see cref="Llama2CReferenceForward"/>.
/// </summary>
internal static class RotateHalfForward
{
    /// <summary>Logits [T, vocab] for every position of <paramref name="tokens"/>.</summary>
    public static Tensor Logits(LlamaConfig config, Func<string, Tensor> get, IReadOnlyList<long> tokens)
    {
        using var scope = NewDisposeScope();
        int t = tokens.Count, hs = config.HeadDim, heads = config.NumAttentionHeads, kvHeads = config.NumKeyValueHeads;
        using Tensor ids = tensor(tokens.ToArray());
        Tensor x = get(LlamaTensorLayout.EmbedTokens).index_select(0, ids); // [T, D]
        (Tensor halfCos, Tensor halfSin) = Llama2CReferenceForward.RunCRopeTables(t, hs); // [T, hs/2]
        Tensor cos = cat([halfCos, halfCos], 1).unsqueeze(1); // [T, 1, hs]
        Tensor sin = cat([halfSin, halfSin], 1).unsqueeze(1); // [T, 1, hs]
        Tensor mask = ones(t, t, ScalarType.Bool).tril().logical_not(); // [T, T]
        for (int layer = 0; layer < config.NumHiddenLayers; layer++)
        {
            // The layout lists a bias-free layer as: input norm, q, k, v, o, post-attention norm, gate, up, down.
            string[] names = [.. LlamaTensorLayout.Tensors(config).Where(s => s.Layer == layer).Select(s => s.Name)];
            Assert.That(names, Has.Length.EqualTo(9));
            Tensor xb = Llama2CReferenceForward.RmsNorm(x, get(names[0])); // [T, D]
            Tensor q = xb.matmul(get(names[1]).t()).reshape(t, heads, hs); // [T, H, hs]
            Tensor k = xb.matmul(get(names[2]).t()).reshape(t, kvHeads, hs); // [T, KV, hs]
            Tensor v = xb.matmul(get(names[3]).t()).reshape(t, kvHeads, hs); // [T, KV, hs]
            q = q * cos + RotateHalf(q) * sin; // [T, H, hs]
            k = k * cos + RotateHalf(k) * sin; // [T, KV, hs]
            k = k.repeat_interleave(heads / kvHeads, dim: 1); // [T, H, hs]
            v = v.repeat_interleave(heads / kvHeads, dim: 1); // [T, H, hs]
            Tensor scores = q.permute(1, 0, 2).matmul(k.permute(1, 2, 0)) / MathF.Sqrt(hs); // [H, T, T]
            scores = scores.masked_fill(mask, float.NegativeInfinity).softmax(-1); // [H, T, T]
            Tensor attended = scores.matmul(v.permute(1, 0, 2)).permute(1, 0, 2).reshape(t, heads * hs); // [T, H*hs]
            x = x + attended.matmul(get(names[4]).t()); // [T, D]

            xb = Llama2CReferenceForward.RmsNorm(x, get(names[5])); // [T, D]
            Tensor hidden = nn.functional.silu(xb.matmul(get(names[6]).t())) * xb.matmul(get(names[7]).t()); // [T, F]
            x = x + hidden.matmul(get(names[8]).t()); // [T, D]
        }

        Tensor head = get(config.TieWordEmbeddings ? LlamaTensorLayout.EmbedTokens : LlamaTensorLayout.LmHead);
        return Llama2CReferenceForward.RmsNorm(x, get(LlamaTensorLayout.FinalNorm)).matmul(head.t()).MoveToOuterDisposeScope(); // [T, V]
    }

    /// <summary>Hugging Face's rotate_half: (x1, x2) -> (-x2, x1) over the two halves of the head.</summary>
    private static Tensor RotateHalf(Tensor x)
    {
        long half = x.shape[^1] / 2;
        return cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1); // [T, H, hs]
    }
}
