using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Distillation;
using ModelSurgery.Training.MultiRound;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Training.Recipes;

/// <summary>Where the data comes from and how models are loaded and saved; shared by training and distillation.</summary>
public sealed record CheckpointTrainingSettings
{
    /// <summary>
    /// Share of windows held out for validation; null takes the token file's split from its description
    /// (<see cref="TokenFileInfo"/>: a fraction, or a held-out part from <see cref="TokenFileInfo.ValidationStartToken"/>), else 0.
    /// </summary>
    public double? ValidationFraction { get; init; }

    /// <summary>Seed of the train/validation split; null takes it from the token file's description, else <see cref="TokenFileInfo.DefaultSplitSeed"/>.</summary>
    public ulong? SplitSeed { get; init; }

    /// <summary>Multi-round training (R rounds, ratio r); null or one round trains once with <see cref="Trainer"/>.</summary>
    public MultiRoundOptions? Rounds { get; init; }

    /// <summary>Continue a single-round run from its saved training state.</summary>
    public bool Resume { get; init; }

    /// <summary>Device the models are loaded on: auto, cpu, cuda, cuda:N. A <see cref="StudentPipeline"/> stage runs on its record's <see cref="TrainingStageOptions.Device"/> instead.</summary>
    public string Device { get; init; } = "auto";

    /// <summary>How checkpoints are stored; null keeps the model's dtype in one file.</summary>
    public ModelSaveOptions? Save { get; init; }
}

/// <summary>What a distillation run compares the student with.</summary>
public sealed record DistillationSettings
{
    /// <summary>Divergence between teacher and student distributions.</summary>
    public DistillationDivergence Divergence { get; init; } = DistillationDivergence.ForwardKl;

    /// <summary>Softmax temperature.</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Weight of the distillation term (1 - alpha weighs cross-entropy).</summary>
    public double Alpha { get; init; } = 0.5;

    /// <summary>A <see cref="TeacherLogitCache"/> file to distil from instead of running the teacher; null runs the teacher.</summary>
    public string? TeacherCachePath { get; init; }

    /// <summary>A surgery plan whose layer map (student layer i to teacher layer plan.Layers[i].TeacherLayer) enables hidden-state distillation.</summary>
    public string? PlanPath { get; init; }

    /// <summary>Weight of the hidden-state term (used with <see cref="PlanPath"/>).</summary>
    public double HiddenWeight { get; init; } = 1.0;

    /// <summary>Dtype the teacher is loaded in (e.g. bfloat16 to halve its memory); null is float32.</summary>
    public ScalarType? TeacherDType { get; init; }
}

/// <summary>The outcome of a training or distillation stage (<see cref="StudentPipelineResult.Training"/>).</summary>
/// <param name="FinalCheckpoint">Folder holding the model after the last step (<c>OutputDir/checkpoints/final</c>).</param>
/// <param name="Runs">One result per round (one for a single-round run).</param>
public sealed record CheckpointTrainingResult(string FinalCheckpoint, IReadOnlyList<TrainingResult> Runs)
{
    /// <summary>Loss of the last step of the last round.</summary>
    public double FinalLoss => Runs.Count == 0 ? double.NaN : Runs[^1].FinalLoss;
}

/// <summary>
/// End-to-end recipes over checkpoint folders and token files: load the model(s) with <see cref="ModelCheckpoint.Load"/>,
/// split the token file into windows, train with <see cref="Trainer"/> or <see cref="MultiRoundTrainer"/> and save the
/// result as checkpoint folders (with the source folder's tokenizer files copied in).
/// <para>
/// Output layout (single round): <c>OutputDir/checkpoints/last</c> (model plus training state for resuming),
/// <c>OutputDir/checkpoints/best</c> (lowest validation loss, when there is validation data),
/// <c>OutputDir/checkpoints/final</c> (the model after the last step), <c>metrics.jsonl</c>, <c>metrics.csv</c>,
/// <c>loss.png</c>. With several rounds each round writes the same files under <c>OutputDir/round-k</c> and the model
/// after the last round goes to <c>OutputDir/checkpoints/final</c>.
/// </para>
/// </summary>
public static class CheckpointTraining
{
    /// <summary>Name of the vocabulary map a compressed student folder holds.</summary>
    public const string VocabularyMapFileName = "vocab_map.json";

    /// <summary>The final checkpoint folder of a run.</summary>
    /// <param name="outputDir">The run's output folder.</param>
    /// <returns><c>outputDir/checkpoints/final</c>.</returns>
    public static string FinalCheckpointPath(string outputDir) => Path.Combine(outputDir, "checkpoints", "final");

    /// <summary>
    /// Splits a token file into windows of <paramref name="seqLen"/> inputs and then into training and validation
    /// windows, with the fraction and seed given, or the split recorded in the file's description (a fraction and seed,
    /// or a held-out part at the end: see <see cref="DatasetSplit.ForTokenFile"/>).
    /// </summary>
    /// <param name="file">The open token file.</param>
    /// <param name="seqLen">Inputs per window.</param>
    /// <param name="settings">Split overrides.</param>
    /// <returns>The training data.</returns>
    /// <exception cref="ArgumentException">The file holds no window of <paramref name="seqLen"/> tokens, or its recorded validation start leaves no training window.</exception>
    /// <exception cref="InvalidDataException">The description is invalid (e.g. it sets both <c>val_fraction</c> and <c>val_start_token</c>); the message names the file.</exception>
    public static TrainingData OpenData(TokenFile file, int seqLen, CheckpointTrainingSettings? settings = null)
    {
        ArgumentNullException.ThrowIfNull(file);
        settings ??= new CheckpointTrainingSettings();
        if (TokenWindows.Count(file.Count, seqLen) == 0)
        {
            throw new ArgumentException($"Token file '{file.Path}' has {file.Count} tokens, not enough for one window of {seqLen} + 1.", nameof(file));
        }

        DatasetSplit split = DatasetSplit.ForTokenFile(file.Path, TokenFileInfo.TryLoad(file.Path), file.Count, seqLen, settings.ValidationFraction, settings.SplitSeed);
        return new TrainingData(file, split.Train, split.Validation);
    }

    /// <summary>Trains the checkpoint in <paramref name="modelDir"/> on a token file with next-token cross-entropy.</summary>
    /// <param name="modelDir">Checkpoint folder of the model to train (its tokenizer files are copied into every checkpoint).</param>
    /// <param name="tokensPath">Token file (<see cref="TokenFile"/>) of ids in the model's vocabulary.</param>
    /// <param name="options">Hyper-parameters; <see cref="TrainingOptions.OutputDir"/> receives everything.</param>
    /// <param name="settings">Split, rounds, resume, device and save options.</param>
    /// <param name="progress">Per-step progress.</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="cancellationToken">Stops after saving the last checkpoint.</param>
    /// <returns>The final checkpoint and the run history.</returns>
    internal static Task<CheckpointTrainingResult> TrainAsync(
        string modelDir,
        string tokensPath,
        TrainingOptions options,
        CheckpointTrainingSettings? settings = null,
        IProgress<TrainingProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelDir);
        settings ??= new CheckpointTrainingSettings();
        return RunAsync(modelDir, tokensPath, options, settings, student => null, teacherDir: null, teacherDType: null, progress, logger, cancellationToken);
    }

    /// <summary>
    /// Distils a teacher checkpoint into a student checkpoint on a token file of student ids. When the student folder
    /// holds <c>vocab_map.json</c> (a compressed vocabulary), the teacher reads the mapped ids and its logits are
    /// restricted to the kept ids. With <see cref="DistillationSettings.PlanPath"/> hidden states are matched too.
    /// </summary>
    /// <param name="teacherDir">Teacher checkpoint folder (ignored when a teacher cache is given, except for hidden states).</param>
    /// <param name="studentDir">Student checkpoint folder.</param>
    /// <param name="tokensPath">Token file of student ids.</param>
    /// <param name="options">Hyper-parameters and output folder.</param>
    /// <param name="distillation">Loss settings, teacher cache and plan.</param>
    /// <param name="settings">Split, rounds, resume, device and save options.</param>
    /// <param name="progress">Per-step progress.</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="cancellationToken">Stops after saving the last checkpoint.</param>
    /// <returns>The final checkpoint and the run history.</returns>
    internal static async Task<CheckpointTrainingResult> DistillAsync(
        string? teacherDir,
        string studentDir,
        string tokensPath,
        TrainingOptions options,
        DistillationSettings distillation,
        CheckpointTrainingSettings? settings = null,
        IProgress<TrainingProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(studentDir);
        ArgumentNullException.ThrowIfNull(distillation);
        settings ??= new CheckpointTrainingSettings();
        if (distillation.TeacherCachePath is null && distillation.PlanPath is null && string.IsNullOrEmpty(teacherDir))
        {
            throw new ArgumentException("Distillation needs a teacher folder or a teacher logit cache.", nameof(teacherDir));
        }

        if (distillation.PlanPath is not null && string.IsNullOrEmpty(teacherDir))
        {
            throw new ArgumentException("Hidden-state distillation (a plan) needs the teacher folder.", nameof(teacherDir));
        }

        VocabularyMap? vocabularyMap = ReadVocabularyMap(studentDir);
        var loss = new DistillationLoss(distillation.Divergence, distillation.Temperature, distillation.Alpha);
        var owned = new List<IDisposable>();
        try
        {
            // A cache replaces the live teacher unless hidden states are matched: only a live teacher counts in the memory estimate.
            string? liveTeacher = distillation.TeacherCachePath is not null && distillation.PlanPath is null ? null : teacherDir;
            return await RunAsync(studentDir, tokensPath, options, settings, student => CreateObjective(student), liveTeacher, distillation.TeacherDType, progress, logger, cancellationToken, hiddenStates: distillation.PlanPath is not null ? teacherDir : null).ConfigureAwait(false);
        }
        finally
        {
            foreach (IDisposable d in owned)
            {
                d.Dispose();
            }
        }

        ITrainingObjective CreateObjective(LlamaHiddenStates student)
        {
            if (distillation.TeacherCachePath is not null && distillation.PlanPath is null)
            {
                var cache = TeacherLogitCache.Open(distillation.TeacherCachePath);
                owned.Add(cache);
                if (cache.SeqLen != options.SeqLen)
                {
                    throw new ArgumentException($"Teacher logit cache '{cache.Path}' holds windows of {cache.SeqLen} tokens; this run uses --seq-len {options.SeqLen}.", nameof(distillation));
                }

                return new CachedDistillationObjective(cache, loss);
            }

            LlamaForCausalLM teacherModel = ModelCheckpoint.Load(teacherDir!, new ModelLoadOptions { Device = settings.Device, DType = distillation.TeacherDType }, logger);
            var teacher = new LlamaHiddenStates(teacherModel);
            owned.Add(teacher);
            HiddenStateDistillation? hidden = null;
            if (distillation.PlanPath is not null)
            {
                SurgeryPlan plan = SurgeryPlan.Load(distillation.PlanPath);
                if (plan.Layers.Count != student.Llama.Layers.Count)
                {
                    throw new ArgumentException(
                        $"Plan '{distillation.PlanPath}' maps {plan.Layers.Count} student layers but the student in '{studentDir}' has {student.Llama.Layers.Count}.", nameof(distillation));
                }

                if (plan.Layers.Any(l => l.TeacherLayer >= teacherModel.Layers.Count))
                {
                    throw new ArgumentException($"Plan '{distillation.PlanPath}' names a teacher layer beyond the {teacherModel.Layers.Count} layers of '{teacherDir}'.", nameof(distillation));
                }

                hidden = new HiddenStateDistillation([.. plan.Layers.Select(l => l.TeacherLayer)], student.Llama.Config.HiddenSize, teacherModel.Config.HiddenSize);
                hidden.to(student.Llama.Device);
                owned.Add(hidden);
            }

            return new DistillationObjective(teacher, loss, hidden, distillation.HiddenWeight, vocabularyMap: vocabularyMap);
        }
    }

    /// <summary>
    /// Runs the teacher over the training windows of a token file and writes their top-k logits to a
    /// <see cref="TeacherLogitCache"/> for <see cref="DistillationSettings.TeacherCachePath"/>.
    /// </summary>
    /// <param name="teacherDir">Teacher checkpoint folder.</param>
    /// <param name="tokensPath">Token file (student ids when <paramref name="vocabularyMapPath"/> is given).</param>
    /// <param name="cachePath">Cache file to write.</param>
    /// <param name="k">Logits kept per position.</param>
    /// <param name="seqLen">Inputs per window; must equal the distillation run's.</param>
    /// <param name="batchSize">Windows per teacher pass.</param>
    /// <param name="vocabularyMapPath">Optional <c>vocab_map.json</c> of a compressed student.</param>
    /// <param name="settings">Split and device options (must match the distillation run's split).</param>
    /// <param name="progress">Windows written.</param>
    /// <param name="cancellationToken">Cancels; no file is left behind.</param>
    /// <returns>The number of windows cached.</returns>
    public static async Task<int> CacheTeacherAsync(
        string teacherDir,
        string tokensPath,
        string cachePath,
        int k,
        int seqLen,
        int batchSize = 8,
        string? vocabularyMapPath = null,
        CheckpointTrainingSettings? settings = null,
        IProgress<TeacherCacheProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(teacherDir);
        settings ??= new CheckpointTrainingSettings();
        VocabularyMap? vocabularyMap = vocabularyMapPath is null ? null : VocabularyMap.Load(vocabularyMapPath);
        using TokenFile file = TokenFile.Open(tokensPath);
        TrainingData data = OpenData(file, seqLen, settings);
        using var teacher = new LlamaHiddenStates(ModelCheckpoint.Load(teacherDir, new ModelLoadOptions { Device = settings.Device }));
        await TeacherLogitCache.WriteAsync(teacher, file, data.TrainWindows, cachePath, k, seqLen, batchSize, vocabularyMap, progress, cancellationToken).ConfigureAwait(false);
        return data.TrainWindows.Count;
    }

    /// <summary>The vocabulary map of a compressed student (its <c>vocab_map.json</c>), or null when it has none.</summary>
    /// <param name="studentDir">Student checkpoint folder.</param>
    /// <returns>The map, or null.</returns>
    public static VocabularyMap? ReadVocabularyMap(string studentDir)
    {
        string path = Path.Combine(studentDir, VocabularyMapFileName);
        return File.Exists(path) ? VocabularyMap.Load(path) : null;
    }

    private static async Task<CheckpointTrainingResult> RunAsync(
        string modelDir,
        string tokensPath,
        TrainingOptions options,
        CheckpointTrainingSettings settings,
        Func<LlamaHiddenStates, ITrainingObjective?> objectiveFor,
        string? teacherDir,
        ScalarType? teacherDType,
        IProgress<TrainingProgress>? progress,
        ILogger? logger,
        CancellationToken cancellationToken,
        string? hiddenStates = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        bool multiRound = settings.Rounds is { Rounds: > 1 };
        if (multiRound && settings.Resume)
        {
            throw new ArgumentException("Resuming is supported for single-round runs only.", nameof(settings));
        }

        using TokenFile file = TokenFile.Open(tokensPath);
        TrainingData data = OpenData(file, options.SeqLen, settings);

        // Before anything is loaded: weights, gradients, optimizer states, activations, logits and the teacher. A missing
        // folder or config is left to the loader, whose message names it.
        if (ReadConfigIfPresent(modelDir) is { } studentConfig)
        {
            TrainingMemory.EnsureFits(modelDir, studentConfig, options, Inference.Runtime.ComputeDevice.Resolve(settings.Device).type, ReadConfigIfPresent(teacherDir), teacherDType is null or ScalarType.Float32 ? 4 : 2);

            // And before the first step: the checkpoints the run keeps at once (as the trainer decides to write them).
            bool validates = data.ValidationWindows.Count >= options.BatchSize && options.EvalBatches > 0;
            int keptRounds = multiRound && settings.Rounds!.Schedule == RoundSchedule.Restart ? settings.Rounds.Rounds : 1;
            long projections = ReadConfigIfPresent(hiddenStates) is { } matched ? TrainingDisk.HiddenProjectionParameters(studentConfig, matched) : 0;
            TrainingDisk.EnsureFits(modelDir, studentConfig, options, settings.Save, validates, keptRounds, projections);
        }

        using var model = new LlamaHiddenStates(ModelCheckpoint.Load(modelDir, new ModelLoadOptions { Device = settings.Device }, logger));
        CheckVocabulary(file, model.Llama, modelDir);
        ITrainingObjective? objective = objectiveFor(model);
        var checkpointer = new SafetensorsModelCheckpointer(settings.Save, modelDir, logger);
        IReadOnlyList<TrainingResult> runs;
        if (multiRound)
        {
            var trainer = new MultiRoundTrainer(model, options, settings.Rounds!, objective, checkpointer, logger);
            IReadOnlyList<RoundResult> rounds = await trainer.RunAsync(data, progress, cancellationToken).ConfigureAwait(false);
            runs = [.. rounds.Select(r => r.Result)];
        }
        else
        {
            var trainer = new Trainer(model, options, objective, checkpointer, logger);
            runs = [await trainer.TrainAsync(data, progress, settings.Resume, cancellationToken).ConfigureAwait(false)];
        }

        string final = FinalCheckpointPath(options.OutputDir);
        Directory.CreateDirectory(final);
        await checkpointer.SaveAsync(model, final, cancellationToken).ConfigureAwait(false);
        return new CheckpointTrainingResult(final, runs);
    }

    private static Inference.Configuration.LlamaConfig? ReadConfigIfPresent(string? modelDir) =>
        modelDir is not null && File.Exists(Path.Combine(modelDir, "config.json")) ? Inference.Configuration.LlamaConfig.Load(Path.Combine(modelDir, "config.json")) : null;

    private static void CheckVocabulary(TokenFile file, LlamaForCausalLM model, string modelDir)
    {
        TokenFileInfo? info = TokenFileInfo.TryLoad(file.Path);
        int vocab = model.Config.VocabSize;
        if (file.SeparatorId >= vocab || (info is not null && info.VocabSize > vocab))
        {
            throw new ArgumentException(
                $"Token file '{file.Path}' uses a vocabulary of {info?.VocabSize ?? file.SeparatorId + 1} ids (separator {file.SeparatorId}) but the model in '{modelDir}' has vocab_size {vocab}; tokenize with the model's tokenizer.",
                nameof(file));
        }
    }
}
