using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>
/// Minitron's activation importance (<see cref="ScoringMetrics.Activation"/>): the mean over calibration tokens of each
/// head output's L2 norm (before <c>o_proj</c>), of |silu(gate) * up| per FFN neuron, and of |normed hidden state| per
/// channel, averaged over both norms of every layer and the final norm.
/// </summary>
public sealed class ActivationMetric : ILayerPassMetric
{
    /// <inheritdoc/>
    public string Name => ScoringMetrics.Activation;

    /// <inheritdoc/>
    public string Description => "mean |activation| per head output, FFN neuron and normed hidden channel";

    /// <inheritdoc/>
    public MetricNeeds Needs => MetricNeeds.Activations;

    /// <inheritdoc/>
    public ScoredUnits Scores => ScoredUnits.Heads | ScoredUnits.Neurons | ScoredUnits.HiddenChannels;

    /// <inheritdoc/>
    public LayerPassObserver CreateObserver(MetricContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return new Observer(context.Config, context.Device);
    }

    private sealed class Observer(LlamaConfig config, Device device) : LayerPassObserver
    {
        private readonly UnitAccumulator _units = new(config);
        private readonly double[] _channels = new double[config.HiddenSize];
        private long _channelTerms;

        // Sums over one layer's tokens in float64 on the compute device, created at its first batch.
        private Tensor? _headOutputNorm; // [H]
        private Tensor? _neuronAbs; // [F]
        private Tensor? _normOutputAbs; // [D]
        private long _tokens;

        public override void OnActivations(int layer, LayerActivations activations)
        {
            _headOutputNorm ??= Zeros(config.NumAttentionHeads);
            _neuronAbs ??= Zeros(config.IntermediateSize);
            _normOutputAbs ??= Zeros(config.HiddenSize);
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            Tensor attentionInput = activations.AttentionInput;
            _tokens += attentionInput.shape[0] * attentionInput.shape[1];
            _headOutputNorm.add_(activations.HeadOutputs.detach().to_type(ScalarType.Float64).pow(2).sum(-1).sqrt().sum([0, 2])); // [H]
            _neuronAbs.add_(SumTokens(activations.FfnActivation.abs())); // [F]
            _normOutputAbs.add_(SumTokens(attentionInput.abs()) + SumTokens(activations.MlpInput.abs())); // [D]
        }

        public override void OnLayer(int layer, LlamaDecoderLayer weights)
        {
            if (_headOutputNorm is null || _neuronAbs is null || _normOutputAbs is null)
            {
                return;
            }

            using (var scope = torch.NewDisposeScope())
            {
                double tokens = _tokens;
                _units.SetLayer(layer, UnitRollup.ToArray(_headOutputNorm / tokens), UnitRollup.ToArray(_neuronAbs / tokens));
                Add(UnitRollup.ToArray(_normOutputAbs / tokens));
                _channelTerms += 2; // both norms of the layer
            }

            ReleaseLayer();
        }

        public override void OnFinalNorm(Tensor weight, Tensor? states)
        {
            if (states is null)
            {
                return;
            }

            using var scope = torch.NewDisposeScope();
            Tensor x = states.to_type(ScalarType.Float64); // [N, T, D]
            Tensor normed = x * (x.pow(2).mean([-1], keepdim: true) + config.RmsNormEps).rsqrt() * weight.to_type(ScalarType.Float64); // [N, T, D]
            Add(UnitRollup.ToArray(normed.abs().mean([0, 1]))); // [D]
            _channelTerms += 1;
        }

        public override UnitScores Finish() => _units.ToScores(sqrt: false) with
        {
            KvGroups = null,
            Channels = [.. _channels.Select(v => v / Math.Max(1, _channelTerms))],
        };

        protected override void Dispose(bool disposing)
        {
            ReleaseLayer();
            base.Dispose(disposing);
        }

        private static Tensor SumTokens(Tensor x) => x.detach().to_type(ScalarType.Float64).sum([0, 1]); // [B, T, X] -> [X]

        // Outlives the forward pass's dispose scopes: the sums run over every batch of the layer.
        private Tensor Zeros(long size) => torch.zeros([size], ScalarType.Float64, device).DetachFromDisposeScope();

        private void Add(double[] values)
        {
            for (int i = 0; i < _channels.Length; i++)
            {
                _channels[i] += values[i];
            }
        }

        private void ReleaseLayer()
        {
            _headOutputNorm?.Dispose();
            _neuronAbs?.Dispose();
            _normOutputAbs?.Dispose();
            (_headOutputNorm, _neuronAbs, _normOutputAbs, _tokens) = (null, null, null, 0);
        }
    }
}
