using System.Globalization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>Estimated memory of a whole-model scoring run, in bytes.</summary>
/// <param name="Weights">Parameters (0 when the model is already in memory).</param>
/// <param name="Gradients">Parameter gradients (0 for forward-only or frozen-weight metrics).</param>
/// <param name="Activations">Activations kept for one batch (for the backward pass when there is one).</param>
public sealed record MemoryEstimate(long Weights, long Gradients, long Activations)
{
    /// <summary>All of it.</summary>
    public long Total => Weights + Gradients + Activations;
}

/// <summary>
/// Metrics that need the whole model in memory: loss increase when a layer is skipped, first-order Taylor importance
/// and learned gates. All compute in the model's parameters, through the model's own decoder layer forward (gates and
/// skipped layers by <see cref="LayerTaps"/> and the layer-by-layer API, attention windows included).
/// </summary>
public static class WholeModelScoring
{
    /// <summary>
    /// Estimates the bytes of a whole-model run in float32: the weights (unless <paramref name="modelInMemory"/>),
    /// gradients when <paramref name="parameterGradients"/>, and the activations of one batch (kept for a backward pass
    /// when <paramref name="backward"/>, including attention probabilities and logits).
    /// </summary>
    public static MemoryEstimate Estimate(LlamaConfig config, int batchSize, int sequenceLength, bool backward, bool parameterGradients, bool modelInMemory)
    {
        ArgumentNullException.ThrowIfNull(config);
        const long Float = 4;
        long parameters = LlamaTensorLayout.CountParameters(config).Total;
        long tokens = (long)batchSize * sequenceLength;
        long d = config.HiddenSize, f = config.IntermediateSize, h = config.NumAttentionHeads, v = config.VocabSize;
        long perLayerToken = backward
            ? (12 * d) + (5 * f) + (2 * h * sequenceLength) // inputs of every projection, norms, attention probabilities
            : d + (6 * d) + (3 * f) + (h * sequenceLength); // kept layer inputs plus one layer's transients
        long activations = tokens * Float * ((config.NumHiddenLayers * perLayerToken) + (3 * v));
        return new MemoryEstimate(modelInMemory ? 0 : parameters * Float, parameterGradients ? parameters * Float : 0, activations);
    }

    /// <summary>The memory a run may use: <paramref name="budget"/>, or what the runtime reports as available.</summary>
    public static long ResolveBudget(long? budget) => budget ?? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>Throws before any work when <paramref name="estimate"/> exceeds <paramref name="budget"/>.</summary>
    /// <exception cref="InvalidOperationException">The message gives the estimated bytes, their split and the budget.</exception>
    public static void EnsureFits(MemoryEstimate estimate, long budget, string metrics, int batchSize, int sequenceLength)
    {
        ArgumentNullException.ThrowIfNull(estimate);
        if (estimate.Total <= budget)
        {
            return;
        }

        throw new InvalidOperationException(string.Create(
            CultureInfo.InvariantCulture,
            $"Scoring metric(s) {metrics} need the whole model in memory: about {estimate.Total} bytes ({Gib(estimate.Total)} GiB: weights {estimate.Weights}, gradients {estimate.Gradients}, activations {estimate.Activations} for batches of {batchSize} x {sequenceLength} tokens in float32), but the budget is {budget} bytes ({Gib(budget)} GiB, ScoringOptions.MemoryBudgetBytes). Lower BatchSize or the sequence length, raise the budget, or use forward metrics, which stream one layer at a time."));

        static string Gib(long bytes) => (bytes / (1024.0 * 1024 * 1024)).ToString("0.###", CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Mean next-token cross-entropy of <paramref name="ids"/> [B, T] with optional taps (gates) per layer, channel gates on
    /// the embedding output, and layer <paramref name="skipLayer"/> left out (-1 for none). Returns a scalar tensor.
    /// </summary>
    public static Tensor LanguageModelLoss(LlamaForCausalLM model, Tensor ids, Func<int, LayerTaps?>? taps = null, Tensor? channelGates = null, int skipLayer = -1)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(ids);
        using var scope = torch.NewDisposeScope();
        Tensor hidden = model.Embed(ids); // [B, T, D]
        if (channelGates is not null)
        {
            hidden = hidden * channelGates; // [B, T, D]
        }

        using RotaryTables rope = model.CreateRotaryTables(0, ids.shape[1]);
        using var masks = new AttentionMasks();
        for (int l = 0; l < model.Layers.Count; l++)
        {
            if (l != skipLayer)
            {
                hidden = model.Layers[l].forward(hidden, rope, null, masks, taps?.Invoke(l)); // [B, T, D]
            }
        }

        return NextTokenLoss(model.FinalNormAndHead(hidden), ids).MoveToOuterDisposeScope(); // []
    }

    /// <summary>
    /// Loss increase when each layer is skipped: mean loss without layer l minus the mean loss of the full model, [L]
    /// (higher = more important). One baseline pass per batch; each skip restarts from the stored input of layer l.
    /// </summary>
    public static double[] SkipLoss(LlamaForCausalLM model, CalibrationData data, int batchSize, IProgress<ScoringProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        CheckData(model.Config, data);
        int layers = model.Layers.Count;
        var skipped = new double[layers];
        double baseline = 0;
        using var noGrad = torch.no_grad();
        var batches = data.Batches(batchSize).ToList();
        for (int b = 0; b < batches.Count; b++)
        {
            using var scope = torch.NewDisposeScope();
            var (start, count) = batches[b];
            Tensor ids = data.Batch(start, count, model.Device); // [B, T]
            using RotaryTables rope = model.CreateRotaryTables(0, data.SequenceLength);
            using var masks = new AttentionMasks();
            var inputs = new Tensor[layers];
            Tensor hidden = model.Embed(ids); // [B, T, D]
            for (int l = 0; l < layers; l++)
            {
                inputs[l] = hidden;
                hidden = model.Layers[l].forward(hidden, rope, null, masks); // [B, T, D]
            }

            baseline += NextTokenLoss(model.FinalNormAndHead(hidden), ids).item<float>() * count;
            for (int skip = 0; skip < layers; skip++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var skipScope = torch.NewDisposeScope();
                Tensor h = inputs[skip]; // [B, T, D]
                for (int l = skip + 1; l < layers; l++)
                {
                    h = model.Layers[l].forward(h, rope, null, masks); // [B, T, D]
                }

                skipped[skip] += NextTokenLoss(model.FinalNormAndHead(h), ids).item<float>() * count;
            }

            progress?.Report(new ScoringProgress(ScoringMetrics.SkipLoss, b + 1, batches.Count));
        }

        return [.. skipped.Select(s => (s - baseline) / data.SequenceCount)];
    }

    /// <summary>
    /// First-order Taylor importance: per calibration batch, |w · ∂L/∂w| for every weight, summed over batches and rolled
    /// up by <see cref="UnitRollup"/>; hidden channels also get the embedding, untied head and final-norm terms. The
    /// model's parameters are left unchanged and their gradients cleared.
    /// </summary>
    public static UnitScores Taylor(LlamaForCausalLM model, CalibrationData data, int batchSize, IProgress<ScoringProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        CheckData(model.Config, data);
        var accumulator = new UnitAccumulator(model.Config);
        var parameters = model.parameters().ToList();
        var wasTracked = parameters.Select(p => p.requires_grad).ToList();
        try
        {
            parameters.ForEach(p => p.requires_grad = true);
            var batches = data.Batches(batchSize).ToList();
            for (int b = 0; b < batches.Count; b++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                model.zero_grad();
                var (start, count) = batches[b];
                Tensor loss = LanguageModelLoss(model, data.Batch(start, count, model.Device)); // []
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

                progress?.Report(new ScoringProgress(ScoringMetrics.Taylor, b + 1, batches.Count));
            }
        }
        finally
        {
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

    /// <summary>
    /// Learned masks: a sigmoid gate per query head, FFN neuron and hidden channel multiplies into the forward pass; the
    /// gate logits are trained with Adam on the LM loss plus <see cref="ScoringOptions.MaskPenalty"/> times the squared gap
    /// between each kind's mean gate (the expected kept fraction) and <see cref="ScoringOptions.MaskTargetFraction"/>, for
    /// <see cref="ScoringOptions.MaskSteps"/> steps with the weights frozen. Units the loss does not need sink under the
    /// penalty while needed ones are held up by the loss; the final logits are the scores.
    /// </summary>
    public static UnitScores LearnedMask(LlamaForCausalLM model, CalibrationData data, ScoringOptions options, IProgress<ScoringProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        CheckData(model.Config, data);
        LlamaConfig config = model.Config;
        var parameters = model.parameters().ToList();
        var wasTracked = parameters.Select(p => p.requires_grad).ToList();
        const double InitialLogit = 3.0;
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
                Tensor lmLoss = LanguageModelLoss(model, data.Batch(start, count, model.Device), l => new LayerTaps(heads[l], neurons[l], channels), channels); // []
                Tensor penalty = Gap(headLogits) + Gap(neuronLogits) + Gap(channelLogits); // []
                Tensor loss = lmLoss + (options.MaskPenalty * penalty); // []
                loss.backward();
                optimizer.step();
                progress?.Report(new ScoringProgress(ScoringMetrics.LearnedMask, step + 1, options.MaskSteps));
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

    /// <summary>Mean next-token cross-entropy of logits [B, T, V] for ids [B, T].</summary>
    public static Tensor NextTokenLoss(Tensor logits, Tensor ids)
    {
        using var scope = torch.NewDisposeScope();
        long vocab = logits.shape[2], length = ids.shape[1];
        Tensor predicted = logits.narrow(1, 0, length - 1).reshape(-1, vocab); // [B*(T-1), V]
        Tensor targets = ids.narrow(1, 1, length - 1).reshape(-1); // [B*(T-1)]
        return nn.functional.cross_entropy(predicted, targets).MoveToOuterDisposeScope(); // []
    }

    private static void CheckData(LlamaConfig config, CalibrationData data)
    {
        if (data.SequenceLength < 2)
        {
            throw new ArgumentException($"Loss-based metrics need calibration sequences of at least 2 tokens, got {data.SequenceLength}.", nameof(data));
        }

        CalibrationRunner.CheckTokens(data, config);
    }
}
