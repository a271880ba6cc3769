using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring.Metrics;

/// <summary>
/// The angular distance of Gromov et al. (<see cref="ScoringMetrics.AngularN"/>): arccos(cos(input of layer l, input of
/// layer l + n)) / π averaged over calibration tokens; each layer scores the smallest distance of any window of n layers
/// that contains it (<see cref="LayerSimilarity.LayerScoresFromWindows"/>). <c>angular-3</c> fixes n = 3;
/// <c>angular-n</c> takes n from <see cref="ScoringOptions.AngularSpan"/>.
/// </summary>
public sealed class AngularDistanceMetric : ILayerPassMetric
{
    private const string Prefix = "angular-";

    /// <inheritdoc/>
    public string Name => ScoringMetrics.AngularN;

    /// <inheritdoc/>
    public string Description => "arccos(cos(input of l, input of l+n)) / pi";

    /// <inheritdoc/>
    public MetricNeeds Needs => MetricNeeds.Activations;

    /// <inheritdoc/>
    public ScoredUnits Scores => ScoredUnits.Layers;

    /// <summary>
    /// The span n of an angular metric name: the number in <c>angular-3</c>, or <paramref name="defaultSpan"/> for
    /// <c>angular-n</c>.
    /// </summary>
    public static int Span(string name, int defaultSpan)
    {
        ArgumentNullException.ThrowIfNull(name);
        return TryParseSpan(name, out int span) ? span : defaultSpan;
    }

    /// <inheritdoc/>
    public bool Accepts(string name) => name == Name || TryParseSpan(name, out _);

    /// <inheritdoc/>
    public string ResultName(string name, ScoringOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return string.Create(CultureInfo.InvariantCulture, $"{Prefix}{Span(name, options.AngularSpan)}");
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">The span is not in [1, L].</exception>
    public LayerPassObserver CreateObserver(MetricContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        int layers = context.Config.NumHiddenLayers;
        int span = Span(context.Name, context.Options.AngularSpan);
        if (span < 1 || span > layers)
        {
            throw new ArgumentException($"Scoring metric '{context.Name}': angular span {span} is outside [1, {layers}] (the layer count); set the N of angular-N or ScoringOptions.AngularSpan.", nameof(context));
        }

        return new Observer(layers, span, context.Options.BatchSize);
    }

    private static bool TryParseSpan(string name, out int span)
    {
        span = 0;
        return name.StartsWith(Prefix, StringComparison.Ordinal)
            && int.TryParse(name.AsSpan(Prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out span)
            && span > 0;
    }

    /// <summary>Holds the last <c>span</c> boundary states (handles on the pass's tensors) to measure each window when it closes.</summary>
    private sealed class Observer(int layers, int span, int batchSize) : LayerPassObserver
    {
        private readonly double[] _windows = new double[layers - span + 1];
        private readonly Dictionary<int, Tensor> _states = [];

        public override void OnHiddenStates(int layer, Tensor states)
        {
            _states[layer] = states.detach();
            if (layer - span >= 0)
            {
                _windows[layer - span] = MeanAngle(_states[layer - span], states);
            }

            // The next window starts at layer + 1 - span: earlier states are no longer needed.
            foreach (int old in _states.Keys.Where(k => k <= layer - span).ToList())
            {
                _states[old].Dispose();
                _states.Remove(old);
            }
        }

        public override UnitScores Finish() => new() { Layers = LayerSimilarity.LayerScoresFromWindows(_windows, layers, span) };

        protected override void Dispose(bool disposing)
        {
            foreach (Tensor state in _states.Values)
            {
                state.Dispose();
            }

            _states.Clear();
            base.Dispose(disposing);
        }

        /// <summary>Mean angle over all tokens, batch by batch so that the float64 copies stay small.</summary>
        private double MeanAngle(Tensor earlier, Tensor later)
        {
            double sum = 0;
            long tokens = 0;
            long sequences = earlier.shape[0];
            for (long start = 0; start < sequences; start += batchSize)
            {
                using var scope = torch.NewDisposeScope();
                long count = Math.Min(batchSize, sequences - start);
                var (s, n) = LayerSimilarity.AngleSum(earlier.narrow(0, start, count), later.narrow(0, start, count));
                sum += s;
                tokens += n;
            }

            return sum / tokens;
        }
    }
}
