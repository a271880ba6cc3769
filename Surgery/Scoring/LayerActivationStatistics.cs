using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// Forward statistics of one decoder layer accumulated over calibration tokens (sums in float64 on the compute device):
/// the inputs every projection reads and the per-unit activation magnitudes. Fed by the layer's own forward pass through
/// <see cref="Taps"/>.
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

    /// <summary>Taps that add each forward call's activations to these statistics (no gates).</summary>
    public LayerTaps Taps => new(Observer: Accumulate);

    /// <summary>Adds the activations of one forward call of the layer.</summary>
    public void Accumulate(LayerActivations activations)
    {
        ArgumentNullException.ThrowIfNull(activations);
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        Tensor attentionInput = activations.AttentionInput, mlpInput = activations.MlpInput, activation = activations.FfnActivation;
        Tokens += attentionInput.shape[0] * attentionInput.shape[1];
        HeadOutputNorm.add_(activations.HeadOutputs.detach().to_type(ScalarType.Float64).pow(2).sum(-1).sqrt().sum([0, 2])); // [H]
        NeuronAbs.add_(SumTokens(activation.abs())); // [F]
        NormOutputAbs.add_(SumTokens(attentionInput.abs()) + SumTokens(mlpInput.abs())); // [D]
        AttentionInputSquares.add_(SumTokens(attentionInput.pow(2))); // [D]
        OutputProjectionInputSquares.add_(SumTokens(activations.MergedHeads.pow(2))); // [H*hd]
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
