using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>
/// Sums an element-wise function of the weights per unit (<see cref="UnitRollup"/>): every decoder layer's matrices and
/// norms, and for hidden channels also the embedding, the final norm and the untied head. Shared by <c>l1</c> and <c>l2</c>.
/// </summary>
internal sealed class WeightMagnitudeObserver(LlamaConfig config, Func<Tensor, Tensor> magnitude, bool squareRoot) : LayerPassObserver
{
    private readonly UnitAccumulator _sums = new(config);

    public override void OnEmbedding(Tensor weight) => AddMatrix(weight);

    public override void OnLayer(int layer, LlamaDecoderLayer weights)
    {
        using var scope = torch.NewDisposeScope();
        _sums.AddLayer(layer, LayerElementScores.FromLayer(weights, magnitude, includeNorms: true));
    }

    public override void OnFinalNorm(Tensor weight, Tensor? states)
    {
        using var scope = torch.NewDisposeScope();
        _sums.AddChannels(UnitRollup.ToArray(magnitude(weight)));
    }

    public override void OnHead(Tensor weight) => AddMatrix(weight);

    public override UnitScores Finish() => _sums.ToScores(squareRoot);

    private void AddMatrix(Tensor rowsByChannel)
    {
        using var scope = torch.NewDisposeScope();
        _sums.AddChannels(UnitRollup.ColumnSums(magnitude(rowsByChannel))); // [D]
    }
}
