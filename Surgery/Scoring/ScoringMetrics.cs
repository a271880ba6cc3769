using System.Globalization;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>What a metric needs from the model, which decides how scoring runs it.</summary>
public enum MetricRequirement
{
    /// <summary>Nothing but the architecture (priors, random baseline).</summary>
    Architecture,

    /// <summary>The weights only; computed layer by layer while streaming.</summary>
    Weights,

    /// <summary>Forward statistics on calibration data; computed layer by layer while streaming.</summary>
    Forward,

    /// <summary>Whole-model forward passes (e.g. with a layer skipped); the model must fit in memory.</summary>
    ResidentForward,

    /// <summary>Gradients of the LM loss; the model, its gradients and activations must fit in memory.</summary>
    Gradients,
}

/// <summary>A registered importance metric.</summary>
/// <param name="Name">Registry name, e.g. <c>wanda</c>.</param>
/// <param name="Requirement">What computing it needs.</param>
/// <param name="Description">One line saying what it measures.</param>
public sealed record ScoringMetric(string Name, MetricRequirement Requirement, string Description);

/// <summary>The metric registry: names accepted by <see cref="ScoringOptions.Metrics"/>.</summary>
public static class ScoringMetrics
{
    /// <summary>Magnitude: sum of |w| over each unit's weights (LLM-Pruner L1).</summary>
    public const string L1 = "l1";

    /// <summary>Magnitude: L2 norm of each unit's weights (LLM-Pruner L2).</summary>
    public const string L2 = "l2";

    /// <summary>Minitron activation importance: mean |activation| per head output, neuron and normed channel.</summary>
    public const string Activation = "activation";

    /// <summary>Wanda: |W| times the L2 norm of its input column over calibration tokens, summed per unit.</summary>
    public const string Wanda = "wanda";

    /// <summary>First-order Taylor: |w · ∂L/∂w| summed per unit (LLM-Pruner element-wise first order).</summary>
    public const string Taylor = "taylor";

    /// <summary>Sigmoid gates trained on the LM loss with a sparsity penalty; the gate logits are the scores.</summary>
    public const string LearnedMask = "learned-mask";

    /// <summary>Seeded uniform random scores: the baseline every metric should beat.</summary>
    public const string Random = "random";

    /// <summary>ShortGPT Block Influence: 1 - cos(layer input, layer output).</summary>
    public const string BlockInfluence = "block-influence";

    /// <summary>Angular distance between the inputs of layer l and l + n (Gromov et al.); <c>angular-3</c> fixes n = 3.</summary>
    public const string AngularN = "angular-n";

    /// <summary>Increase of the LM loss when the layer is skipped.</summary>
    public const string SkipLoss = "skip-loss";

    /// <summary>PanGu-π Pro's prior: first and last layers highest, middle lowest.</summary>
    public const string PositionPrior = "position-prior";

    /// <summary>Uniform stride: the top-k layers are spread evenly for every k.</summary>
    public const string Uniform = "uniform";

    private const string AngularPrefix = "angular-";

    /// <summary>Every registered metric.</summary>
    public static IReadOnlyList<ScoringMetric> All { get; } =
    [
        new(L1, MetricRequirement.Weights, "sum of |w| over each unit's weights"),
        new(L2, MetricRequirement.Weights, "L2 norm of each unit's weights"),
        new(Activation, MetricRequirement.Forward, "mean |activation| per head output, FFN neuron and normed hidden channel"),
        new(Wanda, MetricRequirement.Forward, "|W| times the input column's L2 norm, summed per unit"),
        new(Taylor, MetricRequirement.Gradients, "|w * dL/dw| summed per unit"),
        new(LearnedMask, MetricRequirement.Gradients, "logits of sigmoid gates trained with a kept-fraction penalty"),
        new(Random, MetricRequirement.Architecture, "seeded uniform random scores"),
        new(BlockInfluence, MetricRequirement.Forward, "1 - cos(layer input, layer output)"),
        new(AngularN, MetricRequirement.Forward, "arccos(cos(input of l, input of l+n)) / pi"),
        new(SkipLoss, MetricRequirement.ResidentForward, "LM loss increase when the layer is skipped"),
        new(PositionPrior, MetricRequirement.Architecture, "first and last layers highest, middle lowest"),
        new(Uniform, MetricRequirement.Architecture, "uniform stride over the depth"),
    ];

    /// <summary>Looks a metric up by name; <c>angular-N</c> with a number N resolves to <see cref="AngularN"/>.</summary>
    /// <exception cref="ArgumentException">The name is not registered; the message lists the registered names.</exception>
    public static ScoringMetric Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        string key = TryParseAngularSpan(name, out _) ? AngularN : name;
        return All.FirstOrDefault(m => string.Equals(m.Name, key, StringComparison.Ordinal))
            ?? throw new ArgumentException($"Unknown scoring metric '{name}'. Known metrics: {string.Join(", ", All.Select(m => m.Name))} (angular-N with a number N also works).", nameof(name));
    }

    /// <summary>
    /// The span n of an angular metric name: the number in <c>angular-3</c>, or <paramref name="defaultSpan"/> for
    /// <c>angular-n</c>.
    /// </summary>
    public static int AngularSpan(string name, int defaultSpan)
    {
        ArgumentNullException.ThrowIfNull(name);
        return TryParseAngularSpan(name, out int span) ? span : defaultSpan;
    }

    private static bool TryParseAngularSpan(string name, out int span)
    {
        span = 0;
        return name.StartsWith(AngularPrefix, StringComparison.Ordinal)
            && int.TryParse(name.AsSpan(AngularPrefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out span)
            && span > 0;
    }
}
