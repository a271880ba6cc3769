using ModelSurgery.Surgery.Scoring.Metrics;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// The metric registry: the names accepted by <see cref="ScoringOptions.Metrics"/>, the CLI and recipes, and the one list
/// they and the README's metric table are drawn from. A metric that ships is one file under <c>Scoring/Metrics/</c> plus
/// one line in <see cref="BuiltIn"/>; an application adds its own with <see cref="Register"/>.
/// </summary>
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

    private static readonly Lock Gate = new();
    private static IReadOnlyList<IImportanceMetric> _all;

    static ScoringMetrics()
    {
        BuiltIn = Checked(
        [
            new L1Metric(),
            new L2Metric(),
            new ActivationMetric(),
            new WandaMetric(),
            new TaylorMetric(),
            new LearnedMaskMetric(),
            new RandomMetric(),
            new BlockInfluenceMetric(),
            new AngularDistanceMetric(),
            new SkipLossMetric(),
            new PositionPriorMetric(),
            new UniformStrideMetric(),
        ]);
        _all = BuiltIn;
    }

    /// <summary>The metrics that ship with the library, in the order the docs list them.</summary>
    public static IReadOnlyList<IImportanceMetric> BuiltIn { get; }

    /// <summary>Every metric scoring accepts: <see cref="BuiltIn"/>, then those added by <see cref="Register"/>.</summary>
    public static IReadOnlyList<IImportanceMetric> All => Volatile.Read(ref _all);

    /// <summary>
    /// Adds <paramref name="metric"/> to <see cref="All"/>, so that its name works everywhere a metric name does (options,
    /// <see cref="Surgeon"/>, recipes), until the returned registration is disposed.
    /// </summary>
    /// <exception cref="ArgumentException">
    /// The name is empty or taken, or the declaration does not fit how the metric computes; the message says which.
    /// </exception>
    public static IDisposable Register(IImportanceMetric metric)
    {
        ArgumentNullException.ThrowIfNull(metric);
        lock (Gate)
        {
            _all = Checked([.. _all, metric]);
        }

        return new Registration(metric);
    }

    /// <summary>Looks a metric up by a name it accepts (<c>angular-3</c> resolves to <see cref="AngularN"/>).</summary>
    /// <exception cref="ArgumentException">No registered metric accepts the name; the message lists the registered names.</exception>
    public static IImportanceMetric Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return TryGet(name, out IImportanceMetric? metric)
            ? metric
            : throw new ArgumentException($"Unknown scoring metric '{name}'. Known metrics: {string.Join(", ", All.Select(m => m.Name))} (angular-N with a number N also works).");
    }

    /// <summary>Looks a metric up by a name it accepts; false when no registered metric accepts it.</summary>
    public static bool TryGet(string? name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IImportanceMetric? metric)
    {
        metric = name is null ? null : All.FirstOrDefault(m => m.Accepts(name));
        return metric is not null;
    }

    /// <summary>Whether computing <paramref name="metric"/> needs calibration data (anything beyond the weights).</summary>
    internal static bool NeedsCalibration(this IImportanceMetric metric) =>
        (metric.Needs & (MetricNeeds.Activations | MetricNeeds.Gradients | MetricNeeds.Masks)) != 0;

    /// <summary>Checks that names are unique and that each metric's declared needs fit the way it computes.</summary>
    private static IImportanceMetric[] Checked(IImportanceMetric[] metrics)
    {
        for (int i = 0; i < metrics.Length; i++)
        {
            IImportanceMetric metric = metrics[i];
            string name = metric.Name;
            if (string.IsNullOrWhiteSpace(name))
            {
                throw new ArgumentException($"Scoring metric {metric.GetType().Name} has no name.", nameof(metrics));
            }

            if (metrics.Take(i).FirstOrDefault(m => m.Accepts(name) || metric.Accepts(m.Name)) is { } taken)
            {
                throw new ArgumentException($"Scoring metric name '{name}' ({metric.GetType().Name}) clashes with the registered metric '{taken.Name}' ({taken.GetType().Name}).", nameof(metrics));
            }

            string? misfit = Misfit(metric);
            if (misfit is not null)
            {
                throw new ArgumentException($"Scoring metric '{name}' ({metric.GetType().Name}) {misfit}.", nameof(metrics));
            }
        }

        return metrics;

        static string? Misfit(IImportanceMetric metric)
        {
            int kinds = (metric is IArchitectureMetric ? 1 : 0) + (metric is ILayerPassMetric ? 1 : 0) + (metric is IWholeModelMetric ? 1 : 0);
            return metric switch
            {
                _ when kinds != 1 => "must implement exactly one of IArchitectureMetric, ILayerPassMetric and IWholeModelMetric",
                _ when metric.Scores == ScoredUnits.None => "declares no scored units",
                IArchitectureMetric when metric.Needs != MetricNeeds.None => $"needs {metric.Needs} but is an architecture metric, which reads nothing",
                ILayerPassMetric when metric.Needs == MetricNeeds.None || (metric.Needs & (MetricNeeds.Gradients | MetricNeeds.Masks)) != 0
                    => $"needs {metric.Needs} but the layer pass offers weights and activations",
                IWholeModelMetric when !metric.NeedsCalibration() => $"needs {metric.Needs} but runs on calibration data through the whole model",
                _ => null,
            };
        }
    }

    /// <summary>Removes its metric from <see cref="All"/> when disposed.</summary>
    private sealed class Registration(IImportanceMetric metric) : IDisposable
    {
        public void Dispose()
        {
            lock (Gate)
            {
                _all = [.. _all.Where(m => !ReferenceEquals(m, metric))];
            }
        }
    }
}
