using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Llama2C;

/// <summary>
/// Reorders the output rows of a query or key projection between the two RoPE conventions. Meta's original Llama code and
/// llama2.c rotate interleaved pairs (2i, 2i+1) of each head; Hugging Face's <c>rotate_half</c> rotates the pairs
/// (i, i + head_dim/2). Moving the rows of W_q and W_k makes both conventions compute the same attention scores.
/// </summary>
public static class RopePermutation
{
    /// <summary>Interleaved (llama2.c / Meta) rows to Hugging Face <c>rotate_half</c> rows.</summary>
    /// <param name="weight">A projection weight [heads * head_dim, in] (or a bias [heads * head_dim]).</param>
    /// <param name="numHeads">Heads the rows are grouped in: query heads for W_q, key/value heads for W_k.</param>
    /// <returns>A new tensor with the same shape; within each head, even rows first, then odd rows.</returns>
    public static Tensor InterleavedToRotateHalf(Tensor weight, int numHeads) => Reorder(weight, numHeads, toRotateHalf: true);

    /// <summary>Hugging Face <c>rotate_half</c> rows back to interleaved (llama2.c / Meta) rows; the inverse of <see cref="InterleavedToRotateHalf"/>.</summary>
    /// <param name="weight">A projection weight [heads * head_dim, in] (or a bias [heads * head_dim]).</param>
    /// <param name="numHeads">Heads the rows are grouped in: query heads for W_q, key/value heads for W_k.</param>
    /// <returns>A new tensor with the same shape.</returns>
    public static Tensor RotateHalfToInterleaved(Tensor weight, int numHeads) => Reorder(weight, numHeads, toRotateHalf: false);

    private static Tensor Reorder(Tensor weight, int numHeads, bool toRotateHalf)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numHeads);
        long rows = weight.shape[0];
        if (rows % (2L * numHeads) != 0)
        {
            throw new ArgumentException($"{rows} rows cannot be split into {numHeads} heads of an even size.", nameof(weight));
        }

        using var scope = NewDisposeScope();
        long half = rows / numHeads / 2;
        long[] rest = weight.shape[1..];
        Tensor reordered = toRotateHalf
            ? weight.reshape([numHeads, half, 2, .. rest]).transpose(1, 2) // [H, 2, hs/2, ...]: evens then odds
            : weight.reshape([numHeads, 2, half, .. rest]).transpose(1, 2); // [H, hs/2, 2, ...]: pairs interleaved
        return reordered.reshape(weight.shape).contiguous().MoveToOuterDisposeScope(); // [rows, ...]
    }
}
