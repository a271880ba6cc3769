using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.IO;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Training;

namespace ModelSurgery.Samples;

/// <summary>What <see cref="TeacherCache.EnsureAsync"/> returns: the teacher's training record, trained now or read from the cache.</summary>
/// <param name="Directory">The teacher's checkpoint folder.</param>
/// <param name="History">Every training step.</param>
/// <param name="Evaluations">Every validation evaluation.</param>
/// <param name="FromCache">True when a matching cached teacher was used instead of training one.</param>
/// <param name="TrainSeconds">Wall time of the training that produced it (then, for a cached teacher).</param>
public sealed record CachedTeacher(string Directory, IReadOnlyList<StepRecord> History, IReadOnlyList<EvalRecord> Evaluations, bool FromCache, double TrainSeconds)
{
    /// <summary>The last validation loss, or NaN without evaluations.</summary>
    public double FinalValidationLoss => Evaluations.Count == 0 ? double.NaN : Evaluations[^1].ValidationLoss;
}

/// <summary>
/// Trains a model from scratch once and keeps it: the checkpoint is written with a manifest recording a fingerprint of
/// everything that decides the result (architecture, training options, data identity), and a later call with the same
/// fingerprint loads the record instead of training again. Used by the samples for their teachers.
/// </summary>
public static class TeacherCache
{
    /// <summary>The manifest file in the teacher folder.</summary>
    public const string ManifestFileName = "teacher-manifest.json";

    /// <summary>
    /// A SHA-256 over the config, the training options (without their output folder, which does not change the model)
    /// and any further data identity (e.g. the vocabulary map's JSON).
    /// </summary>
    /// <param name="config">The architecture.</param>
    /// <param name="training">The training options.</param>
    /// <param name="dataIdentity">Texts that identify the training data.</param>
    /// <returns>Lower-case hex.</returns>
    public static string Fingerprint(LlamaConfig config, TrainingOptions training, params IEnumerable<string> dataIdentity)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(training);
        ArgumentNullException.ThrowIfNull(dataIdentity);
        string text = string.Join('\n', [config.ToJson(), (training with { OutputDir = string.Empty }).ToString(), .. dataIdentity]);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
    }

    /// <summary>
    /// Returns the cached teacher in <paramref name="teacherDirectory"/> when its manifest carries the same fingerprint
    /// (and <paramref name="fresh"/> is false); otherwise initialises a model of <paramref name="config"/> with
    /// <see cref="TrainingOptions.Seed"/>, trains it on <paramref name="data"/>, and saves checkpoint and manifest.
    /// </summary>
    /// <param name="teacherDirectory">The checkpoint folder.</param>
    /// <param name="config">The architecture.</param>
    /// <param name="training">Training options; its seed also initialises the weights.</param>
    /// <param name="data">Training and validation windows.</param>
    /// <param name="dataIdentity">Texts that identify the data (part of the fingerprint), e.g. the vocabulary map's JSON.</param>
    /// <param name="fresh">Train even when a matching teacher is cached.</param>
    /// <param name="progress">Per-step progress while training.</param>
    /// <param name="logger">Optional logger (passed to the trainer).</param>
    /// <param name="tokenizer">
    /// The tokenizer the data was made with (a file or folder <see cref="ModelFolderTokenizer.CopyInto"/> takes), put
    /// beside the weights so the teacher, and every student built from it, can be used with text. Also added to a cached
    /// teacher that lacks it.
    /// </param>
    /// <param name="cancellationToken">Cancels training.</param>
    /// <returns>The record.</returns>
    /// <exception cref="InvalidDataException">The manifest exists but is not a JSON object.</exception>
    public static async Task<CachedTeacher> EnsureAsync(
        string teacherDirectory,
        LlamaConfig config,
        TrainingOptions training,
        TrainingData data,
        IEnumerable<string> dataIdentity,
        bool fresh = false,
        IProgress<TrainingProgress>? progress = null,
        ILogger? logger = null,
        string? tokenizer = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(teacherDirectory);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(training);
        ArgumentNullException.ThrowIfNull(data);
        string fingerprint = Fingerprint(config, training, dataIdentity);
        if (!fresh && TryLoad(teacherDirectory, fingerprint) is CachedTeacher cached)
        {
            if (tokenizer is not null && !TokenizerFiles.IsInFolder(teacherDirectory))
            {
                ModelFolderTokenizer.CopyInto(tokenizer, teacherDirectory, config);
            }

            return cached;
        }

        using var model = new LlamaForCausalLM(config);
        model.InitializeWeights((long)(training.Seed & long.MaxValue));
        model.train();
        var watch = Stopwatch.StartNew();
        TrainingResult result = await new Trainer(model, training, logger: logger)
            .TrainAsync(data, progress, cancellationToken: cancellationToken).ConfigureAwait(false);
        double seconds = watch.Elapsed.TotalSeconds;
        model.eval();
        await ModelCheckpoint.SaveAsync(model, teacherDirectory, cancellationToken: cancellationToken).ConfigureAwait(false);
        if (tokenizer is not null)
        {
            ModelFolderTokenizer.CopyInto(tokenizer, teacherDirectory, config);
        }

        var manifest = new JsonObject
        {
            ["fingerprint"] = fingerprint,
            ["train_seconds"] = seconds,
            ["evaluations"] = JsonSerializer.SerializeToNode(result.Evaluations),
            ["history"] = JsonSerializer.SerializeToNode(result.History),
        };
        AtomicFile.WriteAllText(Path.Combine(teacherDirectory, ManifestFileName), manifest.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return new CachedTeacher(teacherDirectory, result.History, result.Evaluations, FromCache: false, seconds);
    }

    /// <summary>The cached teacher when <paramref name="teacherDirectory"/> holds a checkpoint whose manifest has <paramref name="fingerprint"/>; else null.</summary>
    /// <param name="teacherDirectory">The checkpoint folder.</param>
    /// <param name="fingerprint">From <see cref="Fingerprint"/>.</param>
    /// <returns>The record, or null.</returns>
    /// <exception cref="InvalidDataException">The manifest exists but is not a JSON object.</exception>
    public static CachedTeacher? TryLoad(string teacherDirectory, string fingerprint)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(teacherDirectory);
        string manifestPath = Path.Combine(teacherDirectory, ManifestFileName);
        if (!File.Exists(manifestPath) || !File.Exists(Path.Combine(teacherDirectory, "config.json")))
        {
            return null;
        }

        JsonObject manifest;
        try
        {
            manifest = JsonNode.Parse(File.ReadAllText(manifestPath)) as JsonObject
                ?? throw new InvalidDataException($"{manifestPath}: the teacher manifest is not a JSON object.");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{manifestPath}: the teacher manifest is not valid JSON ({ex.Message}).", ex);
        }

        if ((string?)manifest["fingerprint"] != fingerprint)
        {
            return null;
        }

        StepRecord[] history = manifest["history"].Deserialize<StepRecord[]>() ?? [];
        EvalRecord[] evaluations = manifest["evaluations"].Deserialize<EvalRecord[]>() ?? [];
        return new CachedTeacher(teacherDirectory, history, evaluations, FromCache: true, (double?)manifest["train_seconds"] ?? double.NaN);
    }
}
