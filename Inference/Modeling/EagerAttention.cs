using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Modeling;

/// <summary>
/// Attention as Hugging Face's <c>eager</c> implementation computes it: scores <c>q k^T / sqrt(hd)</c> in the compute
/// dtype, masked, a softmax in float32 cast back to the compute dtype, times the values. <see cref="LlamaAttention"/>
/// takes it instead of LibTorch's fused kernel where that kernel is slow: training in bf16 or f16 on the CPU over at most
/// <see cref="MaxKeys"/> keys. There LibTorch's flash-attention backward multiplies one small block at a time, and every
/// block's product allocates and frees oneDNN descriptors, which on glibc's one arena (the tool runs on one) wait on
/// its lock: a bf16 step of a 16.9M Llama at 4 x 256 tokens ran about 1.5 x faster this way on one arena, and about 1.2 x faster
/// on glibc's default arenas. Past <see cref="MaxKeys"/> keys the fused kernel keeps its lead, and the B x H x T x S
/// scores this keeps for the backward pass would grow with the square of the length.
/// </summary>
public static class EagerAttention
{
    /// <summary>The most keys a query attends over for which training in reduced precision on the CPU takes this path.</summary>
    public const int MaxKeys = 512;

    /// <summary>
    /// Whether a forward pass that records gradients in <paramref name="dtype"/> on <paramref name="device"/> over
    /// <paramref name="keyLength"/> keys takes this path (forward passes without gradients always take the fused kernel).
    /// </summary>
    /// <param name="dtype">The compute dtype of the attention's inputs.</param>
    /// <param name="device">Where it runs.</param>
    /// <param name="keyLength">Keys each query row is computed over (the sequence length in training).</param>
    /// <returns>True for bf16 or f16 on the CPU over 2 to <see cref="MaxKeys"/> keys.</returns>
    public static bool AppliesInTraining(ScalarType dtype, DeviceType device, long keyLength) =>
        dtype is ScalarType.BFloat16 or ScalarType.Float16 && device == DeviceType.CPU && keyLength is > 1 and <= MaxKeys;

    /// <summary>
    /// Attention [B, H, T, hd] of <paramref name="queries"/> [B, H, T, hd] over <paramref name="keys"/> and
    /// <paramref name="values"/> [B, H, S, hd] where <paramref name="allowed"/> [T, S] is true, in the current dispose scope.
    /// Reduced-precision inputs take their softmax in float32; others in their own dtype.
    /// </summary>
    internal static Tensor Compute(Tensor queries, Tensor keys, Tensor values, Tensor allowed)
    {
        ScalarType dtype = queries.dtype;
        // Out of place: TorchSharp's in-place mul_ by a scalar rounds the scalar to bf16 first, mul keeps it in float
        // as PyTorch does for Hugging Face's `* self.scaling`.
        Tensor scores = queries.matmul(keys.transpose(2, 3)).mul(1.0 / Math.Sqrt(queries.size(3))); // [B, H, T, S]
        scores.masked_fill_(allowed.logical_not(), double.NegativeInfinity);
        Tensor probabilities = dtype is ScalarType.BFloat16 or ScalarType.Float16
            ? scores.softmax(-1, ScalarType.Float32).to(dtype)
            : scores.softmax(-1); // [B, H, T, S]
        return probabilities.matmul(values); // [B, H, T, hd]
    }
}
