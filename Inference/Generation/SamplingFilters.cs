using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Generation;

/// <summary>Logit filters for sampling; removed tokens get negative infinity so softmax gives them zero probability.</summary>
public static class SamplingFilters
{
    /// <summary>Keeps the <paramref name="k"/> largest logits of the last dimension (all when k is 0 or at least the vocabulary).</summary>
    public static Tensor TopK(Tensor logits, int k)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (k == 0 || k >= logits.shape[^1])
        {
            return logits.clone();
        }

        using var scope = NewDisposeScope();
        Tensor threshold = logits.topk(k, dim: -1).values.narrow(-1, k - 1, 1); // [..., 1]
        // Ties with the k-th value are kept, as in Hugging Face's TopKLogitsWarper.
        return logits.masked_fill(logits.lt(threshold), double.NegativeInfinity).MoveToOuterDisposeScope(); // [..., V]
    }

    /// <summary>
    /// Nucleus filter on the last dimension: keeps the smallest set of most likely tokens whose softmax probability
    /// reaches <paramref name="p"/> (always at least the most likely token); p = 1 keeps everything.
    /// </summary>
    public static Tensor TopP(Tensor logits, double p)
    {
        ArgumentNullException.ThrowIfNull(logits);
        if (double.IsNaN(p) || p <= 0 || p > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(p), p, "Top-p must be in (0, 1].");
        }

        if (p >= 1)
        {
            return logits.clone();
        }

        using var scope = NewDisposeScope();
        (Tensor sorted, Tensor order) = logits.sort(-1, descending: true); // [..., V] each
        Tensor probabilities = sorted.to_type(ScalarType.Float32).softmax(-1); // [..., V]
        Tensor massBefore = probabilities.cumsum(-1) - probabilities; // [..., V]
        // A token is dropped once the more likely tokens already reach p; the first never is (its mass before is 0).
        Tensor dropSorted = massBefore.ge(p); // [..., V]
        Tensor drop = torch.zeros_like(dropSorted).scatter(-1, order, dropSorted); // [..., V]
        return logits.masked_fill(drop, double.NegativeInfinity).MoveToOuterDisposeScope(); // [..., V]
    }
}
