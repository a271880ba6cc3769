using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>
/// Learned masks (<see cref="ScoringMetrics.LearnedMask"/>): a sigmoid gate per query head, FFN neuron and hidden channel
/// multiplies into the model's own forward pass (<see cref="LayerTaps"/>); the gate logits are trained with Adam on the LM
/// loss plus <see cref="ScoringOptions.MaskPenalty"/> times the squared gap between each kind's mean gate (the expected
/// kept fraction) and <see cref="ScoringOptions.MaskTargetFraction"/>, for <see cref="ScoringOptions.MaskSteps"/> steps
/// with the weights frozen. Units the loss does not need sink under the penalty while needed ones are held up by the
/// loss; the final logits are the scores.
/// </summary>
public sealed class LearnedMaskMetric : IWholeModelMetric
{
    private const double InitialLogit = 3.0;

    /// <inheritdoc/>
    public string Name => ScoringMetrics.LearnedMask;

    /// <inheritdoc/>
    public string Description => "logits of sigmoid gates trained with a kept-fraction penalty";

    /// <inheritdoc/>
    public MetricNeeds Needs => MetricNeeds.Masks;

    /// <inheritdoc/>
    public ScoredUnits Scores => ScoredUnits.Heads | ScoredUnits.Neurons | ScoredUnits.HiddenChannels;

    /// <inheritdoc/>
    public UnitScores Score(LlamaForCausalLM model, MetricContext context, IProgress<ScoringProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(context);
        CalibrationData data = WholeModelScoring.CheckData(model.Config, context);
        ScoringOptions options = context.Options;
        LlamaConfig config = model.Config;
        var parameters = model.parameters().ToList();
        var wasTracked = parameters.Select(p => p.requires_grad).ToList();
        using var headLogits = new Parameter(torch.full([config.NumHiddenLayers, config.NumAttentionHeads], InitialLogit, ScalarType.Float32, model.Device)); // [L, H]
        using var neuronLogits = new Parameter(torch.full([config.NumHiddenLayers, config.IntermediateSize], InitialLogit, ScalarType.Float32, model.Device)); // [L, F]
        using var channelLogits = new Parameter(torch.full([config.HiddenSize], InitialLogit, ScalarType.Float32, model.Device)); // [D]
        try
        {
            parameters.ForEach(p => p.requires_grad = false);
            using var optimizer = torch.optim.Adam([headLogits, neuronLogits, channelLogits], options.MaskLearningRate);
            var batches = data.Batches(options.BatchSize).ToList();
            for (int step = 0; step < options.MaskSteps; step++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                optimizer.zero_grad();
                var (start, count) = batches[step % batches.Count];
                Tensor heads = headLogits.sigmoid().to_type(model.DType); // [L, H]
                Tensor neurons = neuronLogits.sigmoid().to_type(model.DType); // [L, F]
                Tensor channels = channelLogits.sigmoid().to_type(model.DType); // [D]
                Tensor lmLoss = WholeModelScoring.LanguageModelLoss(model, data.Batch(start, count, model.Device), l => new LayerTaps(heads[l], neurons[l], channels), channels); // []
                Tensor penalty = Gap(headLogits) + Gap(neuronLogits) + Gap(channelLogits); // []
                Tensor loss = lmLoss + (options.MaskPenalty * penalty); // []
                loss.backward();
                optimizer.step();
                progress?.Report(new ScoringProgress(Name, step + 1, options.MaskSteps));
            }
        }
        finally
        {
            for (int i = 0; i < parameters.Count; i++)
            {
                parameters[i].requires_grad = wasTracked[i];
            }
        }

        return new UnitScores
        {
            Heads = Rows(headLogits),
            Neurons = Rows(neuronLogits),
            Channels = UnitRollup.ToArray(channelLogits),
        };

        Tensor Gap(Tensor logits) => (logits.sigmoid().mean() - options.MaskTargetFraction).pow(2); // []

        static double[][] Rows(Tensor logits)
        {
            double[] flat = UnitRollup.ToArray(logits);
            long columns = logits.shape[1];
            return [.. Enumerable.Range(0, (int)logits.shape[0]).Select(r => flat.AsSpan((int)(r * columns), (int)columns).ToArray())];
        }
    }
}
