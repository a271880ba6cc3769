using System.Globalization;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Runtime;
using TorchSharp;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// Peak memory of a whole scoring run, from the config and the options alone, so that a run that cannot fit is refused
/// before any weight is read. The layer pass streams one layer at a time (<see cref="CalibrationRunner"/>); whole-model
/// metrics hold the model (<see cref="WholeModelScoring.Estimate"/>).
/// </summary>
public static class ScoringMemory
{
    private const long Float = 4;

    /// <summary>
    /// Estimates the peak bytes of scoring <paramref name="config"/> with <paramref name="options"/>'s metrics on
    /// <paramref name="sequences"/> calibration windows of <paramref name="length"/> tokens (all in float32, the dtype the
    /// scorer computes in). Layer pass: the largest weights held at once (the embedding or the head [V, D], or one
    /// decoder layer plus a copy of its largest tensor while it is read), the hidden states of every window before and
    /// after the current layer (2 x N x T x D), and one batch's forward transients (B x T x (6D + 3F + H x T): norms,
    /// projections, the SwiGLU intermediates and attention scores); the pass never projects onto the vocabulary (its
    /// observers see the head's weights, not logits). Whole-model metrics: the model, its gradients and one batch's
    /// activations and logits (<see cref="WholeModelScoring.Estimate"/>); the layer pass then runs on that resident model.
    /// </summary>
    /// <param name="config">The model's config.</param>
    /// <param name="options">Metrics and batch size.</param>
    /// <param name="sequences">Calibration windows (N); 0 when no data is given.</param>
    /// <param name="length">Tokens per window (T).</param>
    /// <returns>The estimate: <see cref="MemoryEstimate.Weights"/> are the weights held at once, <see cref="MemoryEstimate.Activations"/> the rest.</returns>
    public static MemoryEstimate Estimate(LlamaConfig config, ScoringOptions options, int sequences, int length)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(options);
        var metrics = options.Metrics.Select(ScoringMetrics.Get).ToList();
        long n = Math.Max(sequences, 0), t = Math.Max(length, 0), batch = Math.Min(options.BatchSize, Math.Max(sequences, 1));
        long d = config.HiddenSize, f = config.IntermediateSize, h = config.NumAttentionHeads;

        bool layerPass = metrics.Any(m => m is ILayerPassMetric);
        bool forward = sequences > 0 && metrics.Any(m => m is ILayerPassMetric && m.Needs.HasFlag(MetricNeeds.Activations));
        long passActivations = forward ? Float * ((2 * n * t * d) + (batch * t * ((6 * d) + (3 * f) + (h * t)))) : 0;

        var whole = metrics.Where(m => m is IWholeModelMetric).ToList();
        if (whole.Count > 0)
        {
            MetricNeeds needs = whole.Aggregate(MetricNeeds.None, (all, m) => all | m.Needs);
            bool backward = (needs & (MetricNeeds.Gradients | MetricNeeds.Masks)) != 0;
            MemoryEstimate resident = WholeModelScoring.Estimate(config, (int)batch, (int)t, backward, needs.HasFlag(MetricNeeds.Gradients), modelInMemory: false);

            // The layer pass, if any, runs first on the resident model; its states are gone before the whole-model metrics run.
            return resident with { Activations = Math.Max(resident.Activations, passActivations) };
        }

        return new MemoryEstimate(layerPass ? StreamedWeightBytes(config) : 0, 0, passActivations);
    }

    /// <summary>
    /// Throws before any weight is read when <see cref="Estimate"/> exceeds the memory of <paramref name="device"/>
    /// (<see cref="ScoringOptions.MemoryBudgetBytes"/> when set, else <see cref="MemoryPreflight.AvailableBytes(DeviceType)"/>);
    /// nothing when <see cref="MemoryPreflight.Skip"/> is set or a GPU's memory is unknown.
    /// </summary>
    /// <param name="config">The model's config.</param>
    /// <param name="options">Metrics and batch size.</param>
    /// <param name="sequences">Calibration windows.</param>
    /// <param name="length">Tokens per window.</param>
    /// <param name="device">Where the scoring runs.</param>
    /// <param name="lower">How the caller names the settings that lower the estimate, appended to the message.</param>
    /// <exception cref="MemoryPreflightException">The estimate exceeds the available memory.</exception>
    public static void EnsureFits(LlamaConfig config, ScoringOptions options, int sequences, int length, DeviceType device, string? lower = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        MemoryEstimate estimate = Estimate(config, options, sequences, length);
        string what = string.Create(CultureInfo.InvariantCulture,
            $"Scoring with {string.Join(", ", options.Metrics)} on {sequences} x {length} calibration tokens in batches of {Math.Min(options.BatchSize, Math.Max(sequences, 1))} (weights held at once {ByteSize.Format(estimate.Weights)}, gradients {ByteSize.Format(estimate.Gradients)}, activations {ByteSize.Format(estimate.Activations)}{(lower is null ? string.Empty : "; " + lower)})");
        if (options.MemoryBudgetBytes is { } budget)
        {
            MemoryPreflight.EnsureFits(estimate.Total, what, budget);
        }
        else
        {
            MemoryPreflight.EnsureFits(estimate.Total, what, device);
        }
    }

    /// <summary>The float32 weights the streamed layer pass holds at once: the embedding, the head, or a layer and a read buffer.</summary>
    internal static long StreamedWeightBytes(LlamaConfig config)
    {
        IReadOnlyList<TensorSpec> tensors = LlamaTensorLayout.Tensors(config);
        long layer = tensors.Where(s => s.Layer is not null).GroupBy(s => s.Layer).Select(g => g.Sum(s => s.ElementCount) + g.Max(s => s.ElementCount)).DefaultIfEmpty(0).Max();
        long outer = (long)config.VocabSize * config.HiddenSize;
        return Float * Math.Max(layer, outer);
    }
}
