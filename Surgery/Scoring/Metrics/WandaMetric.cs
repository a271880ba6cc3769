using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>
/// Wanda (<see cref="ScoringMetrics.Wanda"/>): every weight's |w| times the L2 norm over calibration tokens of the input
/// column it reads, summed per unit by <see cref="UnitRollup"/>.
/// </summary>
public sealed class WandaMetric : ILayerPassMetric
{
    /// <inheritdoc/>
    public string Name => ScoringMetrics.Wanda;

    /// <inheritdoc/>
    public string Description => "|W| times the input column's L2 norm, summed per unit";

    /// <inheritdoc/>
    public MetricNeeds Needs => MetricNeeds.Weights | MetricNeeds.Activations;

    /// <inheritdoc/>
    public ScoredUnits Scores => ScoredUnits.Heads | ScoredUnits.KvGroups | ScoredUnits.Neurons | ScoredUnits.HiddenChannels;

    /// <inheritdoc/>
    public LayerPassObserver CreateObserver(MetricContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return new Observer(context.Config, context.Device);
    }

    private sealed class Observer(LlamaConfig config, Device device) : LayerPassObserver
    {
        private readonly UnitAccumulator _units = new(config);

        // Sums of squares per input column over one layer's tokens, float64 on the compute device.
        private Tensor? _attentionInput; // q/k/v_proj read the input norm's output, [D]
        private Tensor? _outputProjectionInput; // o_proj reads the merged heads, [H*hd]
        private Tensor? _mlpInput; // gate/up_proj read the post-attention norm's output, [D]
        private Tensor? _downProjectionInput; // down_proj reads silu(gate) * up, [F]

        public override void OnActivations(int layer, LayerActivations activations)
        {
            _attentionInput ??= Zeros(config.HiddenSize);
            _outputProjectionInput ??= Zeros(config.NumAttentionHeads * config.HeadDim);
            _mlpInput ??= Zeros(config.HiddenSize);
            _downProjectionInput ??= Zeros(config.IntermediateSize);
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            _attentionInput.add_(SumTokens(activations.AttentionInput.pow(2))); // [D]
            _outputProjectionInput.add_(SumTokens(activations.MergedHeads.pow(2))); // [H*hd]
            _mlpInput.add_(SumTokens(activations.MlpInput.pow(2))); // [D]
            _downProjectionInput.add_(SumTokens(activations.FfnActivation.pow(2))); // [F]
        }

        public override void OnLayer(int layer, LlamaDecoderLayer weights)
        {
            if (_attentionInput is null || _outputProjectionInput is null || _mlpInput is null || _downProjectionInput is null)
            {
                return;
            }

            using (var scope = torch.NewDisposeScope())
            {
                LlamaAttention a = weights.Attention;
                LlamaMlp m = weights.Mlp;
                Tensor attentionNorm = _attentionInput.sqrt(); // [D]
                Tensor mlpNorm = _mlpInput.sqrt(); // [D]
                var elements = new LayerElementScores(
                    Score(a.QueryProjection.Weight, attentionNorm),
                    Score(a.KeyProjection.Weight, attentionNorm),
                    Score(a.ValueProjection.Weight, attentionNorm),
                    Score(a.OutputProjection.Weight, _outputProjectionInput.sqrt()),
                    Score(m.GateProjection.Weight, mlpNorm),
                    Score(m.UpProjection.Weight, mlpNorm),
                    Score(m.DownProjection.Weight, _downProjectionInput.sqrt()),
                    null,
                    null);
                _units.AddLayer(layer, elements);
            }

            ReleaseLayer();
        }

        public override UnitScores Finish() => _units.ToScores(sqrt: false);

        protected override void Dispose(bool disposing)
        {
            ReleaseLayer();
            base.Dispose(disposing);
        }

        private static Tensor Score(Tensor weight, Tensor columnNorms) => weight.to_type(ScalarType.Float64).abs() * columnNorms.unsqueeze(0); // [out, in]

        private static Tensor SumTokens(Tensor x) => x.detach().to_type(ScalarType.Float64).sum([0, 1]); // [B, T, X] -> [X]

        // Outlives the forward pass's dispose scopes: the sums run over every batch of the layer.
        private Tensor Zeros(long size) => torch.zeros([size], ScalarType.Float64, device).DetachFromDisposeScope();

        private void ReleaseLayer()
        {
            _attentionInput?.Dispose();
            _outputProjectionInput?.Dispose();
            _mlpInput?.Dispose();
            _downProjectionInput?.Dispose();
            (_attentionInput, _outputProjectionInput, _mlpInput, _downProjectionInput) = (null, null, null, null);
        }
    }
}
