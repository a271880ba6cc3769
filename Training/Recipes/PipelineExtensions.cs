using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery;

namespace ModelSurgery.Training.Recipes;

/// <summary>
/// Continues the fluent flow past surgery: <c>build -> distil or train -> evaluate</c>, with the same async, progress and
/// cancellation conventions as <see cref="Surgeon"/>.
/// </summary>
/// <example><code>
/// SurgeryResult surgery = await Surgeon.ForTeacher(teacher).CalibrateOn(tokens).Plan(p => p.KeepTopLayers(6)).BuildAsync(studentDir);
/// CheckpointTrainingResult trained = await surgery.DistillAsync("brown.tokens", new TrainingOptions { OutputDir = "runs/student", Steps = 2000 });
/// ModelEvaluation scores = await trained.EvaluateAsync([TaskSpec.ArcEasy("arc_easy.jsonl")]);
/// </code></example>
public static class PipelineExtensions
{
    /// <summary>Distils the freshly built student from the teacher it was cut from, on a token file of student ids.</summary>
    /// <param name="surgery">The surgery whose student to train.</param>
    /// <param name="tokensPath">Token file (from <c>modelsurgery tokenize</c> or <see cref="Data.Tokenization"/>).</param>
    /// <param name="options">Hyper-parameters; <see cref="TrainingOptions.OutputDir"/> receives checkpoints, metrics and curves.</param>
    /// <param name="distillation">Loss settings; by default forward KL at temperature 1 mixed half and half with cross-entropy.</param>
    /// <param name="settings">Split, rounds, resume, device and save options.</param>
    /// <param name="progress">Per-step progress.</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="cancellationToken">Stops after saving the last checkpoint.</param>
    public static Task<CheckpointTrainingResult> DistillAsync(
        this SurgeryResult surgery,
        string tokensPath,
        TrainingOptions options,
        DistillationSettings? distillation = null,
        CheckpointTrainingSettings? settings = null,
        IProgress<TrainingProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(surgery);
        return CheckpointTraining.DistillAsync(surgery.TeacherDirectory, surgery.Student.Directory, tokensPath, options, distillation ?? new DistillationSettings(), settings, progress, logger, cancellationToken);
    }

    /// <summary>Continues pretraining the freshly built student with plain cross-entropy.</summary>
    public static Task<CheckpointTrainingResult> TrainAsync(
        this SurgeryResult surgery,
        string tokensPath,
        TrainingOptions options,
        CheckpointTrainingSettings? settings = null,
        IProgress<TrainingProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(surgery);
        return CheckpointTraining.TrainAsync(surgery.Student.Directory, tokensPath, options, settings, progress, logger, cancellationToken);
    }

    /// <summary>Evaluates the trained model's final checkpoint (with the tokenizer saved beside it) on benchmark and text tasks.</summary>
    /// <exception cref="InvalidDataException">The checkpoint has no tokenizer; the message names the folder.</exception>
    public static async Task<ModelEvaluation> EvaluateAsync(
        this CheckpointTrainingResult trained,
        IReadOnlyList<TaskSpec> tasks,
        EvaluationOptions? options = null,
        IProgress<EvaluationProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(trained);
        string directory = trained.FinalCheckpoint;
        if (!TokenizerFiles.IsInFolder(directory))
        {
            throw new InvalidDataException($"{directory}: no tokenizer.json or tokenizer.model beside the weights; evaluation needs the model's tokenizer.");
        }

        var tokenizer = TokenizerFiles.Load(directory);
        using LlamaForCausalLM model = ModelCheckpoint.Load(directory, logger: logger);
        options ??= new EvaluationOptions { ModelName = Path.GetFileName(Path.TrimEndingDirectorySeparator(directory)), MaxLength = model.Config.MaxPositionEmbeddings };

        // Text tasks predict the first token from a BOS/EOS prefix: use the model's own when none was set.
        int? prefix = model.Config.BosTokenId ?? (model.Config.EosTokenIds.Count > 0 ? model.Config.EosTokenIds[0] : null);
        options = options with { PrefixTokenId = options.PrefixTokenId ?? prefix };
        return await Evaluator.EvaluateAsync(model, tokenizer, tasks, options, progress, logger, cancellationToken).ConfigureAwait(false);
    }
}
