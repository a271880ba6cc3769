using System.Text.Json.Serialization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Training.Distillation;

namespace ModelSurgery.Training.Recipes;

/// <summary>
/// The training stage's options: the whole schedule (length, batch, learning rate, optimizer, precision, checkpoints,
/// validation) and the device. <see cref="StudentPipeline.Train"/> and the <c>train</c> command take this record;
/// <see cref="DistillationOptions"/> extends it with the loss, so both stages share one set of keys (snake_case in JSON,
/// e.g. <c>learning_rate</c>), defaults and checks.
/// </summary>
public record TrainingStageOptions
{
    /// <summary>Optimizer steps when neither <see cref="Steps"/> nor <see cref="Tokens"/> is given.</summary>
    public const long DefaultSteps = 100;

    /// <summary>Optimizer steps; null with no <see cref="Tokens"/> is <see cref="DefaultSteps"/> (key <c>steps</c>).</summary>
    public long? Steps { get; init; }

    /// <summary>
    /// Training tokens to consume instead of a step count: steps = ceil(tokens / (batch_size x seq_len x grad_accum))
    /// (key <c>tokens</c>; give <c>steps</c> or <c>tokens</c>, not both).
    /// </summary>
    public long? Tokens { get; init; }

    /// <summary>Windows per micro-batch (key <c>batch_size</c>).</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>Tokens per window (key <c>seq_len</c>).</summary>
    public int SeqLen { get; init; } = 128;

    /// <summary>Micro-batches accumulated per optimizer step (key <c>grad_accum</c>).</summary>
    public int GradAccum { get; init; } = 1;

    /// <summary>Peak learning rate (key <c>learning_rate</c>).</summary>
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>Learning rate at the end of the cosine decay; null is a tenth of <see cref="LearningRate"/> (key <c>min_learning_rate</c>).</summary>
    public double? MinLearningRate { get; init; }

    /// <summary>Share of the steps spent in linear warmup (key <c>warmup_fraction</c>).</summary>
    public double WarmupFraction { get; init; } = 0.03;

    /// <summary>AdamW decoupled weight decay, not applied to norms and biases (key <c>weight_decay</c>).</summary>
    public double WeightDecay { get; init; } = 0.1;

    /// <summary>Maximum global L2 norm of the gradient; 0 disables clipping (key <c>grad_clip</c>).</summary>
    public double GradClip { get; init; } = 1.0;

    /// <summary>Compute precision: <c>fp32</c>, or <c>bf16</c> with float32 master weights (key <c>precision</c>).</summary>
    public TrainingPrecision Precision { get; init; } = TrainingPrecision.Fp32;

    /// <summary>
    /// Steps in a row with a non-finite loss or gradient (each skipped) after which the run stops with an error (key
    /// <c>max_non_finite_steps</c>). One stops at the first: a run that has diverged, or whose data or model is broken,
    /// fails at once rather than writing a model that learned nothing.
    /// </summary>
    public int MaxNonFiniteSteps { get; init; } = 1;

    /// <summary>Steps between resumable checkpoints; 0 saves only at the end (key <c>checkpoint_every</c>).</summary>
    public int CheckpointEvery { get; init; } = 50;

    /// <summary>Steps between validation passes; 0 validates only at the end (key <c>eval_every</c>).</summary>
    public int EvalEvery { get; init; } = 50;

    /// <summary>Validation batches per validation pass (key <c>eval_batches</c>).</summary>
    public int EvalBatches { get; init; } = 4;

    /// <summary>Seed of the data order and of torch's generator (key <c>seed</c>).</summary>
    public ulong Seed { get; init; } = 1234;

    /// <summary>Device: <c>auto</c>, <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c> (key <c>device</c>).</summary>
    public string Device { get; init; } = "auto";

    /// <summary>Every problem of the options, each starting with the key of the option at fault (e.g. <c>steps</c>).</summary>
    /// <param name="name">Maps a key to the caller's name for it (a recipe field, a flag, a property); null uses the keys.</param>
    /// <returns>The problems; empty when the options are valid.</returns>
    public IReadOnlyList<string> Validate(Func<string, string>? name = null)
    {
        var problems = new OptionProblems(name);
        Check(problems);
        return problems.List;
    }

    /// <summary>Throws when an option is out of range.</summary>
    /// <exception cref="ArgumentException">Every problem, each naming its option as <c>Record.key</c>.</exception>
    public void ThrowIfInvalid()
    {
        string record = GetType().Name;
        OptionProblems.ThrowIfAny(Validate(key => record + "." + key));
    }

    /// <summary>Adds the problems of these options; a derived stage adds its own after the schedule's.</summary>
    /// <param name="problems">The collector.</param>
    protected virtual void Check(OptionProblems problems)
    {
        ArgumentNullException.ThrowIfNull(problems);
        problems.Check(Steps is null or >= 1, "steps", "must be at least 1");
        problems.Check(Tokens is null or >= 1, "tokens", "must be at least 1");
        problems.Exclusive(Steps is not null, "steps", Tokens is not null, "tokens");
        problems.Check(BatchSize >= 1, "batch_size", "must be at least 1");
        problems.Check(SeqLen >= 1, "seq_len", "must be at least 1");
        problems.Check(GradAccum >= 1, "grad_accum", "must be at least 1");
        problems.Check(LearningRate > 0 && double.IsFinite(LearningRate), "learning_rate", "must be positive");
        problems.Check(MinLearningRate is null || (MinLearningRate >= 0 && MinLearningRate <= LearningRate), "min_learning_rate", $"must be in [0, {problems.Name("learning_rate")}]");
        problems.Check(WarmupFraction is >= 0 and < 1, "warmup_fraction", "must be in [0, 1)");
        problems.Check(WeightDecay >= 0 && double.IsFinite(WeightDecay), "weight_decay", "must not be negative");
        problems.Check(GradClip >= 0 && double.IsFinite(GradClip), "grad_clip", "must not be negative (0 turns clipping off)");
        problems.Check(Enum.IsDefined(Precision), "precision", $"must be one of {string.Join(", ", OptionNames.Names<TrainingPrecision>())}");
        problems.Check(MaxNonFiniteSteps >= 1, "max_non_finite_steps", "must be at least 1");
        problems.Check(CheckpointEvery >= 0, "checkpoint_every", "must not be negative (0 saves only at the end)");
        problems.Check(EvalEvery >= 0, "eval_every", "must not be negative (0 validates only at the end)");
        problems.Check(EvalBatches >= 0, "eval_batches", "must not be negative");
        problems.Check(ComputeDevice.IsValidName(Device), "device", $"'{Device}' is not auto, cpu, cuda or cuda:N");
    }

    /// <summary>The optimizer steps the run takes: <see cref="Steps"/>, else derived from <see cref="Tokens"/>, else <see cref="DefaultSteps"/>.</summary>
    /// <exception cref="ArgumentException">The options are invalid (check <see cref="Validate"/> first for messages naming the keys).</exception>
    public long TotalSteps() => ToTrainingOptions("unused").TotalSteps();

    /// <summary>The trainer's options for a run writing into <paramref name="outputDirectory"/>.</summary>
    internal TrainingOptions ToTrainingOptions(string outputDirectory) => new()
    {
        OutputDir = outputDirectory,
        Steps = Steps ?? (Tokens is null ? DefaultSteps : null),
        Tokens = Tokens,
        BatchSize = BatchSize,
        SeqLen = SeqLen,
        GradAccumulation = GradAccum,
        LearningRate = LearningRate,
        MinLearningRate = MinLearningRate ?? LearningRate / 10,
        WarmupFraction = WarmupFraction,
        WeightDecay = WeightDecay,
        GradClip = GradClip,
        Precision = Precision,
        MaxNonFiniteSteps = MaxNonFiniteSteps,
        CheckpointEvery = CheckpointEvery,
        EvalEvery = EvalEvery,
        EvalBatches = EvalBatches,
        Seed = Seed,
    };
}

/// <summary>
/// The distillation stage's options: the training stage's schedule and device (<see cref="TrainingStageOptions"/>) plus
/// the loss and the teacher. <see cref="StudentPipeline.Distill"/>, the <c>distill</c> command and a recipe's
/// <c>distillation</c> section take this record (JSON keys in snake_case, e.g. <c>kd_loss</c>), so all share one set of
/// names, defaults and checks.
/// </summary>
public sealed record DistillationOptions : TrainingStageOptions
{
    /// <summary><c>kl</c> (forward KL), <c>rkl</c> (reverse KL) or <c>jsd</c> (key <c>kd_loss</c>).</summary>
    public DistillationDivergence KdLoss { get; init; } = DistillationDivergence.ForwardKl;

    /// <summary>Softmax temperature (key <c>temperature</c>).</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Weight of the distillation term; 1 - alpha weighs cross-entropy (key <c>alpha</c>).</summary>
    public double Alpha { get; init; } = 0.5;

    /// <summary>
    /// Top-k teacher logits from <c>cache-teacher</c> (same token file, <c>seq_len</c> and split) to distil from instead of
    /// running the teacher; null runs the teacher (key <c>teacher_cache</c>).
    /// </summary>
    public string? TeacherCache { get; init; }

    /// <summary>
    /// A surgery plan (<c>plan.json</c>) whose layer map also matches student layer i to teacher layer
    /// <c>plan.layers[i].teacher_layer</c>'s hidden state; null distils logits only (key <c>hidden_state_plan</c>).
    /// </summary>
    public string? HiddenStatePlan { get; init; }

    /// <summary>Weight of the hidden-state term, with <see cref="HiddenStatePlan"/> (key <c>hidden_weight</c>).</summary>
    public double HiddenWeight { get; init; } = 1.0;

    /// <summary>Precision the teacher runs in: <c>fp32</c> or <c>bf16</c> (half its memory) (key <c>teacher_dtype</c>).</summary>
    public TrainingPrecision TeacherDtype { get; init; } = TrainingPrecision.Fp32;

    /// <summary>Whether the run needs the teacher's checkpoint folder: unless a teacher cache stands in for it (hidden states always need it).</summary>
    [JsonIgnore]
    public bool NeedsTeacherFolder => TeacherCache is null || HiddenStatePlan is not null;

    /// <inheritdoc/>
    protected override void Check(OptionProblems problems)
    {
        ArgumentNullException.ThrowIfNull(problems);
        problems.Check(Enum.IsDefined(KdLoss), "kd_loss", $"must be one of {string.Join(", ", OptionNames.Names<DistillationDivergence>())}");
        problems.Check(Temperature > 0 && double.IsFinite(Temperature), "temperature", "must be positive");
        problems.Check(Alpha is >= 0 and <= 1, "alpha", "must be in [0, 1]");
        base.Check(problems);
        problems.Check(HiddenWeight >= 0 && double.IsFinite(HiddenWeight), "hidden_weight", "must not be negative");
        problems.Check(Enum.IsDefined(TeacherDtype), "teacher_dtype", $"must be one of {string.Join(", ", OptionNames.Names<TrainingPrecision>())}");

        // A cache holds the teacher's logits only; hidden states need the running teacher.
        problems.Check(TeacherCache is null || HiddenStatePlan is null, "teacher_cache", $"cannot be combined with {problems.Name("hidden_state_plan")}: hidden-state distillation runs the teacher");
    }

    /// <summary>The loss settings (divergence, temperature, alpha, teacher cache, hidden-state plan, teacher precision).</summary>
    /// <param name="resolve">Resolves the cache and plan paths (a recipe's are relative to its file); null keeps them as written.</param>
    internal DistillationSettings ToSettings(Func<string, string>? resolve = null)
    {
        resolve ??= path => path;
        return new()
        {
            Divergence = KdLoss,
            Temperature = Temperature,
            Alpha = Alpha,
            TeacherCachePath = TeacherCache is null ? null : resolve(TeacherCache),
            PlanPath = HiddenStatePlan is null ? null : resolve(HiddenStatePlan),
            HiddenWeight = HiddenWeight,
            TeacherDType = TeacherDtype == TrainingPrecision.Bf16 ? TorchSharp.torch.ScalarType.BFloat16 : null,
        };
    }
}

/// <summary>
/// The evaluation stage's options: which benchmarks and text files, and how. <see cref="StudentPipeline.Evaluate"/> and
/// a recipe's <c>evaluation</c> section take this record (JSON keys in snake_case).
/// </summary>
public sealed record EvaluationSuite
{
    /// <summary>Benchmark task names the <see cref="Tasks"/> map accepts.</summary>
    public static readonly IReadOnlyList<string> KnownTasks = ["arc_easy", "arc_challenge", "hellaswag", "piqa", "boolq", "mmlu"];

    /// <summary>Benchmark name to its JSONL file (key <c>tasks</c>).</summary>
    public IReadOnlyDictionary<string, string> Tasks { get; init; } = new Dictionary<string, string>();

    /// <summary>Text files scored for perplexity and bits per byte; the task is named after the file without extension (key <c>text</c>).</summary>
    public IReadOnlyList<string> Text { get; init; } = [];

    /// <summary>Sequences per forward pass (key <c>batch_size</c>).</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>Longest sequence scored; null is each model's <c>max_position_embeddings</c> (key <c>max_length</c>).</summary>
    public int? MaxLength { get; init; }

    /// <summary>Evaluate the teacher too, for a side-by-side table, when its folder holds a tokenizer (key <c>include_teacher</c>).</summary>
    public bool IncludeTeacher { get; init; } = true;

    /// <summary>Every problem of the options, each starting with the key at fault (the empty key is the whole section).</summary>
    /// <param name="name">Maps a key to the caller's name for it; null uses the keys.</param>
    /// <returns>The problems; empty when the options are valid.</returns>
    public IReadOnlyList<string> Validate(Func<string, string>? name = null)
    {
        name ??= key => key.Length == 0 ? "evaluation" : key;
        var problems = new OptionProblems(name);

        problems.Check((Tasks?.Count ?? 0) + (Text?.Count ?? 0) > 0, string.Empty, "give tasks or text files (or leave evaluation out)");
        foreach (string task in Tasks?.Keys ?? [])
        {
            problems.Check(KnownTasks.Contains(task), $"tasks.{task}", $"unknown task (known: {string.Join(", ", KnownTasks)})");
        }

        problems.Check(BatchSize >= 1, "batch_size", "must be at least 1");
        problems.Check(MaxLength is null or >= 1, "max_length", "must be at least 1");
        return problems.List;
    }

    /// <summary>The tasks to run, with every file path passed through <paramref name="resolve"/> (null keeps them as written).</summary>
    /// <exception cref="ArgumentException">A benchmark name is unknown.</exception>
    public IReadOnlyList<TaskSpec> ToTaskSpecs(Func<string, string>? resolve = null)
    {
        resolve ??= path => path;
        return
        [
            .. Tasks.Select(t => TaskSpec.ForHarnessTask(t.Key, resolve(t.Value)) ?? throw new ArgumentException($"tasks.{t.Key}: unknown task (known: {string.Join(", ", KnownTasks)}).")),
            .. Text.Select(p => TaskSpec.Text(Path.GetFileNameWithoutExtension(p), resolve(p))),
        ];
    }

    /// <summary>The evaluator's options for one model.</summary>
    internal EvaluationOptions ToEvaluationOptions(string modelName, int maxPositions) =>
        new() { ModelName = modelName, BatchSize = BatchSize, MaxLength = MaxLength ?? maxPositions };
}
