using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>
/// Loss increase when a layer is skipped (<see cref="ScoringMetrics.SkipLoss"/>): the mean next-token loss without layer
/// l minus the full model's, per layer (higher = more important).
/// </summary>
public sealed class SkipLossMetric : IWholeModelMetric
{
    /// <inheritdoc/>
    public string Name => ScoringMetrics.SkipLoss;

    /// <inheritdoc/>
    public string Description => "LM loss increase when the layer is skipped";

    /// <inheritdoc/>
    public MetricNeeds Needs => MetricNeeds.Activations;

    /// <inheritdoc/>
    public ScoredUnits Scores => ScoredUnits.Layers;

    /// <inheritdoc/>
    public UnitScores Score(LlamaForCausalLM model, MetricContext context, IProgress<ScoringProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(context);
        CalibrationData data = WholeModelScoring.CheckData(model.Config, context);
        int layers = model.Layers.Count;
        var skipped = new double[layers];
        double baseline = 0;
        using var noGrad = torch.no_grad();
        var batches = data.Batches(context.Options.BatchSize).ToList();
        for (int b = 0; b < batches.Count; b++)
        {
            using var scope = torch.NewDisposeScope();
            var (start, count) = batches[b];
            Tensor ids = data.Batch(start, count, model.Device); // [B, T]
            using RotaryTables rope = model.CreateRotaryTables(0, data.SequenceLength);
            using var masks = new AttentionMasks();

            // One baseline pass per batch; each skip restarts from the stored input of the skipped layer.
            var inputs = new Tensor[layers];
            Tensor hidden = model.Embed(ids); // [B, T, D]
            for (int l = 0; l < layers; l++)
            {
                inputs[l] = hidden;
                hidden = model.Layers[l].forward(hidden, rope, null, masks); // [B, T, D]
            }

            baseline += WholeModelScoring.NextTokenLoss(model.FinalNormAndHead(hidden), ids).item<float>() * count;
            for (int skip = 0; skip < layers; skip++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var skipScope = torch.NewDisposeScope();
                Tensor h = inputs[skip]; // [B, T, D]
                for (int l = skip + 1; l < layers; l++)
                {
                    h = model.Layers[l].forward(h, rope, null, masks); // [B, T, D]
                }

                skipped[skip] += WholeModelScoring.NextTokenLoss(model.FinalNormAndHead(h), ids).item<float>() * count;
            }

            progress?.Report(new ScoringProgress(Name, b + 1, batches.Count));
        }

        return new UnitScores { Layers = [.. skipped.Select(s => (s - baseline) / data.SequenceCount)] };
    }
}
