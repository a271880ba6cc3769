using System.Globalization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
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
/// What metrics on the whole model in memory (<see cref="IWholeModelMetric"/>) share: the memory estimate checked before
/// the model is loaded, and the language-model loss through the model's own decoder layer forward (gates by
/// <see cref="LayerTaps"/>, attention windows included).
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

    /// <summary>The memory a run may use: <paramref name="budget"/>, or what the runtime reports as available on the host.</summary>
    public static long ResolveBudget(long? budget) => budget ?? Inference.Runtime.MemoryPreflight.AvailableBytes();

    /// <summary>
    /// The memory a run on <paramref name="device"/> may use: <paramref name="budget"/> when given, else
    /// <see cref="Inference.Runtime.MemoryPreflight.AvailableBytes(DeviceType)"/>: the host's on the CPU, on a GPU the
    /// user's limit (<see cref="Inference.Runtime.MemoryPreflight.Limit"/>, the CLI's <c>--max-memory</c>) or null when
    /// none is set, as TorchSharp cannot query GPU memory and the host's figure says nothing about it.
    /// </summary>
    public static long? ResolveBudget(long? budget, DeviceType device) => budget ?? Inference.Runtime.MemoryPreflight.AvailableBytes(device);

    /// <summary>Throws before any work when <paramref name="estimate"/> exceeds <paramref name="budget"/>.</summary>
    /// <exception cref="InvalidOperationException">The message gives the estimated bytes, their split and the budget.</exception>
    public static void EnsureFits(MemoryEstimate estimate, long budget, string metrics, int batchSize, int sequenceLength)
    {
        ArgumentNullException.ThrowIfNull(estimate);
        if (estimate.Total <= budget || Inference.Runtime.MemoryPreflight.Skip)
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

    /// <summary>Mean next-token cross-entropy of logits [B, T, V] for ids [B, T].</summary>
    public static Tensor NextTokenLoss(Tensor logits, Tensor ids)
    {
        using var scope = torch.NewDisposeScope();
        long vocab = logits.shape[2], length = ids.shape[1];
        Tensor predicted = logits.narrow(1, 0, length - 1).reshape(-1, vocab); // [B*(T-1), V]
        Tensor targets = ids.narrow(1, 1, length - 1).reshape(-1); // [B*(T-1)]
        return nn.functional.cross_entropy(predicted, targets).MoveToOuterDisposeScope(); // []
    }

    /// <summary>The calibration data of <paramref name="context"/>, checked for loss-based metrics.</summary>
    /// <exception cref="ArgumentException">There is none, its sequences are shorter than 2 tokens, or it holds ids outside the vocabulary.</exception>
    internal static CalibrationData CheckData(LlamaConfig config, MetricContext context)
    {
        CalibrationData data = context.Data
            ?? throw new ArgumentException($"Scoring metric '{context.Name}' needs calibration data, but none was given.", nameof(context));
        if (data.SequenceLength < 2)
        {
            throw new ArgumentException($"Loss-based metrics need calibration sequences of at least 2 tokens, got {data.SequenceLength}.", nameof(context));
        }

        CalibrationRunner.CheckTokens(data, config);
        return data;
    }
}
