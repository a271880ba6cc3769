using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>
/// First-order Taylor importance (<see cref="ScoringMetrics.Taylor"/>, LLM-Pruner's element-wise first order): per
/// calibration batch, |w · ∂L/∂w| for every weight, summed over batches and rolled up by <see cref="UnitRollup"/>; hidden
/// channels also get the embedding, untied head and final-norm terms.
/// </summary>
public sealed class TaylorMetric : IWholeModelMetric
{
    /// <inheritdoc/>
    public string Name => ScoringMetrics.Taylor;

    /// <inheritdoc/>
    public string Description => "|w * dL/dw| summed per unit";

    /// <inheritdoc/>
    public MetricNeeds Needs => MetricNeeds.Weights | MetricNeeds.Gradients;

    /// <inheritdoc/>
    public ScoredUnits Scores => ScoredUnits.Heads | ScoredUnits.KvGroups | ScoredUnits.Neurons | ScoredUnits.HiddenChannels;

    /// <inheritdoc/>
    public UnitScores Score(LlamaForCausalLM model, MetricContext context, IProgress<ScoringProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(context);
        CalibrationData data = WholeModelScoring.CheckData(model.Config, context);
        var accumulator = new UnitAccumulator(model.Config);
        var parameters = model.parameters().ToList();
        var wasTracked = parameters.Select(p => p.requires_grad).ToList();
        try
        {
            parameters.ForEach(p => p.requires_grad = true);
            var batches = data.Batches(context.Options.BatchSize).ToList();
            for (int b = 0; b < batches.Count; b++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                model.zero_grad();
                var (start, count) = batches[b];
                Tensor loss = WholeModelScoring.LanguageModelLoss(model, data.Batch(start, count, model.Device)); // []
                loss.backward();
                using var noGrad = torch.no_grad();
                for (int l = 0; l < model.Layers.Count; l++)
                {
                    using var layerScope = torch.NewDisposeScope();
                    accumulator.AddLayer(l, LayerElementScores.FromLayer(model.Layers[l], Saliency, includeNorms: true));
                }

                accumulator.AddChannels(UnitRollup.ColumnSums(Saliency(model.Model.EmbedTokens.Weight)));
                accumulator.AddChannels(UnitRollup.ToArray(Saliency(model.Model.Norm.Weight)));
                if (model.LmHead is { } head)
                {
                    accumulator.AddChannels(UnitRollup.ColumnSums(Saliency(head.Weight)));
                }

                progress?.Report(new ScoringProgress(Name, b + 1, batches.Count));
            }
        }
        finally
        {
            // The model's parameters are left as they were, their gradients cleared.
            model.zero_grad();
            for (int i = 0; i < parameters.Count; i++)
            {
                parameters[i].requires_grad = wasTracked[i];
            }
        }

        return accumulator.ToScores(sqrt: false);

        static Tensor Saliency(Tensor weight) =>
            weight.grad is { } gradient
                ? (weight.detach().to_type(ScalarType.Float64) * gradient.to_type(ScalarType.Float64)).abs()
                : torch.zeros_like(weight, ScalarType.Float64);
    }
}
