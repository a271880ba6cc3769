using ModelSurgery.Inference.Modeling;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>
/// ShortGPT's Block Influence (<see cref="ScoringMetrics.BlockInfluence"/>): 1 - cos(layer input, layer output) averaged
/// over calibration tokens (<see cref="LayerSimilarity.BlockInfluence"/>).
/// </summary>
public sealed class BlockInfluenceMetric : ILayerPassMetric
{
    /// <inheritdoc/>
    public string Name => ScoringMetrics.BlockInfluence;

    /// <inheritdoc/>
    public string Description => "1 - cos(layer input, layer output)";

    /// <inheritdoc/>
    public MetricNeeds Needs => MetricNeeds.Activations;

    /// <inheritdoc/>
    public ScoredUnits Scores => ScoredUnits.Layers;

    /// <inheritdoc/>
    public LayerPassObserver CreateObserver(MetricContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return new Observer(context.Config.NumHiddenLayers);
    }

    private sealed class Observer(int layers) : LayerPassObserver
    {
        private readonly double[] _influence = new double[layers];
        private double _cosineSum;
        private long _tokens;

        public override void OnBatch(int layer, Tensor input, Tensor output)
        {
            var (sum, count) = LayerSimilarity.CosineSum(input, output);
            _cosineSum += sum;
            _tokens += count;
        }

        public override void OnLayer(int layer, LlamaDecoderLayer weights)
        {
            _influence[layer] = 1.0 - (_cosineSum / _tokens);
            (_cosineSum, _tokens) = (0, 0);
        }

        public override UnitScores Finish() => new() { Layers = _influence };
    }
}
