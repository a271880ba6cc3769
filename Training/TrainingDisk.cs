using System.Globalization;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Runtime;

namespace ModelSurgery.Training;

/// <summary>Estimated disk use of a training or distillation run's output folder at its fullest, in bytes.</summary>
/// <param name="Weights">One checkpoint's weights in their stored dtype.</param>
/// <param name="Companions">The tokenizer and vocabulary files copied into every checkpoint.</param>
/// <param name="TrainingState">One <c>training-state.bin</c>: float32 optimized weights (the master copies in bf16) and AdamW's two float32 moments.</param>
/// <param name="ModelCheckpoints">Model checkpoints on disk at once before the final one: <c>last</c>, and <c>best</c> when there is validation, per round.</param>
/// <param name="TrainingStates">Training states on disk at once (one per round's <c>last</c>).</param>
/// <param name="Replaced">Bytes already in the checkpoint folders the run rewrites (a resumed or forced run), which the new files replace.</param>
public sealed record TrainingDiskEstimate(long Weights, long Companions, long TrainingState, int ModelCheckpoints, int TrainingStates, long Replaced)
{
    /// <summary>
    /// The largest file written next to its old version while a checkpoint is replaced atomically (the new copy exists
    /// in full before the old one goes): the weights or the training state, whichever is larger.
    /// </summary>
    public long Temporary => Math.Max(Weights, TrainingState);

    /// <summary>
    /// The peak: the kept checkpoints and states, plus the larger of the temporary copy during a rewrite and the final
    /// checkpoint (written after the last rewrite), less what is already there to be replaced.
    /// </summary>
    public long Total => Math.Max(0, (ModelCheckpoints * (Weights + Companions)) + (TrainingStates * TrainingState) + Math.Max(Temporary, Weights + Companions) - Replaced);

    /// <summary>One line with every part, for messages.</summary>
    public string Summary() => string.Create(CultureInfo.InvariantCulture,
        $"{ModelCheckpoints} checkpoint(s) of {ByteSize.Format(Weights + Companions)} (weights {ByteSize.Format(Weights)}, tokenizer files {ByteSize.Format(Companions)}) plus the final one, {TrainingStates} training state(s) of {ByteSize.Format(TrainingState)} (float32 weights and two AdamW moments), one temporary copy of {ByteSize.Format(Temporary)} while a checkpoint is replaced{(Replaced > 0 ? $", less {ByteSize.Format(Replaced)} already there" : string.Empty)}");
}

/// <summary>
/// The disk a training run writes into its output folder, from the config and options alone, checked before the model
/// is loaded. The factors follow what <see cref="Trainer"/> and the checkpointer write: every checkpoint holds the
/// weights in the stored dtype (the save dtype, else the compute dtype) and the source folder's tokenizer files;
/// <c>checkpoints/last</c> also holds the training state (float32 weights, AdamW's two float32 moments, RNG and history,
/// the last two small); each file is written under a temporary name and then renamed over the old one.
/// </summary>
public static class TrainingDisk
{
    private const long Float = 4;

    /// <summary>Estimates the peak disk use of training <paramref name="student"/> with <paramref name="options"/>.</summary>
    /// <param name="student">The trained model's config.</param>
    /// <param name="options">Precision and output folder.</param>
    /// <param name="save">How checkpoints are stored; null stores the compute dtype.</param>
    /// <param name="validation">Whether the run validates (and so keeps a <c>best</c> checkpoint).</param>
    /// <param name="rounds">Rounds that each keep their own <c>last</c> and <c>best</c> (1 for a single run or a continuous multi-round run).</param>
    /// <param name="companionBytes">Bytes of the tokenizer and vocabulary files copied into every checkpoint.</param>
    /// <param name="objectiveParameters">Parameters the objective trains besides the model (hidden-state projections), saved in the training state only.</param>
    /// <returns>The estimate by part.</returns>
    public static TrainingDiskEstimate Estimate(LlamaConfig student, TrainingOptions options, ModelSaveOptions? save = null, bool validation = false, int rounds = 1, long companionBytes = 0, long objectiveParameters = 0)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(rounds, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(companionBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(objectiveParameters);
        long parameters = LlamaTensorLayout.CountParameters(student).Total;
        long element = save?.DType is { } dtype ? dtype.ElementSize() : options.Precision == TrainingPrecision.Bf16 ? 2 : Float;
        long state = 3 * (parameters + objectiveParameters) * Float;
        long replaced = CheckpointFolders(options.OutputDir).Where(Directory.Exists)
            .Sum(d => Directory.EnumerateFiles(d, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length));
        return new TrainingDiskEstimate(parameters * element, companionBytes, state, rounds * (validation ? 2 : 1), rounds, replaced);
    }

    /// <summary>
    /// Throws before any model is loaded when the estimate exceeds the free space on the disk of
    /// <see cref="TrainingOptions.OutputDir"/> (<see cref="MemoryPreflight.EnsureDiskSpace"/>).
    /// </summary>
    /// <param name="modelDir">The trained model's folder (its tokenizer files count in every checkpoint).</param>
    /// <param name="student">The trained model's config.</param>
    /// <param name="options">Precision and output folder.</param>
    /// <param name="save">How checkpoints are stored; null stores the compute dtype.</param>
    /// <param name="validation">Whether the run validates.</param>
    /// <param name="rounds">Rounds that each keep their own checkpoints.</param>
    /// <param name="objectiveParameters">Parameters the objective trains besides the model (hidden-state projections).</param>
    /// <exception cref="IOException">Not enough free space; the message names the output folder, both figures and every part.</exception>
    public static void EnsureFits(string modelDir, LlamaConfig student, TrainingOptions options, ModelSaveOptions? save = null, bool validation = false, int rounds = 1, long objectiveParameters = 0)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelDir);
        ArgumentNullException.ThrowIfNull(options);
        TrainingDiskEstimate estimate = Estimate(student, options, save, validation, rounds, CompanionBytes(modelDir), objectiveParameters);
        var lower = new List<string>();
        if (options.Precision != TrainingPrecision.Bf16 && save?.DType is null)
        {
            lower.Add("--precision bf16 (weights stored in bf16)");
        }

        if (validation)
        {
            lower.Add("--val-fraction 0 (no best checkpoint)");
        }

        if (rounds > 1)
        {
            lower.Add("fewer --rounds or --round-schedule continue (one set of checkpoints for all rounds)");
        }

        MemoryPreflight.EnsureDiskSpace(
            options.OutputDir,
            estimate.Total,
            $"Training into {options.OutputDir} (--out)",
            $"That is {estimate.Summary()}. {(lower.Count == 0 ? "Free space on that disk or choose another --out." : $"Free space, choose another --out, or lower it with {string.Join(", ", lower)}.")}");
    }

    /// <summary>
    /// Parameters of the hidden-state projections a distillation with a plan trains: one bias-free student-width to
    /// teacher-width matrix per student layer, none when the widths agree (see <see cref="Distillation.HiddenStateDistillation"/>).
    /// </summary>
    /// <param name="student">The student's config.</param>
    /// <param name="teacher">The teacher's config.</param>
    /// <returns>The parameter count.</returns>
    public static long HiddenProjectionParameters(LlamaConfig student, LlamaConfig teacher)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(teacher);
        return student.HiddenSize == teacher.HiddenSize ? 0 : (long)student.NumHiddenLayers * student.HiddenSize * teacher.HiddenSize;
    }

    /// <summary>Bytes of the files the checkpointer copies from <paramref name="modelDir"/> into every checkpoint.</summary>
    private static long CompanionBytes(string modelDir) =>
        Recipes.SafetensorsModelCheckpointer.CompanionFiles.Select(n => new FileInfo(Path.Combine(modelDir, n))).Where(f => f.Exists).Sum(f => f.Length);

    /// <summary>The folders whose checkpoints a run in <paramref name="outputDir"/> rewrites: its own, every round's and the continuous run's.</summary>
    private static IEnumerable<string> CheckpointFolders(string outputDir)
    {
        if (string.IsNullOrEmpty(outputDir) || !Directory.Exists(outputDir))
        {
            yield break;
        }

        yield return Path.Combine(outputDir, "checkpoints");
        yield return Path.Combine(outputDir, "rounds", "checkpoints");
        foreach (string round in Directory.EnumerateDirectories(outputDir, "round-*"))
        {
            yield return Path.Combine(round, "checkpoints");
        }
    }
}
