using ModelSurgery.Inference.Reporting;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Training.Export;

/// <summary>A distributed training engine a job can be written for.</summary>
public enum DistributedEngine
{
    /// <summary>
    /// Hugging Face Accelerate with FSDP2, loading the checkpoints through Transformers (<c>hf-accelerate</c>): the
    /// students stay Hugging Face folders, <c>accelerate launch</c> spans N nodes x G GPUs, and a short training script
    /// computes the local objective (distillation over a compressed vocabulary included).
    /// </summary>
    HfAccelerate,
}

/// <summary>Engine names as given on the command line and in recipes.</summary>
public static class DistributedEngines
{
    /// <summary>Every engine name, in the order they are listed.</summary>
    public static IReadOnlyList<string> Names { get; } = ["hf-accelerate"];

    /// <summary>The command-line name of an engine.</summary>
    /// <param name="engine">The engine.</param>
    /// <returns>Its name, e.g. <c>hf-accelerate</c>.</returns>
    public static string NameOf(DistributedEngine engine) => engine switch
    {
        DistributedEngine.HfAccelerate => "hf-accelerate",
        _ => throw new ArgumentOutOfRangeException(nameof(engine), engine, "Unknown engine."),
    };

    /// <summary>The engine called <paramref name="name"/>.</summary>
    /// <param name="name">An engine name (case-insensitive).</param>
    /// <returns>The engine.</returns>
    /// <exception cref="JobExportException">No engine has that name; the message lists the known ones.</exception>
    public static DistributedEngine Parse(string name) =>
        string.Equals(name?.Trim(), "hf-accelerate", StringComparison.OrdinalIgnoreCase)
            ? DistributedEngine.HfAccelerate
            : throw new JobExportException("engine", $"unknown engine '{name}'; known engines: {string.Join(", ", Names)}.", isUsageError: true);
}

/// <summary>
/// What <see cref="JobExporter"/> writes: a runnable job for a distributed engine, from the same inputs and options as a
/// local <c>train</c> or <c>distill</c> run.
/// </summary>
public sealed record JobExportOptions
{
    /// <summary>The engine the job is for.</summary>
    public DistributedEngine Engine { get; init; } = DistributedEngine.HfAccelerate;

    /// <summary>
    /// A job that runs a stage's record on a distributed engine: the schedule of <paramref name="stage"/>, and its loss
    /// when it is <see cref="DistillationOptions"/> and a teacher is given (without a teacher the job continues pretraining).
    /// </summary>
    /// <param name="stage">The training or distillation stage's options, as a local run takes them.</param>
    /// <param name="studentDirectory">Student checkpoint folder.</param>
    /// <param name="teacherDirectory">Teacher checkpoint folder, or null.</param>
    /// <param name="tokensPath">Token file of student ids.</param>
    /// <param name="outputDirectory">The job folder to create.</param>
    public static JobExportOptions ForStage(TrainingStageOptions stage, string studentDirectory, string? teacherDirectory, string tokensPath, string outputDirectory)
    {
        ArgumentNullException.ThrowIfNull(stage);
        return new()
        {
            StudentDirectory = studentDirectory,
            TeacherDirectory = teacherDirectory,
            TokensPath = tokensPath,
            OutputDirectory = outputDirectory,
            Training = stage.ToTrainingOptions(outputDirectory),
            Distillation = teacherDirectory is not null && stage is DistillationOptions d ? d.ToSettings() : null,
        };
    }

    /// <summary>Student checkpoint folder (config.json, safetensors, tokenizer files, and vocab_map.json when its vocabulary was compressed).</summary>
    public required string StudentDirectory { get; init; }

    /// <summary>Teacher checkpoint folder; null writes continued pretraining (cross-entropy only).</summary>
    public string? TeacherDirectory { get; init; }

    /// <summary>Token file of student ids (<c>modelsurgery tokenize</c>); its <c>.json</c> description supplies the validation split.</summary>
    public required string TokensPath { get; init; }

    /// <summary>The job folder to create; it must not exist unless <see cref="Force"/> is set.</summary>
    public required string OutputDirectory { get; init; }

    /// <summary>The local run's hyper-parameters, translated into the job (<see cref="TrainingOptions.OutputDir"/> is not used).</summary>
    public required TrainingOptions Training { get; init; }

    /// <summary>Distillation settings (used when <see cref="TeacherDirectory"/> is set; defaults when null). A teacher cache or a plan (hidden states) cannot be exported.</summary>
    public DistillationSettings? Distillation { get; init; }

    /// <summary>Share of windows held out for validation; null takes the token file's description, else 0.</summary>
    public double? ValidationFraction { get; init; }

    /// <summary>Seed of the train/validation split; null takes the token file's description.</summary>
    public ulong? SplitSeed { get; init; }

    /// <summary>Nodes the job is launched on.</summary>
    public int Nodes { get; init; } = 1;

    /// <summary>GPUs (processes) per node.</summary>
    public int GpusPerNode { get; init; } = 8;

    /// <summary>Windows per optimizer step over all GPUs; null keeps the local run's (batch size x gradient accumulation).</summary>
    public int? GlobalBatchWindows { get; init; }

    /// <summary>Windows per GPU per forward pass; null takes the local batch size or the largest divisor that fits.</summary>
    public int? MicroBatchSize { get; init; }

    /// <summary>Replace <see cref="OutputDirectory"/> when it exists.</summary>
    public bool Force { get; init; }

    /// <summary>Hard-link checkpoint and token files into the job where the file system allows it (copies otherwise).</summary>
    public bool HardLink { get; init; } = true;

    /// <summary>Port of the main process's rendezvous on node 0.</summary>
    public int MainProcessPort { get; init; } = 29500;
}

/// <summary>Progress of an export: the stage and, while files are placed, the bytes done.</summary>
/// <param name="Stage">checking, linking, copying, split, writing or done.</param>
/// <param name="File">The file being placed, if any.</param>
/// <param name="Completed">Bytes placed so far.</param>
/// <param name="Total">Bytes to place in all.</param>
public sealed record JobExportProgress(string Stage, string? File, long Completed, long? Total) : IProgressReport
{
    /// <summary>Always <see cref="ProgressUnit.Bytes"/>.</summary>
    public ProgressUnit Unit => ProgressUnit.Bytes;

    /// <summary>The stage and the file's name, when there is one.</summary>
    public string Status => File is null ? Stage : $"{Stage} {Path.GetFileName(File)}";
}

/// <summary>A written job.</summary>
/// <param name="Directory">The job folder.</param>
/// <param name="Engine">The engine it runs on.</param>
/// <param name="Nodes">Nodes it was written for.</param>
/// <param name="GpusPerNode">GPUs per node.</param>
/// <param name="GlobalBatchWindows">Windows per optimizer step over all GPUs.</param>
/// <param name="MicroBatchSize">Windows per GPU per forward pass.</param>
/// <param name="GradientAccumulation">Micro-batches per optimizer step on each GPU at this world size.</param>
/// <param name="TotalSteps">Optimizer steps.</param>
/// <param name="WarmupSteps">Linear warmup steps.</param>
/// <param name="LaunchCommand">The line that starts the job on one node (run on every node).</param>
/// <param name="LinkedBytes">Bytes hard-linked into the job.</param>
/// <param name="CopiedBytes">Bytes copied into the job.</param>
/// <param name="Notes">What the engine does differently from the local run, one sentence each.</param>
public sealed record ExportedJob(
    string Directory,
    DistributedEngine Engine,
    int Nodes,
    int GpusPerNode,
    int GlobalBatchWindows,
    int MicroBatchSize,
    int GradientAccumulation,
    long TotalSteps,
    long WarmupSteps,
    string LaunchCommand,
    long LinkedBytes,
    long CopiedBytes,
    IReadOnlyList<string> Notes)
{
    /// <summary>Processes over all nodes.</summary>
    public int WorldSize => Nodes * GpusPerNode;
}

/// <summary>
/// An export that cannot be done as asked. <see cref="Option"/> names the option at fault in the words the command line
/// and recipes share (student, teacher, data, out, engine, nodes, gpus-per-node, global-batch, micro-batch, ...); the
/// message starts with it and names the file where one is involved.
/// </summary>
public sealed class JobExportException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="option">The option at fault.</param>
    /// <param name="problem">What is wrong, naming the file where one is involved.</param>
    /// <param name="isUsageError">True when the option's value is wrong (a command-line mistake), false when a file is.</param>
    /// <param name="innerException">The cause, if any.</param>
    public JobExportException(string option, string problem, bool isUsageError = false, Exception? innerException = null)
        : base($"{option}: {problem}", innerException)
    {
        Option = option;
        Problem = problem;
        IsUsageError = isUsageError;
    }

    /// <summary>Creates the exception.</summary>
    public JobExportException()
        : this("export", "failed")
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">The message.</param>
    public JobExportException(string message)
        : this("export", message)
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public JobExportException(string message, Exception innerException)
        : this("export", message, false, innerException)
    {
    }

    /// <summary>The option at fault.</summary>
    public string Option { get; }

    /// <summary>What is wrong, without the option.</summary>
    public string Problem { get; }

    /// <summary>True when the option's value is wrong rather than a file.</summary>
    public bool IsUsageError { get; }
}
