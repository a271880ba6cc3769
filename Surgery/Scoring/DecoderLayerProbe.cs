using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// Multiplicative gates applied inside a decoder layer's forward pass: per query head on the attention output before
/// <c>o_proj</c> [H], per FFN neuron on <c>silu(gate) * up</c> [F], and per hidden channel on what the layer adds to the
/// residual stream [D]. Null gates are ones.
/// </summary>
/// <param name="Heads">Gates per query head, [H], or null.</param>
/// <param name="Neurons">Gates per FFN neuron, [F], or null.</param>
/// <param name="Channels">Gates per hidden channel, [D], or null.</param>
public sealed record LayerGates(Tensor? Heads, Tensor? Neurons, Tensor? Channels);

/// <summary>
/// Forward statistics of one decoder layer accumulated over calibration tokens (sums in float64 on the compute device):
/// the inputs every projection reads and the per-unit activation magnitudes.
/// </summary>
public sealed class LayerActivationStatistics : IDisposable
{
    /// <summary>Creates zeroed accumulators for a layer of <paramref name="config"/>.</summary>
    public LayerActivationStatistics(LlamaConfig config, Device device)
    {
        ArgumentNullException.ThrowIfNull(config);
        long d = config.HiddenSize, f = config.IntermediateSize, heads = config.NumAttentionHeads;
        HeadOutputNorm = torch.zeros([heads], ScalarType.Float64, device);
        NeuronAbs = torch.zeros([f], ScalarType.Float64, device);
        NormOutputAbs = torch.zeros([d], ScalarType.Float64, device);
        AttentionInputSquares = torch.zeros([d], ScalarType.Float64, device);
        OutputProjectionInputSquares = torch.zeros([heads * config.HeadDim], ScalarType.Float64, device);
        MlpInputSquares = torch.zeros([d], ScalarType.Float64, device);
        DownProjectionInputSquares = torch.zeros([f], ScalarType.Float64, device);
    }

    /// <summary>Tokens accumulated.</summary>
    public long Tokens { get; private set; }

    /// <summary>Sum over tokens of the L2 norm of each head's attention output (before <c>o_proj</c>), [H].</summary>
    public Tensor HeadOutputNorm { get; }

    /// <summary>Sum over tokens of |silu(gate) * up| per neuron, [F].</summary>
    public Tensor NeuronAbs { get; }

    /// <summary>Sum over tokens of |output| of both RMSNorms of the layer, per channel, [D].</summary>
    public Tensor NormOutputAbs { get; }

    /// <summary>Sum of squares per input column of q/k/v_proj (the input norm's output), [D].</summary>
    public Tensor AttentionInputSquares { get; }

    /// <summary>Sum of squares per input column of o_proj (the merged heads), [H*hd].</summary>
    public Tensor OutputProjectionInputSquares { get; }

    /// <summary>Sum of squares per input column of gate/up_proj (the post-attention norm's output), [D].</summary>
    public Tensor MlpInputSquares { get; }

    /// <summary>Sum of squares per input column of down_proj (<c>silu(gate) * up</c>), [F].</summary>
    public Tensor DownProjectionInputSquares { get; }

    internal void Accumulate(Tensor attentionInput, Tensor headOutputs, Tensor merged, Tensor mlpInput, Tensor activation)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        Tokens += attentionInput.shape[0] * attentionInput.shape[1];
        HeadOutputNorm.add_(headOutputs.detach().to_type(ScalarType.Float64).pow(2).sum(-1).sqrt().sum([0, 2])); // [H]
        NeuronAbs.add_(SumTokens(activation.abs())); // [F]
        NormOutputAbs.add_(SumTokens(attentionInput.abs()) + SumTokens(mlpInput.abs())); // [D]
        AttentionInputSquares.add_(SumTokens(attentionInput.pow(2))); // [D]
        OutputProjectionInputSquares.add_(SumTokens(merged.pow(2))); // [H*hd]
        MlpInputSquares.add_(SumTokens(mlpInput.pow(2))); // [D]
        DownProjectionInputSquares.add_(SumTokens(activation.pow(2))); // [F]

        static Tensor SumTokens(Tensor x) => x.detach().to_type(ScalarType.Float64).sum([0, 1]); // [B, T, X] -> [X]
    }

    /// <summary>Releases the accumulators.</summary>
    public void Dispose()
    {
        HeadOutputNorm.Dispose();
        NeuronAbs.Dispose();
        NormOutputAbs.Dispose();
        AttentionInputSquares.Dispose();
        OutputProjectionInputSquares.Dispose();
        MlpInputSquares.Dispose();
        DownProjectionInputSquares.Dispose();
    }
}

/// <summary>
/// A decoder layer's forward pass written out with the same weights and operations as <see cref="LlamaDecoderLayer"/>,
/// but with hooks scoring needs: per-head outputs before <c>o_proj</c>, the FFN activation, gates, and statistics.
/// </summary>
public static class DecoderLayerProbe
{
    /// <summary>
    /// Runs <paramref name="layer"/> on hidden states [B, T, D] (positions from 0 as given by <paramref name="rope"/>),
    /// applying <paramref name="gates"/> and adding to <paramref name="statistics"/> when given; returns [B, T, D].
    /// Gradients flow through when enabled, so gates can be trained.
    /// </summary>
    public static Tensor Forward(LlamaDecoderLayer layer, LlamaConfig config, Tensor hidden, RotaryTables rope, LayerGates? gates = null, LayerActivationStatistics? statistics = null)
    {
        ArgumentNullException.ThrowIfNull(layer);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(rope);
        using var scope = torch.NewDisposeScope();
        long batch = hidden.shape[0], length = hidden.shape[1];
        int heads = config.NumAttentionHeads, kvHeads = config.NumKeyValueHeads, headDim = config.HeadDim;
        LlamaAttention attention = layer.Attention;

        Tensor attentionInput = layer.InputNorm.forward(hidden); // [B, T, D]
        Tensor queries = attention.QueryProjection.forward(attentionInput).view(batch, length, heads, headDim).transpose(1, 2); // [B, H, T, hd]
        Tensor keys = attention.KeyProjection.forward(attentionInput).view(batch, length, kvHeads, headDim).transpose(1, 2); // [B, KV, T, hd]
        Tensor values = attention.ValueProjection.forward(attentionInput).view(batch, length, kvHeads, headDim).transpose(1, 2); // [B, KV, T, hd]
        queries = rope.Apply(queries); // [B, H, T, hd]
        keys = rope.Apply(keys); // [B, KV, T, hd]
        int groupSize = heads / kvHeads;
        if (groupSize > 1)
        {
            keys = keys.repeat_interleave(groupSize, 1); // [B, H, T, hd]
            values = values.repeat_interleave(groupSize, 1); // [B, H, T, hd]
        }

        Tensor headOutputs = nn.functional.scaled_dot_product_attention(queries, keys, values, is_casual: length > 1); // [B, H, T, hd]
        if (gates?.Heads is { } headGates)
        {
            headOutputs = headOutputs * headGates.view(1, heads, 1, 1); // [B, H, T, hd]
        }

        Tensor merged = headOutputs.transpose(1, 2).reshape(batch, length, (long)heads * headDim); // [B, T, H*hd]
        Tensor attended = attention.OutputProjection.forward(merged); // [B, T, D]
        if (gates?.Channels is { } channelGates)
        {
            attended = attended * channelGates; // [B, T, D]
        }

        Tensor residual = hidden + attended; // [B, T, D]
        LlamaMlp mlp = layer.Mlp;
        Tensor mlpInput = layer.PostAttentionNorm.forward(residual); // [B, T, D]
        Tensor activation = nn.functional.silu(mlp.GateProjection.forward(mlpInput)) * mlp.UpProjection.forward(mlpInput); // [B, T, F]
        if (gates?.Neurons is { } neuronGates)
        {
            activation = activation * neuronGates; // [B, T, F]
        }

        Tensor transformed = mlp.DownProjection.forward(activation); // [B, T, D]
        if (gates?.Channels is { } channelGates2)
        {
            transformed = transformed * channelGates2; // [B, T, D]
        }

        statistics?.Accumulate(attentionInput, headOutputs, merged, mlpInput, activation);
        return (residual + transformed).MoveToOuterDisposeScope(); // [B, T, D]
    }
}
