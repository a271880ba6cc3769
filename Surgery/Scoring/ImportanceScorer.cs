using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// Scores a model's layers, heads, KV groups, FFN neurons and hidden channels with the metrics of
/// <see cref="ScoringMetrics"/>, in as few passes as possible: every <see cref="ILayerPassMetric"/> observes one shared
/// layer-by-layer pass (streamed from disk unless the model is in memory anyway); every <see cref="IWholeModelMetric"/>
/// runs on the whole model, loaded once after checking that it fits the memory budget; an
/// <see cref="IArchitectureMetric"/> reads nothing.
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
        options.ThrowIfInvalid();
        return Task.Run<IReadOnlyList<ImportanceScores>>(() => Score(null, source, data, options, progress, logger ?? NullLogger.Instance, cancellationToken), cancellationToken);
    }

    /// <summary>Scores a model already in memory (computing in its dtype and on its device).</summary>
    public static Task<IReadOnlyList<ImportanceScores>> ScoreAsync(LlamaForCausalLM model, CalibrationData? data, ScoringOptions options, IProgress<ScoringProgress>? progress = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        options.ThrowIfInvalid();
        return Task.Run<IReadOnlyList<ImportanceScores>>(() => Score(model, null, data, options, progress, logger ?? NullLogger.Instance, cancellationToken), cancellationToken);
    }

    private static List<ImportanceScores> Score(LlamaForCausalLM? model, IWeightSource? source, CalibrationData? data, ScoringOptions options, IProgress<ScoringProgress>? progress, ILogger logger, CancellationToken cancellationToken)
    {
        LlamaConfig config = model?.Config ?? source!.Config;
        string location = model is not null ? "model in memory" : source!.Location;
        Device device = model?.Device ?? ComputeDevice.Resolve(options.Device);
        var requested = options.Metrics.Select(name => (Name: name, Metric: ScoringMetrics.Get(name))).ToList();
        if (requested.FirstOrDefault(r => r.Metric.NeedsCalibration()) is { Name: not null } calibrated)
        {
            if (data is null)
            {
                throw new ArgumentException($"Scoring metric '{calibrated.Name}' needs calibration data, but none was given.", nameof(data));
            }

            CalibrationRunner.CheckTokens(data, config);
        }

        MetricContext Context(string name) => new(name, config, options, data, device);

        // Observers are made before any weight is read, so that a setting that does not fit the model fails first.
        var observers = new Dictionary<int, LayerPassObserver>();
        LlamaForCausalLM? loaded = null;
        try
        {
            for (int i = 0; i < requested.Count; i++)
            {
                if (requested[i].Metric is ILayerPassMetric layerPass)
                {
                    observers[i] = layerPass.CreateObserver(Context(requested[i].Name));
                }
            }

            var wholeModel = requested.Where(r => r.Metric is IWholeModelMetric).ToList();
            if (wholeModel.Count == 0 && model is null && observers.Count > 0)
            {
                // The streamed pass: one layer's weights plus every window's hidden states, checked before the first read.
                ScoringMemory.EnsureFits(config, options, data?.SequenceCount ?? 0, data?.SequenceLength ?? 0, device.type);
            }

            if (wholeModel.Count > 0)
            {
                MemoryEstimate estimate = EnsureFits(wholeModel, config, data!, options, modelInMemory: model is not null, device.type, logger);
                if (model is null)
                {
                    LogLoading(logger, location, estimate.Total);
                    loaded = LoadWholeModel(source!, device);
                    model = loaded;
                }
            }

            if (observers.Count > 0)
            {
                bool forward = observers.Keys.Any(i => requested[i].Metric.Needs.HasFlag(MetricNeeds.Activations));
                using ModelAccess access = model is not null ? new ResidentModelAccess(model, location) : new StreamingModelAccess(source!, device);
                CalibrationRunner.Run(access, data, forward, [.. observers.Values], options.BatchSize, progress, logger, cancellationToken);
            }

            string provenance = data is null
                ? location
                : string.Create(CultureInfo.InvariantCulture, $"{location}; calibration {data.SequenceCount} x {data.SequenceLength} tokens");
            var results = new List<ImportanceScores>();
            for (int i = 0; i < requested.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var (name, metric) = requested[i];
                LogMetric(logger, name);
                UnitScores scores = metric switch
                {
                    ILayerPassMetric => observers[i].Finish(),
                    IWholeModelMetric whole => whole.Score(model!, Context(name), progress, cancellationToken),
                    IArchitectureMetric architecture => architecture.Score(Context(name)),
                    _ => throw new InvalidOperationException($"Scoring metric '{name}' implements none of IArchitectureMetric, ILayerPassMetric and IWholeModelMetric."),
                };
                results.Add(ToImportanceScores(metric.ResultName(name, options), provenance, EnsureDeclared(name, metric, scores)));
            }

            return results;
        }
        finally
        {
            foreach (LayerPassObserver observer in observers.Values)
            {
                observer.Dispose();
            }

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

    /// <summary>A metric must fill exactly the parts it declares, so that its declaration can be trusted (docs, planners).</summary>
    private static UnitScores EnsureDeclared(string name, IImportanceMetric metric, UnitScores scores)
    {
        ScoredUnits produced = (scores.Layers is null ? ScoredUnits.None : ScoredUnits.Layers)
            | (scores.Heads is null ? ScoredUnits.None : ScoredUnits.Heads)
            | (scores.KvGroups is null ? ScoredUnits.None : ScoredUnits.KvGroups)
            | (scores.Neurons is null ? ScoredUnits.None : ScoredUnits.Neurons)
            | (scores.Channels is null ? ScoredUnits.None : ScoredUnits.HiddenChannels);
        return produced == metric.Scores
            ? scores
            : throw new InvalidOperationException($"Scoring metric '{name}' ({metric.GetType().Name}) declares that it scores {metric.Scores} but produced {produced}.");
    }

    /// <summary>
    /// Checks, before the model is loaded, that the whole-model metrics fit the memory budget of <paramref name="device"/>
    /// together; on a GPU without a budget or limit the check is skipped with a logged note (its memory is unknown).
    /// </summary>
    private static MemoryEstimate EnsureFits(List<(string Name, IImportanceMetric Metric)> wholeModel, LlamaConfig config, CalibrationData data, ScoringOptions options, bool modelInMemory, DeviceType device, ILogger logger)
    {
        MetricNeeds needs = wholeModel.Aggregate(MetricNeeds.None, (all, r) => all | r.Metric.Needs);
        bool backward = (needs & (MetricNeeds.Gradients | MetricNeeds.Masks)) != 0;
        int batch = Math.Min(options.BatchSize, data.SequenceCount);
        MemoryEstimate estimate = WholeModelScoring.Estimate(config, batch, data.SequenceLength, backward, parameterGradients: needs.HasFlag(MetricNeeds.Gradients), modelInMemory);
        string metrics = string.Join(", ", wholeModel.Select(r => r.Name));
        if (WholeModelScoring.ResolveBudget(options.MemoryBudgetBytes, device) is { } budget)
        {
            WholeModelScoring.EnsureFits(estimate, budget, metrics, batch, data.SequenceLength);
        }
        else if (!Inference.Runtime.MemoryPreflight.Skip)
        {
            LogGpuMemoryUnchecked(logger, metrics, device, estimate.Total);
        }

        return estimate;
    }

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

    [LoggerMessage(Level = LogLevel.Information, Message = "Whole-model metric(s) {Metrics} on {Device} need about {Bytes} bytes; not checked, as GPU memory cannot be queried: set ScoringOptions.MemoryBudgetBytes or MemoryPreflight.Limit (--max-memory) to check it")]
    private static partial void LogGpuMemoryUnchecked(ILogger logger, string metrics, DeviceType device, long bytes);

    [LoggerMessage(Level = LogLevel.Information, Message = "Loading the whole model from {Location} for whole-model metrics (about {Bytes} bytes)")]
    private static partial void LogLoading(ILogger logger, string location, long bytes);

    [LoggerMessage(Level = LogLevel.Information, Message = "Scoring metric {Metric}")]
    private static partial void LogMetric(ILogger logger, string metric);
}
