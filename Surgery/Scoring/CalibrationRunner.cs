using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// Collects everything the weight and forward metrics need in ONE pass over the layers: layer l's weights are loaded
/// (streamed from a <see cref="IWeightSource"/>, or taken from a model in memory), every calibration sequence goes
/// through it, and its statistics and weight rollups are taken before moving on. Memory: one layer's weights, the hidden
/// states [N, T, D] of all calibration sequences, plus n earlier states for angular distances of span n.
/// </summary>
public static partial class CalibrationRunner
{
    /// <summary>Runs the pass streaming from <paramref name="source"/>, one decoder layer in memory at a time.</summary>
    /// <param name="source">The weights.</param>
    /// <param name="data">Calibration sequences; may be null when only <see cref="ForwardRequest.Magnitudes"/> is asked.</param>
    /// <param name="request">What to collect.</param>
    /// <param name="batchSize">Sequences per forward call.</param>
    /// <param name="device">Compute device; null for the CPU.</param>
    /// <param name="progress">Receives one report per layer.</param>
    /// <param name="logger">Log; null for none.</param>
    /// <param name="cancellationToken">Checked between batches.</param>
    public static Task<ForwardResults> RunAsync(IWeightSource source, CalibrationData? data, ForwardRequest request, int batchSize = 4, Device? device = null, IProgress<ScoringProgress>? progress = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        return Task.Run(
            () =>
            {
                using var access = new StreamingModelAccess(source, device ?? torch.CPU);
                return Run(access, data, request, batchSize, progress, logger ?? NullLogger.Instance, cancellationToken);
            },
            cancellationToken);
    }

    /// <summary>Runs the pass on a model in memory (computing in the model's dtype and device).</summary>
    public static Task<ForwardResults> RunAsync(LlamaForCausalLM model, CalibrationData? data, ForwardRequest request, int batchSize = 4, IProgress<ScoringProgress>? progress = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        return Task.Run(
            () =>
            {
                using var access = new ResidentModelAccess(model, "model in memory");
                return Run(access, data, request, batchSize, progress, logger ?? NullLogger.Instance, cancellationToken);
            },
            cancellationToken);
    }

    internal static ForwardResults Run(ModelAccess access, CalibrationData? data, ForwardRequest request, int batchSize, IProgress<ScoringProgress>? progress, ILogger logger, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        LlamaConfig config = access.Config;
        if (request.NeedsForward)
        {
            if (data is null)
            {
                throw new ArgumentException("Forward metrics (activation, wanda, block-influence, angular) need calibration data, but none was given.", nameof(data));
            }

            CheckTokens(data, config);
        }

        foreach (int span in request.AngularSpans)
        {
            if (span < 1 || span > config.NumHiddenLayers)
            {
                throw new ArgumentException($"Angular span {span} is outside [1, {config.NumHiddenLayers}] (the layer count).", nameof(request));
            }
        }

        int layers = config.NumHiddenLayers;
        using var noGrad = torch.no_grad();
        var collector = new Collector(config, request);
        LogStarted(logger, access.Location, layers, data?.SequenceCount ?? 0, data?.SequenceLength ?? 0);

        // Embedding-side contributions to hidden-channel magnitudes.
        Tensor? hidden = null; // [N, T, D]
        using (Tensor embedding = access.ReadEmbedding())
        {
            collector.AddGlobalMatrix(embedding);
            if (request.NeedsForward)
            {
                hidden = EmbedAll(embedding, data!, access.Device); // [N, T, D]
            }
        }

        int maxSpan = request.AngularSpans.DefaultIfEmpty(0).Max();
        var states = new Dictionary<int, Tensor>();
        if (hidden is not null && maxSpan > 0)
        {
            states[0] = hidden;
        }

        RotaryTables? rope = request.NeedsForward ? access.Rotary.CreateTables(0, data!.SequenceLength, hidden!.dtype, access.Device) : null;
        using var masks = new AttentionMasks(); // every batch of every layer has the same shape: one mask per window
        try
        {
            for (int l = 0; l < layers; l++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                LlamaDecoderLayer layer = access.Layer(l);
                collector.AddLayerWeights(l, layer);
                if (hidden is not null)
                {
                    using var statistics = new LayerActivationStatistics(config, access.Device);
                    LayerTaps taps = statistics.Taps;
                    Tensor next = torch.empty_like(hidden); // [N, T, D]
                    double cosineSum = 0;
                    long tokens = 0;
                    foreach (var (start, count) in data!.Batches(batchSize))
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        using var scope = torch.NewDisposeScope();
                        Tensor input = hidden.narrow(0, start, count); // [B, T, D]
                        Tensor output = layer.forward(input, rope!, null, masks, taps); // [B, T, D]
                        next.narrow(0, start, count).copy_(output);
                        if (request.BlockInfluence)
                        {
                            var (sum, n) = LayerSimilarity.CosineSum(input, output);
                            cosineSum += sum;
                            tokens += n;
                        }
                    }

                    collector.AddLayerStatistics(l, layer, statistics, request.BlockInfluence ? 1.0 - (cosineSum / tokens) : 0);
                    if (maxSpan > 0)
                    {
                        states[l + 1] = next;
                        foreach (int span in request.AngularSpans.Distinct())
                        {
                            if (l + 1 - span >= 0)
                            {
                                collector.AddAngular(span, l + 1 - span, AngularMean(states[l + 1 - span], next, batchSize, data.SequenceCount));
                            }
                        }

                        foreach (int old in states.Keys.Where(k => k <= l + 1 - maxSpan).ToList())
                        {
                            states[old].Dispose();
                            states.Remove(old);
                        }
                    }
                    else
                    {
                        hidden.Dispose();
                    }

                    hidden = next;
                }

                LogLayer(logger, l + 1, layers);
                progress?.Report(new ScoringProgress("forward statistics", l + 1, layers));
            }

            using (Tensor finalNorm = access.ReadFinalNorm())
            {
                collector.AddFinalNorm(finalNorm, hidden, config.RmsNormEps);
            }

            using (Tensor? head = access.ReadUntiedHead())
            {
                if (head is not null)
                {
                    collector.AddGlobalMatrix(head);
                }
            }

            return collector.Finish();
        }
        finally
        {
            rope?.Dispose();
            foreach (Tensor state in states.Values)
            {
                if (!ReferenceEquals(state, hidden))
                {
                    state.Dispose();
                }
            }

            hidden?.Dispose();
        }
    }

    internal static void CheckTokens(CalibrationData data, LlamaConfig config)
    {
        if (data.MaxTokenId >= config.VocabSize)
        {
            throw new ArgumentException($"Calibration data holds token id {data.MaxTokenId}, outside the model's vocabulary of {config.VocabSize}.", nameof(data));
        }
    }

    private static Tensor EmbedAll(Tensor embedding, CalibrationData data, Device device)
    {
        using var scope = torch.NewDisposeScope();
        Tensor ids = data.Batch(0, data.SequenceCount, device); // [N, T]
        Tensor rows = embedding.index_select(0, ids.reshape(-1)); // [N*T, D]
        return rows.view(data.SequenceCount, data.SequenceLength, -1).contiguous().MoveToOuterDisposeScope(); // [N, T, D]
    }

    private static double AngularMean(Tensor earlier, Tensor later, int batchSize, int sequenceCount)
    {
        double sum = 0;
        long tokens = 0;
        for (int start = 0; start < sequenceCount; start += batchSize)
        {
            int count = Math.Min(batchSize, sequenceCount - start);
            var (s, n) = LayerSimilarity.AngleSum(earlier.narrow(0, start, count), later.narrow(0, start, count));
            sum += s;
            tokens += n;
        }

        return sum / tokens;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Collecting forward statistics of {Location}: {Layers} layers, {Sequences} x {Length} calibration tokens")]
    private static partial void LogStarted(ILogger logger, string location, int layers, int sequences, int length);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Layer {Done}/{Total} done")]
    private static partial void LogLayer(ILogger logger, int done, int total);

    /// <summary>Accumulates per-layer results into the requested score sets.</summary>
    private sealed class Collector
    {
        private readonly ForwardRequest _request;
        private readonly UnitAccumulator? _l1;
        private readonly UnitAccumulator? _l2;
        private readonly UnitAccumulator? _activation;
        private readonly UnitAccumulator? _wanda;
        private readonly double[] _blockInfluence;
        private readonly Dictionary<int, double[]> _angular;
        private readonly double[] _activationChannels;
        private long _activationChannelTerms;

        public Collector(LlamaConfig config, ForwardRequest request)
        {
            _request = request;
            if (request.Magnitudes)
            {
                _l1 = new UnitAccumulator(config);
                _l2 = new UnitAccumulator(config);
            }

            _activation = request.Activations ? new UnitAccumulator(config) : null;
            _wanda = request.Wanda ? new UnitAccumulator(config) : null;
            _blockInfluence = new double[config.NumHiddenLayers];
            _angular = request.AngularSpans.Distinct().ToDictionary(s => s, s => new double[config.NumHiddenLayers - s + 1]);
            _activationChannels = new double[config.HiddenSize];
        }

        public void AddGlobalMatrix(Tensor rowsByChannel)
        {
            if (_l1 is null || _l2 is null)
            {
                return;
            }

            using var scope = torch.NewDisposeScope();
            _l1.AddChannels(UnitRollup.ColumnSums(rowsByChannel.abs())); // [D]
            _l2.AddChannels(UnitRollup.ColumnSums(rowsByChannel.to_type(ScalarType.Float64).pow(2))); // [D]
        }

        public void AddLayerWeights(int layer, LlamaDecoderLayer weights)
        {
            if (_l1 is null || _l2 is null)
            {
                return;
            }

            using var scope = torch.NewDisposeScope();
            _l1.AddLayer(layer, LayerElementScores.FromLayer(weights, w => w.abs(), includeNorms: true));
            _l2.AddLayer(layer, LayerElementScores.FromLayer(weights, w => w.to_type(ScalarType.Float64).pow(2), includeNorms: true));
        }

        public void AddLayerStatistics(int layer, LlamaDecoderLayer weights, LayerActivationStatistics statistics, double blockInfluence)
        {
            using var scope = torch.NewDisposeScope();
            double tokens = statistics.Tokens;
            _blockInfluence[layer] = blockInfluence;
            if (_activation is not null)
            {
                _activation.SetLayer(layer, UnitRollup.ToArray(statistics.HeadOutputNorm / tokens), UnitRollup.ToArray(statistics.NeuronAbs / tokens));
                Add(_activationChannels, UnitRollup.ToArray(statistics.NormOutputAbs / tokens));
                _activationChannelTerms += 2;
            }

            if (_wanda is not null)
            {
                LlamaAttention a = weights.Attention;
                LlamaMlp m = weights.Mlp;
                Tensor attentionNorm = statistics.AttentionInputSquares.sqrt(); // [D]
                Tensor mlpNorm = statistics.MlpInputSquares.sqrt(); // [D]
                var elements = new LayerElementScores(
                    Wanda(a.QueryProjection.Weight, attentionNorm),
                    Wanda(a.KeyProjection.Weight, attentionNorm),
                    Wanda(a.ValueProjection.Weight, attentionNorm),
                    Wanda(a.OutputProjection.Weight, statistics.OutputProjectionInputSquares.sqrt()),
                    Wanda(m.GateProjection.Weight, mlpNorm),
                    Wanda(m.UpProjection.Weight, mlpNorm),
                    Wanda(m.DownProjection.Weight, statistics.DownProjectionInputSquares.sqrt()),
                    null,
                    null);
                _wanda.AddLayer(layer, elements);
            }

            static Tensor Wanda(Tensor weight, Tensor columnNorms) => weight.to_type(ScalarType.Float64).abs() * columnNorms.unsqueeze(0); // [out, in]
        }

        public void AddAngular(int span, int window, double distance) => _angular[span][window] = distance;

        public void AddFinalNorm(Tensor finalNorm, Tensor? hidden, double epsilon)
        {
            using var scope = torch.NewDisposeScope();
            if (_l1 is not null && _l2 is not null)
            {
                _l1.AddChannels(UnitRollup.ToArray(finalNorm.abs()));
                _l2.AddChannels(UnitRollup.ToArray(finalNorm.to_type(ScalarType.Float64).pow(2)));
            }

            if (_activation is not null && hidden is not null)
            {
                Tensor x = hidden.to_type(ScalarType.Float64); // [N, T, D]
                Tensor normed = x * (x.pow(2).mean([-1], keepdim: true) + epsilon).rsqrt() * finalNorm.to_type(ScalarType.Float64); // [N, T, D]
                Add(_activationChannels, UnitRollup.ToArray(normed.abs().mean([0, 1]))); // [D]
                _activationChannelTerms += 1;
            }
        }

        public ForwardResults Finish() => new()
        {
            L1 = _l1?.ToScores(sqrt: false),
            L2 = _l2?.ToScores(sqrt: true),
            Activation = _activation is null ? null : _activation.ToScores(sqrt: false) with
            {
                KvGroups = null,
                Channels = [.. _activationChannels.Select(v => v / Math.Max(1, _activationChannelTerms))],
            },
            Wanda = _wanda?.ToScores(sqrt: false),
            BlockInfluence = _request.BlockInfluence ? _blockInfluence : null,
            AngularDistances = _angular,
        };

        private static void Add(double[] total, double[] values)
        {
            for (int i = 0; i < total.Length; i++)
            {
                total[i] += values[i];
            }
        }
    }
}

/// <summary>Per-unit sums over layers for one metric.</summary>
internal sealed class UnitAccumulator
{
    private readonly LlamaConfig _config;
    private readonly double[][] _heads;
    private readonly double[][] _kvGroups;
    private readonly double[][] _neurons;
    private readonly double[] _channels;

    public UnitAccumulator(LlamaConfig config)
    {
        _config = config;
        int layers = config.NumHiddenLayers;
        _heads = [.. Enumerable.Range(0, layers).Select(_ => new double[config.NumAttentionHeads])];
        _kvGroups = [.. Enumerable.Range(0, layers).Select(_ => new double[config.NumKeyValueHeads])];
        _neurons = [.. Enumerable.Range(0, layers).Select(_ => new double[config.IntermediateSize])];
        _channels = new double[config.HiddenSize];
    }

    /// <summary>Adds one layer's element scores (e.g. one calibration batch's worth).</summary>
    public void AddLayer(int layer, LayerElementScores scores)
    {
        AddTo(_heads[layer], UnitRollup.Heads(scores, _config));
        AddTo(_kvGroups[layer], UnitRollup.KvGroups(scores, _config));
        AddTo(_neurons[layer], UnitRollup.Neurons(scores));
        AddTo(_channels, UnitRollup.Channels(scores));
    }

    public void SetLayer(int layer, double[] heads, double[] neurons)
    {
        _heads[layer] = heads;
        _neurons[layer] = neurons;
    }

    public void AddChannels(double[] values) => AddTo(_channels, values);

    /// <summary>The sums, or their square roots (for L2 norms).</summary>
    public UnitScores ToScores(bool sqrt) => new()
    {
        Heads = Map(_heads, sqrt),
        KvGroups = Map(_kvGroups, sqrt),
        Neurons = Map(_neurons, sqrt),
        Channels = Map([_channels], sqrt)[0],
    };

    private static void AddTo(double[] total, double[] values)
    {
        for (int i = 0; i < total.Length; i++)
        {
            total[i] += values[i];
        }
    }

    private static double[][] Map(double[][] rows, bool sqrt) => [.. rows.Select(r => r.Select(v => sqrt ? Math.Sqrt(v) : v).ToArray())];
}
