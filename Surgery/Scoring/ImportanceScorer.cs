using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// Scores a model's layers, heads, KV groups, FFN neurons and hidden channels with the metrics of
/// <see cref="ScoringMetrics"/>, in as few passes as possible: weight and forward metrics share one layer-by-layer pass
/// (streamed from disk unless the model is in memory anyway); skip-loss, Taylor and learned masks load the whole model
/// once, after checking that it fits the memory budget.
/// </summary>
public static partial class ImportanceScorer
{
    /// <summary>Scores the checkpoint in <paramref name="checkpointDirectory"/> (<c>config.json</c> plus safetensors).</summary>
    /// <returns>One <see cref="ImportanceScores"/> per requested metric, in the order of <see cref="ScoringOptions.Metrics"/>.</returns>
    /// <exception cref="ArgumentException">An option is invalid, or data is missing for a metric that needs it.</exception>
    /// <exception cref="InvalidOperationException">A whole-model metric would not fit the memory budget (checked before any work).</exception>
    public static async Task<IReadOnlyList<ImportanceScores>> ScoreAsync(string checkpointDirectory, CalibrationData? data, ScoringOptions options, IProgress<ScoringProgress>? progress = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        using CheckpointWeightSource source = CheckpointWeightSource.Open(checkpointDirectory);
        return await ScoreAsync(source, data, options, progress, logger, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Scores the weights of <paramref name="source"/>; see <see cref="ScoreAsync(string, CalibrationData?, ScoringOptions, IProgress{ScoringProgress}?, ILogger?, CancellationToken)"/>.</summary>
    public static Task<IReadOnlyList<ImportanceScores>> ScoreAsync(IWeightSource source, CalibrationData? data, ScoringOptions options, IProgress<ScoringProgress>? progress = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        return Task.Run<IReadOnlyList<ImportanceScores>>(() => Score(null, source, data, options, progress, logger ?? NullLogger.Instance, cancellationToken), cancellationToken);
    }

    /// <summary>Scores a model already in memory (computing in its dtype and on its device).</summary>
    public static Task<IReadOnlyList<ImportanceScores>> ScoreAsync(LlamaForCausalLM model, CalibrationData? data, ScoringOptions options, IProgress<ScoringProgress>? progress = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        return Task.Run<IReadOnlyList<ImportanceScores>>(() => Score(model, null, data, options, progress, logger ?? NullLogger.Instance, cancellationToken), cancellationToken);
    }

    private static List<ImportanceScores> Score(LlamaForCausalLM? model, IWeightSource? source, CalibrationData? data, ScoringOptions options, IProgress<ScoringProgress>? progress, ILogger logger, CancellationToken cancellationToken)
    {
        LlamaConfig config = model?.Config ?? source!.Config;
        string location = model is not null ? "model in memory" : source!.Location;
        var requested = options.Metrics.Select(name => (Name: name, Metric: ScoringMetrics.Get(name))).ToList();
        bool NeedsData(ScoringMetric m) => m.Requirement is MetricRequirement.Forward or MetricRequirement.ResidentForward or MetricRequirement.Gradients;
        if (data is null && requested.FirstOrDefault(r => NeedsData(r.Metric)) is { Name: not null } missing)
        {
            throw new ArgumentException($"Scoring metric '{missing.Name}' needs calibration data, but none was given.", nameof(data));
        }

        var request = new ForwardRequest
        {
            Magnitudes = requested.Any(r => r.Metric.Name is ScoringMetrics.L1 or ScoringMetrics.L2),
            Activations = requested.Any(r => r.Metric.Name == ScoringMetrics.Activation),
            Wanda = requested.Any(r => r.Metric.Name == ScoringMetrics.Wanda),
            BlockInfluence = requested.Any(r => r.Metric.Name == ScoringMetrics.BlockInfluence),
            AngularSpans = [.. requested.Where(r => r.Metric.Name == ScoringMetrics.AngularN).Select(r => ScoringMetrics.AngularSpan(r.Name, options.AngularSpan)).Distinct()],
        };
        var wholeModel = requested.Where(r => r.Metric.Requirement is MetricRequirement.ResidentForward or MetricRequirement.Gradients).Select(r => r.Name).ToList();
        Device device = model?.Device ?? options.Device ?? torch.CPU;

        LlamaForCausalLM? loaded = null;
        try
        {
            if (wholeModel.Count > 0)
            {
                bool backward = requested.Any(r => r.Metric.Requirement == MetricRequirement.Gradients);
                bool gradients = requested.Any(r => r.Metric.Name == ScoringMetrics.Taylor);
                int batch = Math.Min(options.BatchSize, data!.SequenceCount);
                MemoryEstimate estimate = WholeModelScoring.Estimate(config, batch, data.SequenceLength, backward, gradients, modelInMemory: model is not null);
                WholeModelScoring.EnsureFits(estimate, WholeModelScoring.ResolveBudget(options.MemoryBudgetBytes), string.Join(", ", wholeModel), batch, data.SequenceLength);
                if (model is null)
                {
                    LogLoading(logger, location, estimate.Total);
                    loaded = LoadWholeModel(source!, device);
                    model = loaded;
                }
            }

            ForwardResults forward = new();
            if (request.Magnitudes || request.NeedsForward)
            {
                if (model is not null)
                {
                    using var access = new ResidentModelAccess(model, location);
                    forward = CalibrationRunner.Run(access, data, request, options.BatchSize, progress, logger, cancellationToken);
                }
                else
                {
                    using var access = new StreamingModelAccess(source!, device);
                    forward = CalibrationRunner.Run(access, data, request, options.BatchSize, progress, logger, cancellationToken);
                }
            }

            string provenance = data is null
                ? location
                : string.Create(CultureInfo.InvariantCulture, $"{location}; calibration {data.SequenceCount} x {data.SequenceLength} tokens");
            var results = new List<ImportanceScores>();
            foreach (var (name, metric) in requested)
            {
                cancellationToken.ThrowIfCancellationRequested();
                LogMetric(logger, name);
                UnitScores scores = metric.Name switch
                {
                    ScoringMetrics.L1 => forward.L1!,
                    ScoringMetrics.L2 => forward.L2!,
                    ScoringMetrics.Activation => forward.Activation!,
                    ScoringMetrics.Wanda => forward.Wanda!,
                    ScoringMetrics.BlockInfluence => new UnitScores { Layers = forward.BlockInfluence },
                    ScoringMetrics.AngularN => Angular(forward, config, ScoringMetrics.AngularSpan(name, options.AngularSpan)),
                    ScoringMetrics.SkipLoss => new UnitScores { Layers = WholeModelScoring.SkipLoss(model!, data!, options.BatchSize, progress, cancellationToken) },
                    ScoringMetrics.Taylor => WholeModelScoring.Taylor(model!, data!, options.BatchSize, progress, cancellationToken),
                    ScoringMetrics.LearnedMask => WholeModelScoring.LearnedMask(model!, data!, options, progress, cancellationToken),
                    ScoringMetrics.Random => RandomScores(config, options.Seed),
                    ScoringMetrics.PositionPrior => new UnitScores { Layers = LayerPriors.PositionPrior(config.NumHiddenLayers) },
                    ScoringMetrics.Uniform => new UnitScores { Layers = LayerPriors.UniformStride(config.NumHiddenLayers) },
                    _ => throw new InvalidOperationException($"Metric '{name}' is registered but not implemented."),
                };
                string metricName = metric.Name == ScoringMetrics.AngularN
                    ? string.Create(CultureInfo.InvariantCulture, $"angular-{ScoringMetrics.AngularSpan(name, options.AngularSpan)}")
                    : metric.Name;
                results.Add(ToImportanceScores(metricName, provenance, scores));
            }

            return results;
        }
        finally
        {
            loaded?.Dispose();
        }
    }

    /// <summary>Converts plain-array scores into the <see cref="ImportanceScores"/> record.</summary>
    public static ImportanceScores ToImportanceScores(string metric, string source, UnitScores scores)
    {
        ArgumentNullException.ThrowIfNull(scores);
        return new ImportanceScores
        {
            Metric = metric,
            Source = source,
            Layers = scores.Layers,
            Heads = scores.Heads is null ? null : ScoreMatrix.FromRows(scores.Heads),
            KvGroups = scores.KvGroups is null ? null : ScoreMatrix.FromRows(scores.KvGroups),
            Neurons = scores.Neurons is null ? null : ScoreMatrix.FromRows(scores.Neurons),
            HiddenChannels = scores.Channels,
        };
    }

    /// <summary>Seeded uniform random scores for every component (the same seed gives the same scores).</summary>
    public static UnitScores RandomScores(LlamaConfig config, int seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        var random = new Random(seed);
        int layers = config.NumHiddenLayers;
        return new UnitScores
        {
            Layers = LayerPriors.Random(layers, random),
            Heads = [.. Enumerable.Range(0, layers).Select(_ => LayerPriors.Random(config.NumAttentionHeads, random))],
            KvGroups = [.. Enumerable.Range(0, layers).Select(_ => LayerPriors.Random(config.NumKeyValueHeads, random))],
            Neurons = [.. Enumerable.Range(0, layers).Select(_ => LayerPriors.Random(config.IntermediateSize, random))],
            Channels = LayerPriors.Random(config.HiddenSize, random),
        };
    }

    private static UnitScores Angular(ForwardResults forward, LlamaConfig config, int span) =>
        new() { Layers = LayerSimilarity.LayerScoresFromWindows(forward.AngularDistances[span], config.NumHiddenLayers, span) };

    private static LlamaForCausalLM LoadWholeModel(IWeightSource source, Device device)
    {
        var model = new LlamaForCausalLM(source.Config, ScalarType.Float32, device);
        try
        {
            // The layout is the contract; LoadWeights still checks every tensor's shape as it is read.
            var shapes = LlamaTensorLayout.Tensors(source.Config).ToDictionary(s => s.Name, s => s.Shape, StringComparer.Ordinal);
            model.LoadWeights(shapes, source.ReadTensor, source.Location);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Loading the whole model from {Location} for whole-model metrics (about {Bytes} bytes)")]
    private static partial void LogLoading(ILogger logger, string location, long bytes);

    [LoggerMessage(Level = LogLevel.Information, Message = "Scoring metric {Metric}")]
    private static partial void LogMetric(ILogger logger, string metric);
}
