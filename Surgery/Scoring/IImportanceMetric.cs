using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>What a metric reads. It decides whether calibration data is required and how much memory a run takes.</summary>
[Flags]
public enum MetricNeeds
{
    /// <summary>Nothing but the architecture (priors, baselines).</summary>
    None = 0,

    /// <summary>The weights.</summary>
    Weights = 1,

    /// <summary>Activations of calibration data running forward through the model.</summary>
    Activations = 2,

    /// <summary>Gradients of the language-model loss with respect to the weights (which must fit in memory twice).</summary>
    Gradients = 4,

    /// <summary>Gates (masks) in the forward pass, trained on the language-model loss with the weights frozen.</summary>
    Masks = 8,
}

/// <summary>The structures a metric scores: the parts of <see cref="ImportanceScores"/> it fills.</summary>
[Flags]
public enum ScoredUnits
{
    /// <summary>Nothing.</summary>
    None = 0,

    /// <summary>Whole decoder layers (<see cref="ImportanceScores.Layers"/>).</summary>
    Layers = 1,

    /// <summary>Query heads (<see cref="ImportanceScores.Heads"/>).</summary>
    Heads = 2,

    /// <summary>KV groups (<see cref="ImportanceScores.KvGroups"/>).</summary>
    KvGroups = 4,

    /// <summary>FFN neurons (<see cref="ImportanceScores.Neurons"/>).</summary>
    Neurons = 8,

    /// <summary>Hidden (residual stream) channels (<see cref="ImportanceScores.HiddenChannels"/>).</summary>
    HiddenChannels = 16,
}

/// <summary>
/// An importance metric, registered in <see cref="ScoringMetrics"/> under <see cref="Name"/>. A metric also implements
/// exactly one of <see cref="IArchitectureMetric"/> (needs nothing), <see cref="ILayerPassMetric"/> (observes the shared
/// layer-by-layer pass over the teacher) or <see cref="IWholeModelMetric"/> (runs on the whole model in memory); that
/// choice is how it computes, and <see cref="ImportanceScorer"/> runs every kind without knowing any metric by name.
/// </summary>
public interface IImportanceMetric
{
    /// <summary>Registry name, e.g. <c>wanda</c>: what <see cref="ScoringOptions.Metrics"/>, the CLI and recipes accept.</summary>
    string Name { get; }

    /// <summary>One line saying what it measures.</summary>
    string Description { get; }

    /// <summary>What computing it reads; anything beyond <see cref="MetricNeeds.Weights"/> requires calibration data.</summary>
    MetricNeeds Needs { get; }

    /// <summary>The parts of <see cref="ImportanceScores"/> it fills; scoring checks that the result has exactly these.</summary>
    ScoredUnits Scores { get; }

    /// <summary>
    /// Whether <paramref name="name"/> asks for this metric. Parametrised metrics accept a family of names (e.g.
    /// <c>angular-3</c>); by default only <see cref="Name"/>.
    /// </summary>
    bool Accepts(string name) => string.Equals(name, Name, StringComparison.Ordinal);

    /// <summary>The metric name the scores for <paramref name="name"/> carry (e.g. <c>angular-n</c> with a span of 2 gives <c>angular-2</c>); by default <see cref="Name"/>.</summary>
    string ResultName(string name, ScoringOptions options) => Name;
}

/// <summary>A metric that needs only the architecture (<see cref="MetricNeeds.None"/>).</summary>
public interface IArchitectureMetric : IImportanceMetric
{
    /// <summary>Scores the architecture of <see cref="MetricContext.Config"/>.</summary>
    UnitScores Score(MetricContext context);
}

/// <summary>
/// A metric computed in the one layer-by-layer pass that all such metrics share: one decoder layer's weights in memory
/// at a time (streamed from disk unless the model is resident), calibration data run through the layer's own forward
/// pass when any of them needs <see cref="MetricNeeds.Activations"/>. Needs at most weights and activations.
/// </summary>
public interface ILayerPassMetric : IImportanceMetric
{
    /// <summary>Creates the observer that accumulates this metric during one pass; called before the pass starts.</summary>
    /// <exception cref="ArgumentException">A setting in <see cref="MetricContext.Options"/> or the name does not fit the model; the message names it.</exception>
    LayerPassObserver CreateObserver(MetricContext context);
}

/// <summary>
/// A metric that runs on the whole model in memory (loss with a layer skipped, gradients, trained masks). Scoring
/// loads the model once for all of them, after checking that the estimate fits the memory budget.
/// </summary>
public interface IWholeModelMetric : IImportanceMetric
{
    /// <summary>
    /// Scores <paramref name="model"/> on <see cref="MetricContext.Data"/> (never null here). The model's parameters,
    /// gradients and training flags must be as they were when it returns.
    /// </summary>
    UnitScores Score(LlamaForCausalLM model, MetricContext context, IProgress<ScoringProgress>? progress, CancellationToken cancellationToken);
}

/// <summary>What a metric is computed for.</summary>
/// <param name="Name">The name as requested (e.g. <c>angular-3</c>), which a parametrised metric reads its parameter from.</param>
/// <param name="Config">The model's architecture.</param>
/// <param name="Options">The scoring options.</param>
/// <param name="Data">Calibration data; null when none was given (then no requested metric needs it).</param>
/// <param name="Device">Where tensors are computed.</param>
public sealed record MetricContext(string Name, LlamaConfig Config, ScoringOptions Options, CalibrationData? Data, Device Device);
