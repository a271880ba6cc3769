using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Surgery.Building;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;

namespace ModelSurgery.Surgery;

/// <summary>
/// Progress of a <see cref="Surgeon"/> run: which stage, and how far it is, in whole units. Reports come in order, at
/// most about every 100 ms or 1% of the stage, and always the stage's last.
/// </summary>
/// <param name="Stage"><c>scoring: &lt;what runs&gt;</c>, or <c>building</c>.</param>
/// <param name="Completed">Units done in the stage.</param>
/// <param name="Total">Units in the stage, or null when not known.</param>
/// <param name="Unit">What the units are: steps while scoring, bytes written while building.</param>
public sealed record SurgeryProgress(string Stage, long Completed, long? Total, ProgressUnit Unit) : IProgressReport
{
    /// <summary>The stage.</summary>
    public string Status => Stage;
}

/// <summary>What a <see cref="Surgeon"/> run produced.</summary>
/// <param name="Scores">The importance scores used (empty when the plan was given).</param>
/// <param name="Plan">The plan the student was built from.</param>
/// <param name="Student">The student checkpoint and what building it cost.</param>
/// <param name="TeacherDirectory">The teacher checkpoint it was cut from (for distillation next).</param>
public sealed record SurgeryResult(IReadOnlyList<ImportanceScores> Scores, SurgeryPlan Plan, StudentBuildResult Student, string TeacherDirectory)
{
    /// <summary>The plan as saved beside the student's weights.</summary>
    public string PlanPath => Path.Combine(Student.Directory, Surgeon.PlanFileName);
}

/// <summary>
/// The fluent way through parameter inheritance: a teacher checkpoint, calibration data, importance metrics, a plan, and
/// the student build. Each call returns a new <see cref="Surgeon"/>, so a configured one can be reused for several students.
/// Nothing runs until <see cref="ScoreAsync"/>, <see cref="PlanAsync"/> or <see cref="BuildAsync"/>.
/// </summary>
/// <example><code>
/// SurgeryResult result = await Surgeon.ForTeacher("models/teacher")
///     .CalibrateOn(tokens, sequences: 64, length: 256)
///     .ScoreWith(ScoringMetrics.Activation, ScoringMetrics.BlockInfluence)
///     .Plan(plan => plan.KeepTopLayers(12).KeepQueryHeadsPerGroup(4).KeepNeuronFraction(0.5).KeepHiddenChannelFraction(0.75).RoundWidthsTo(64))
///     .BuildAsync("models/student", cancellationToken);
/// </code></example>
public sealed record Surgeon
{
    /// <summary>File name of the plan written into the student folder, so a student always says where it came from.</summary>
    public const string PlanFileName = "surgery_plan.json";

    private Surgeon(string teacherDirectory, LlamaConfig teacher)
    {
        TeacherDirectory = teacherDirectory;
        Teacher = teacher;
    }

    /// <summary>The teacher checkpoint folder.</summary>
    public string TeacherDirectory { get; }

    /// <summary>The teacher's architecture.</summary>
    public LlamaConfig Teacher { get; }

    private CalibrationData? Calibration { get; init; }

    private ScoringOptions Scoring { get; init; } = new();

    private IReadOnlyList<ImportanceScores>? GivenScores { get; init; }

    private Func<PlanBuilder, PlanBuilder>? Shape { get; init; }

    private SurgeryPlan? GivenPlan { get; init; }

    private StudentBuildOptions Build { get; init; } = new();

    private IProgress<SurgeryProgress>? Progress { get; init; }

    private ILogger? Logger { get; init; }

    /// <summary>Starts from a teacher checkpoint folder (its <c>config.json</c> is read now).</summary>
    /// <exception cref="InvalidDataException">The config is missing or malformed; the message names the file.</exception>
    public static Surgeon ForTeacher(string checkpointDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(checkpointDirectory);
        return new Surgeon(checkpointDirectory, LlamaConfig.Load(Path.Combine(checkpointDirectory, "config.json")));
    }

    /// <summary>Calibrates on <paramref name="sequences"/> seeded windows of <paramref name="length"/> tokens from a token stream.</summary>
    public Surgeon CalibrateOn(IReadOnlyList<int> tokens, int sequences = 64, int length = 256, int seed = 0) =>
        this with { Calibration = CalibrationData.FromTokenStream(tokens, sequences, length, seed) };

    /// <summary>
    /// Calibrates on windows from a stream of 64-bit token ids, as <c>TokenFile.Read</c> returns them (no conversion needed).
    /// </summary>
    /// <exception cref="ArgumentException">An id does not fit in a 32-bit token id (the message gives its position), or the stream is shorter than one window.</exception>
    public Surgeon CalibrateOn(IReadOnlyList<long> tokens, int sequences = 64, int length = 256, int seed = 0) =>
        this with { Calibration = CalibrationData.FromTokenStream(tokens, sequences, length, seed) };

    /// <summary>Calibrates on prepared windows.</summary>
    public Surgeon CalibrateOn(CalibrationData data) => this with { Calibration = data };

    /// <summary>Scores with these metrics (see <see cref="ScoringMetrics"/>); the first one that ranks a unit type is used for it.</summary>
    /// <exception cref="ArgumentException">A metric name is unknown.</exception>
    public Surgeon ScoreWith(params string[] metrics)
    {
        foreach (string metric in metrics)
        {
            ScoringMetrics.Get(metric);
        }

        return this with { Scoring = Scoring with { Metrics = metrics } };
    }

    /// <summary>Scores with full options (batch size, device, learned-mask settings, ...).</summary>
    public Surgeon ScoreWith(ScoringOptions options) => this with { Scoring = options };

    /// <summary>Uses scores computed earlier instead of scoring again.</summary>
    public Surgeon UseScores(params ImportanceScores[] scores) => this with { GivenScores = scores };

    /// <summary>Describes the student: the choices are applied to a <see cref="PlanBuilder"/> over the teacher and the scores.</summary>
    public Surgeon Plan(Func<PlanBuilder, PlanBuilder> shape) => this with { Shape = shape };

    /// <summary>Builds from a plan made (or edited) elsewhere; no scoring happens.</summary>
    public Surgeon UsePlan(SurgeryPlan plan) => this with { GivenPlan = plan };

    /// <summary>Sets how the student checkpoint is written (dtype, shards, tokenizer, memory limits).</summary>
    public Surgeon WriteWith(StudentBuildOptions options) => this with { Build = options };

    /// <summary>Reports progress of every stage.</summary>
    public Surgeon ReportTo(IProgress<SurgeryProgress> progress) => this with { Progress = progress };

    /// <summary>Logs through <paramref name="logger"/>.</summary>
    public Surgeon LogTo(ILogger logger) => this with { Logger = logger };

    /// <summary>Computes the importance scores (or returns the given ones).</summary>
    public async Task<IReadOnlyList<ImportanceScores>> ScoreAsync(CancellationToken cancellationToken = default)
    {
        if (GivenScores is not null)
        {
            return GivenScores;
        }

        ThrottledProgress<SurgeryProgress>? throttled = Throttled();
        var progress = throttled is null ? null : new SynchronousProgress<ScoringProgress>(p => throttled.Report(new SurgeryProgress($"scoring: {p.Stage}", p.Completed, p.Total, ProgressUnit.Steps)));
        return await ImportanceScorer.ScoreAsync(TeacherDirectory, Calibration, Scoring, progress, Logger, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Scores (when the plan needs scores) and returns the validated plan, without touching any weight.</summary>
    /// <exception cref="InvalidOperationException">Neither <see cref="Plan"/> nor <see cref="UsePlan"/> was called.</exception>
    public async Task<SurgeryPlan> PlanAsync(CancellationToken cancellationToken = default) =>
        (await PlanWithScoresAsync(cancellationToken).ConfigureAwait(false)).Plan;

    /// <summary>Scores, plans and builds the student into <paramref name="outputDirectory"/>.</summary>
    public async Task<SurgeryResult> BuildAsync(string outputDirectory, CancellationToken cancellationToken = default)
    {
        (IReadOnlyList<ImportanceScores> scores, SurgeryPlan plan) = await PlanWithScoresAsync(cancellationToken).ConfigureAwait(false);
        ThrottledProgress<SurgeryProgress>? throttled = Throttled();
        var progress = throttled is null ? null : new SynchronousProgress<StudentBuildProgress>(p => throttled.Report(new SurgeryProgress("building", p.Completed, p.Total, p.Unit)));
        StudentBuildResult student = await StudentBuilder.BuildAsync(TeacherDirectory, plan, outputDirectory, Build, progress, Logger, cancellationToken).ConfigureAwait(false);
        plan.Save(Path.Combine(outputDirectory, PlanFileName));
        return new SurgeryResult(scores, plan, student, TeacherDirectory);
    }

    private async Task<(IReadOnlyList<ImportanceScores> Scores, SurgeryPlan Plan)> PlanWithScoresAsync(CancellationToken cancellationToken)
    {
        if (GivenPlan is not null)
        {
            GivenPlan.EnsureValid();
            return ([], GivenPlan);
        }

        if (Shape is null)
        {
            throw new InvalidOperationException("Describe the student with Plan(...) or give one with UsePlan(...) first.");
        }

        IReadOnlyList<ImportanceScores> scores = await ScoreAsync(cancellationToken).ConfigureAwait(false);
        ImportanceScores? combined = scores.Count == 0 ? null : ImportanceScores.Combine(scores);
        SurgeryPlan plan = Shape(PlanBuilder.For(Teacher, combined)).Build();
        return (scores, plan);
    }

    // A fresh throttle per run: a configured surgeon is reused, and one run's last report must not hold back the next run's first.
    private ThrottledProgress<SurgeryProgress>? Throttled() =>
        Progress is null ? null : new ThrottledProgress<SurgeryProgress>(Progress, p => (p.Stage, p.Completed, p.Total));
}
