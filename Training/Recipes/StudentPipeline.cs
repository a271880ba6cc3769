using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery;

namespace ModelSurgery.Training.Recipes;

/// <summary>Progress of a <see cref="StudentPipeline"/> run.</summary>
/// <param name="Stage"><c>surgery</c>, <c>distillation</c>, <c>training</c> or <c>evaluation</c>.</param>
/// <param name="Status">What is happening (the surgery stage, the loss, the model being evaluated).</param>
/// <param name="Completed">Units done in the stage.</param>
/// <param name="Total">Units in the stage, or null when unknown.</param>
/// <param name="Unit">What <paramref name="Completed"/> counts (bytes while building, steps while training, examples while evaluating).</param>
public sealed record PipelineProgress(string Stage, string Status, long Completed, long? Total, ProgressUnit Unit) : IProgressReport;

/// <summary>What a <see cref="StudentPipeline"/> run produced.</summary>
/// <param name="Student">The student checkpoint folder the run ended with (built, or trained and saved).</param>
/// <param name="Surgery">The surgery, when the pipeline built the student.</param>
/// <param name="Training">The distillation or training run, when there was one.</param>
/// <param name="Evaluations">One evaluation per model (the teacher first, when included), empty without an evaluation.</param>
public sealed record StudentPipelineResult(string Student, SurgeryResult? Surgery, CheckpointTrainingResult? Training, IReadOnlyList<ModelEvaluation> Evaluations)
{
    /// <summary>The side-by-side report of <see cref="Evaluations"/>, measured against the first model; null without an evaluation.</summary>
    public EvaluationReport? Report => Evaluations.Count == 0 ? null : new EvaluationReport(Evaluations, Evaluations[0].ModelName);
}

/// <summary>
/// The fluent way from a student to a report, continuing <see cref="Surgeon"/>: build (or start from a student
/// checkpoint), then distil or train, then evaluate. Each call returns a new value; nothing runs until
/// <see cref="RunAsync"/>, which runs the configured stages in order with one progress sink, one logger and one
/// cancellation token.
/// </summary>
/// <example><code>
/// StudentPipelineResult result = await Surgeon.ForTeacher("models/teacher")
///     .CalibrateOn(tokens, sequences: 64, length: 256)
///     .ScoreWith(ScoringMetrics.BlockInfluence, ScoringMetrics.Activation)
///     .Plan(plan => plan.KeepTopLayers(12).KeepNeuronFraction(0.5))
///     .BuildStudent("models/student")
///     .Distill("data/train.tokens", new DistillationOptions { Steps = 2000 }, "runs/student")
///     .Evaluate(new EvaluationSuite { Text = ["data/heldout.txt"] })
///     .RunAsync(cancellationToken);
/// Console.WriteLine(result.Report!.ToMarkdown());
/// </code></example>
public sealed record StudentPipeline
{
    private StudentPipeline()
    {
    }

    /// <summary>The student checkpoint the pipeline starts from, or builds into.</summary>
    public string StudentDirectory { get; private init; } = string.Empty;

    /// <summary>The teacher checkpoint (the distillation's teacher and the evaluation's reference); null when none was given.</summary>
    public string? TeacherDirectory { get; private init; }

    private Surgeon? Surgery { get; init; }

    private string? TokensPath { get; init; }

    private TrainingStageOptions? Stage { get; init; }

    // Whether the stage distils; a DistillationOptions given to Train trains on its schedule without the loss.
    private bool Distils { get; init; }

    private string? TrainingOutput { get; init; }

    private CheckpointTrainingSettings Settings { get; init; } = new();

    private EvaluationSuite? Evaluation { get; init; }

    private IProgress<PipelineProgress>? Progress { get; init; }

    private IProgress<TrainingProgress>? StepProgress { get; init; }

    private ILogger? Logger { get; init; }

    /// <summary>Starts from a student checkpoint that already exists.</summary>
    public static StudentPipeline ForStudent(string studentDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(studentDirectory);
        return new StudentPipeline { StudentDirectory = studentDirectory };
    }

    /// <summary>Continues from a finished surgery: its student, distilled from the teacher it was cut from.</summary>
    public static StudentPipeline From(SurgeryResult surgery)
    {
        ArgumentNullException.ThrowIfNull(surgery);
        return ForStudent(surgery.Student.Directory).DistilledFrom(surgery.TeacherDirectory);
    }

    /// <summary>Builds the student with a configured <see cref="Surgeon"/> first (its teacher becomes the pipeline's).</summary>
    internal static StudentPipeline Build(Surgeon surgeon, string outputDirectory)
    {
        ArgumentNullException.ThrowIfNull(surgeon);
        return ForStudent(outputDirectory).DistilledFrom(surgeon.TeacherDirectory) with { Surgery = surgeon };
    }

    /// <summary>The teacher: what <see cref="Distill"/> learns from, and the reference row of the evaluation.</summary>
    public StudentPipeline DistilledFrom(string teacherDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(teacherDirectory);
        return this with { TeacherDirectory = teacherDirectory };
    }

    /// <summary>Distils the student from the teacher on a token file of student ids; checkpoints, metrics and curves go to <paramref name="outputDirectory"/>.</summary>
    public StudentPipeline Distill(string tokensPath, DistillationOptions options, string outputDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(tokensPath);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(outputDirectory);
        return this with { TokensPath = tokensPath, Stage = options, Distils = true, TrainingOutput = outputDirectory };
    }

    /// <summary>
    /// Continues pretraining the student with plain cross-entropy on a token file; checkpoints, metrics and curves go to
    /// <paramref name="outputDirectory"/>. A <see cref="DistillationOptions"/> given here runs its schedule without its loss.
    /// </summary>
    public StudentPipeline Train(string tokensPath, TrainingStageOptions options, string outputDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(tokensPath);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(outputDirectory);
        return this with { TokensPath = tokensPath, Stage = options, Distils = false, TrainingOutput = outputDirectory };
    }

    /// <summary>
    /// How the training data is split and the run is saved: validation share, split seed, rounds, resume, checkpoint
    /// format. The device is the stage's (<see cref="TrainingStageOptions.Device"/>).
    /// </summary>
    public StudentPipeline RunWith(CheckpointTrainingSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        return this with { Settings = settings };
    }

    /// <summary>Evaluates the student (and the teacher, when <see cref="EvaluationSuite.IncludeTeacher"/>) on benchmark and text tasks.</summary>
    public StudentPipeline Evaluate(EvaluationSuite suite)
    {
        ArgumentNullException.ThrowIfNull(suite);
        return this with { Evaluation = suite };
    }

    /// <summary>Reports progress of every stage.</summary>
    public StudentPipeline ReportTo(IProgress<PipelineProgress> progress) => this with { Progress = progress };

    /// <summary>Reports every step of the distillation or training stage in full (loss, learning rate, throughput, validation loss).</summary>
    public StudentPipeline ReportTo(IProgress<TrainingProgress> progress) => this with { StepProgress = progress };

    /// <summary>Logs through <paramref name="logger"/>.</summary>
    public StudentPipeline LogTo(ILogger logger) => this with { Logger = logger };

    /// <summary>Runs the configured stages in order: build, distil or train, evaluate.</summary>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    /// <exception cref="InvalidOperationException">Distillation was asked for without a teacher.</exception>
    /// <exception cref="InvalidDataException">A model to evaluate has no tokenizer beside its weights; the message names the folder.</exception>
    public async Task<StudentPipelineResult> RunAsync(CancellationToken cancellationToken = default)
    {
        // Check every stage's options before the first one spends time.
        Stage?.ThrowIfInvalid();
        if (Evaluation?.Validate(key => "EvaluationSuite." + (key.Length == 0 ? "Tasks" : key)) is { Count: > 0 } evaluationErrors)
        {
            throw new ArgumentException(string.Join("; ", evaluationErrors));
        }

        if (Distils && Stage is DistillationOptions { NeedsTeacherFolder: true } && TeacherDirectory is null)
        {
            throw new InvalidOperationException("Distillation needs a teacher: start with Surgeon...BuildStudent(...), StudentPipeline.From(surgery) or call DistilledFrom(teacher) (or give DistillationOptions.teacher_cache).");
        }

        string student = StudentDirectory;
        SurgeryResult? surgery = null;
        if (Surgery is not null)
        {
            Surgeon surgeon = Logger is null ? Surgery : Surgery.LogTo(Logger);
            if (Progress is { } progress)
            {
                surgeon = surgeon.ReportTo(new SynchronousProgress<SurgeryProgress>(p => progress.Report(new PipelineProgress("surgery", p.Stage, p.Completed, p.Total, p.Unit))));
            }

            surgery = await surgeon.BuildAsync(student, cancellationToken).ConfigureAwait(false);
        }

        CheckpointTrainingResult? trained = null;
        if (TokensPath is not null && Stage is { } schedule)
        {
            string stage = Distils ? "distillation" : "training";
            var progress = Progress is null && StepProgress is null ? null : new SynchronousProgress<TrainingProgress>(p =>
            {
                StepProgress?.Report(p);
                Progress?.Report(new PipelineProgress(stage, p.Status, p.Completed, p.Total, p.Unit));
            });
            TrainingOptions options = schedule.ToTrainingOptions(TrainingOutput!);
            CheckpointTrainingSettings settings = Settings with { Device = schedule.Device };
            trained = Distils && schedule is DistillationOptions d
                ? await CheckpointTraining.DistillAsync(TeacherDirectory, student, TokensPath, options, d.ToSettings(), settings, progress, Logger, cancellationToken).ConfigureAwait(false)
                : await CheckpointTraining.TrainAsync(student, TokensPath, options, settings, progress, Logger, cancellationToken).ConfigureAwait(false);
            student = trained.FinalCheckpoint;
        }

        var evaluations = new List<ModelEvaluation>();
        if (Evaluation is { } suite)
        {
            IReadOnlyList<TaskSpec> tasks = suite.ToTaskSpecs();
            if (suite.IncludeTeacher && TeacherDirectory is not null && TokenizerFiles.IsInFolder(TeacherDirectory))
            {
                evaluations.Add(await EvaluateFolderAsync(TeacherDirectory, "teacher", tasks, suite, cancellationToken).ConfigureAwait(false));
            }

            evaluations.Add(await EvaluateFolderAsync(student, "student", tasks, suite, cancellationToken).ConfigureAwait(false));
        }

        return new StudentPipelineResult(student, surgery, trained, evaluations);
    }

    /// <summary>Loads a checkpoint folder with the tokenizer saved beside it and evaluates it.</summary>
    private async Task<ModelEvaluation> EvaluateFolderAsync(string directory, string name, IReadOnlyList<TaskSpec> tasks, EvaluationSuite suite, CancellationToken cancellationToken)
    {
        if (!TokenizerFiles.IsInFolder(directory))
        {
            throw new InvalidDataException($"{directory}: no tokenizer.json or tokenizer.model beside the weights; evaluation needs the model's tokenizer.");
        }

        ModelTokenizer tokenizer = TokenizerFiles.Load(directory);
        using LlamaForCausalLM model = ModelCheckpoint.Load(directory, logger: Logger);
        EvaluationOptions options = suite.ToEvaluationOptions(name, model.Config.MaxPositionEmbeddings);

        // Text tasks predict the first token from a BOS/EOS prefix: the model's own.
        options = options with { PrefixTokenId = model.Config.BosTokenId ?? (model.Config.EosTokenIds.Count > 0 ? model.Config.EosTokenIds[0] : null) };
        var progress = Progress is null ? null : new SynchronousProgress<EvaluationProgress>(p => Progress.Report(new PipelineProgress("evaluation", $"{name}: {p.Status}", p.Completed, p.Total, p.Unit)));
        return await Evaluator.EvaluateAsync(model, tokenizer, tasks, options, progress, Logger, cancellationToken).ConfigureAwait(false);
    }
}

/// <summary>Continues a <see cref="Surgeon"/> into a <see cref="StudentPipeline"/>.</summary>
public static class SurgeonPipeline
{
    /// <summary>
    /// Builds the student into <paramref name="outputDirectory"/> as the pipeline's first stage, so that distillation and
    /// evaluation can follow in the same chain (<see cref="Surgeon.BuildAsync"/> builds and stops there).
    /// </summary>
    public static StudentPipeline BuildStudent(this Surgeon surgeon, string outputDirectory) => StudentPipeline.Build(surgeon, outputDirectory);
}
