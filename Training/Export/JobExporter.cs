using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Training.Export;

/// <summary>
/// Writes a runnable job for a distributed training engine from the inputs and options of a local run: the engine's
/// configuration, a launch script for N nodes x G GPUs, the student (and teacher) in the layout the engine loads with the
/// student's own tokenizer and <c>vocab_map.json</c>, the corpus and its train/validation split, and the hyper-parameters
/// translated. The job is assembled in a temporary folder next to the output and renamed into place, so a half-written
/// job never appears. The command line (<c>export-job</c>) and recipes (<c>export_job</c>) call this.
/// </summary>
public static class JobExporter
{
    /// <summary>Folder of the student inside a job.</summary>
    public const string StudentFolder = "student";

    /// <summary>Folder of the teacher inside a job.</summary>
    public const string TeacherFolder = "teacher";

    /// <summary>Folder of the corpus inside a job.</summary>
    public const string DataFolder = "data";

    /// <summary>Checks the options and writes the job.</summary>
    /// <param name="options">Inputs, hyper-parameters and the cluster shape.</param>
    /// <param name="progress">Stages and bytes placed (checkpoints can be large when they must be copied).</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="cancellationToken">Cancels; nothing is left behind.</param>
    /// <returns>What was written.</returns>
    /// <exception cref="JobExportException">An option or input is wrong; the message names the option and the file.</exception>
    public static async Task<ExportedJob> ExportAsync(
        JobExportOptions options,
        IProgress<JobExportProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        logger ??= NullLogger.Instance;
        progress?.Report(new JobExportProgress("checking", null, 0, null));
        JobPlan plan = Check(options);
        string output = Path.GetFullPath(options.OutputDirectory);
        string parent = Path.GetDirectoryName(output) ?? throw new JobExportException("out", $"'{output}' has no parent folder.", isUsageError: true);
        // Before anything is written: the checkpoints and corpus that will be copied rather than linked, and the split.
        EnsureDiskSpace(plan, parent);
        Directory.CreateDirectory(parent);
        string temp = Path.Combine(parent, $".{Path.GetFileName(output)}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(temp);
        try
        {
            (long linked, long copied) = await PlaceFilesAsync(plan, temp, progress, cancellationToken).ConfigureAwait(false);
            progress?.Report(new JobExportProgress("split", null, linked + copied, linked + copied));
            WriteSplit(plan, Path.Combine(temp, DataFolder));
            progress?.Report(new JobExportProgress("writing", null, linked + copied, linked + copied));
            ExportedJob job = options.Engine switch
            {
                DistributedEngine.HfAccelerate => HfAccelerateJob.Write(plan, temp, output, linked, copied),
                _ => throw new JobExportException("engine", $"engine {options.Engine} has no writer.", isUsageError: true),
            };
            cancellationToken.ThrowIfCancellationRequested();
            if (Directory.Exists(output))
            {
                Directory.Delete(output, recursive: true);
            }

            Directory.Move(temp, output);
            string engine = DistributedEngines.NameOf(options.Engine);
            ExportLog.Written(logger, output, engine, job.WorldSize, linked, copied);
            progress?.Report(new JobExportProgress("done", null, linked + copied, linked + copied));
            return job;
        }
        finally
        {
            if (Directory.Exists(temp))
            {
                Directory.Delete(temp, recursive: true);
            }
        }
    }

    /// <summary>Everything the writers need, checked.</summary>
    internal sealed record JobPlan(
        JobExportOptions Options,
        string Student,
        LlamaConfig StudentConfig,
        VocabularyMap? VocabularyMap,
        string? Teacher,
        LlamaConfig? TeacherConfig,
        DistillationSettings? Distillation,
        string TokensPath,
        long TokenCount,
        int BytesPerToken,
        int SeparatorId,
        int TokenVocabSize,
        DatasetSplit Split,
        IReadOnlyList<long> EvalWindows,
        double ValidationFraction,
        ulong SplitSeed,
        int GlobalBatch,
        int MicroBatch,
        long TotalSteps,
        long WarmupSteps);

    private static JobPlan Check(JobExportOptions o)
    {
        Usage(o.Nodes >= 1, "nodes", $"must be at least 1, got {o.Nodes}.");
        Usage(o.GpusPerNode >= 1, "gpus-per-node", $"must be at least 1, got {o.GpusPerNode}.");
        Usage(o.MainProcessPort is > 0 and < 65536, "main-port", $"must be a TCP port, got {o.MainProcessPort}.");
        ArgumentNullException.ThrowIfNull(o.Training);
        try
        {
            o.Training.Validate();
        }
        catch (ArgumentException e)
        {
            throw new JobExportException(e.ParamName ?? "training", e.Message, isUsageError: true, e);
        }

        string output = Path.GetFullPath(o.OutputDirectory);
        Usage(!Directory.Exists(output) || o.Force, "out", $"'{output}' already exists; give --force (recipes: export_job.force) to replace it.");
        Usage(!File.Exists(output), "out", $"'{output}' is a file.");

        string student = Path.GetFullPath(o.StudentDirectory);
        LlamaConfig studentConfig = LoadCheckpointConfig(student, "student");
        if (!TokenizerFiles.IsInFolder(student))
        {
            throw new JobExportException("student", $"'{student}' holds no tokenizer.json or tokenizer.model; the job ships the tokenizer the student uses, so copy it into the student folder.");
        }

        VocabularyMap? map = null;
        string mapPath = Path.Combine(student, CheckpointTraining.VocabularyMapFileName);
        if (File.Exists(mapPath))
        {
            try
            {
                map = VocabularyMap.Load(mapPath);
            }
            catch (InvalidDataException e)
            {
                throw new JobExportException("student", e.Message, innerException: e);
            }

            if (map.NewVocabSize > studentConfig.VocabSize)
            {
                throw new JobExportException("student", $"'{mapPath}' maps {map.NewVocabSize} student ids but '{Path.Combine(student, "config.json")}' has vocab_size {studentConfig.VocabSize}.");
            }
        }

        DistillationSettings? distillation = null;
        string? teacher = null;
        LlamaConfig? teacherConfig = null;
        if (o.TeacherDirectory is not null)
        {
            distillation = o.Distillation ?? new DistillationSettings();
            Usage(distillation.PlanPath is null, "plan", "hidden-state distillation is not exported: the job distils logits only (see the README's 'Past one machine').");
            Usage(distillation.TeacherCachePath is null, "teacher-cache", "a top-k teacher cache is not exported: the job runs the teacher on every GPU.");
            Usage(distillation.Temperature > 0 && double.IsFinite(distillation.Temperature), "temperature", $"must be positive, got {distillation.Temperature}.");
            Usage(distillation.Alpha is >= 0 and <= 1, "alpha", $"must be in [0, 1], got {distillation.Alpha}.");
            Usage(distillation.TeacherDType is null or TorchSharp.torch.ScalarType.Float32 or TorchSharp.torch.ScalarType.BFloat16, "teacher-dtype", "must be fp32 or bf16.");
            teacher = Path.GetFullPath(o.TeacherDirectory);
            teacherConfig = LoadCheckpointConfig(teacher, "teacher");
            if (map is null && teacherConfig.VocabSize != studentConfig.VocabSize)
            {
                throw new JobExportException(
                    "teacher",
                    $"'{teacher}' has a vocabulary of {teacherConfig.VocabSize} ids and the student '{student}' one of {studentConfig.VocabSize}, and the student folder has no {CheckpointTraining.VocabularyMapFileName} to map one onto the other; distil from the teacher the student's vocabulary was compressed from.");
            }

            if (map is not null && map.KeptOldIds.Count > 0 && map.KeptOldIds.Max() >= teacherConfig.VocabSize)
            {
                throw new JobExportException(
                    "teacher",
                    $"'{mapPath}' keeps teacher id {map.KeptOldIds.Max()} but '{teacher}' has a vocabulary of {teacherConfig.VocabSize} ids; it is not the teacher the vocabulary was compressed from.");
            }
        }
        else if (o.Distillation is not null)
        {
            throw new JobExportException("teacher", "distillation settings were given without a teacher folder.", isUsageError: true);
        }

        string tokens = Path.GetFullPath(o.TokensPath);
        if (!File.Exists(tokens))
        {
            throw new JobExportException("data", $"'{tokens}' does not exist.");
        }

        long count;
        int bytesPerToken;
        int separator;
        try
        {
            using TokenFile file = TokenFile.Open(tokens);
            (count, bytesPerToken, separator) = (file.Count, file.BytesPerToken, file.SeparatorId);
        }
        catch (InvalidDataException e)
        {
            throw new JobExportException("data", e.Message, innerException: e);
        }

        TokenFileInfo? info;
        try
        {
            info = TokenFileInfo.TryLoad(tokens);
        }
        catch (InvalidDataException e)
        {
            throw new JobExportException("data", e.Message, innerException: e);
        }

        int tokenVocab = info?.VocabSize ?? (separator + 1);
        if (separator >= studentConfig.VocabSize || tokenVocab > studentConfig.VocabSize)
        {
            throw new JobExportException(
                "data",
                $"'{tokens}' uses a vocabulary of {tokenVocab} ids (separator {separator}) but the student '{student}' has vocab_size {studentConfig.VocabSize}; tokenize with the student's tokenizer.");
        }

        TrainingOptions t = o.Training;
        double fraction = o.ValidationFraction ?? info?.ValidationFraction ?? 0;
        Usage(fraction is >= 0 and < 1, "val-fraction", $"must be in [0, 1), got {fraction}.");
        ulong splitSeed = o.SplitSeed ?? info?.SplitSeed ?? TokenFileInfo.DefaultSplitSeed;
        long windows = TokenWindows.Count(count, t.SeqLen);
        if (windows == 0)
        {
            throw new JobExportException("data", $"'{tokens}' has {count} tokens, not enough for one window of --seq-len {t.SeqLen} + 1.");
        }

        // The local run's split (OpenData), a held-out part recorded in the description included.
        DatasetSplit split;
        try
        {
            split = DatasetSplit.ForTokenFile(tokens, info, count, t.SeqLen, o.ValidationFraction, o.SplitSeed);
        }
        catch (ArgumentException e)
        {
            throw new JobExportException("data", e.Message, innerException: e);
        }

        if (o.ValidationFraction is null && info?.ValidationStartToken is not null)
        {
            // Recorded in the job's config for information: the share the held-out part makes.
            fraction = (double)split.Validation.Count / windows;
        }

        // The local run validates on its first EvalBatches whole batches of validation windows, in order.
        long evalCount = Math.Min(t.EvalBatches, split.Validation.Count / t.BatchSize) * (long)t.BatchSize;
        IReadOnlyList<long> evalWindows = [.. split.Validation.Take((int)evalCount)];

        int world = o.Nodes * o.GpusPerNode;
        int localGlobal = t.BatchSize * t.GradAccumulation;
        int global = o.GlobalBatchWindows ?? localGlobal;
        Usage(global >= 1, "global-batch", $"must be at least 1, got {global}.");
        Usage(
            global % world == 0,
            "global-batch",
            $"{global} windows per step ({(o.GlobalBatchWindows is null ? "the local --batch-size x --grad-accum" : "as given")}) cannot be shared evenly by {world} GPUs ({o.Nodes} nodes x {o.GpusPerNode}); give --global-batch as a multiple of {world} (and consider the learning rate: LearningRateScaling.ScaleForBatch).");
        int micro = o.MicroBatchSize ?? LargestDivisorAtMost(global / world, t.BatchSize);
        Usage(micro >= 1 && global % (micro * world) == 0, "micro-batch", $"{micro} windows per GPU do not divide the {global / world} windows each of the {world} GPUs takes per step.");
        Usage(split.Train.Count >= (long)micro * world, "data", $"'{tokens}' has {split.Train.Count} training windows of {t.SeqLen} + 1 tokens, fewer than one micro-batch on every GPU ({micro} x {world}).");

        // The step count is the local run's; when the global batch changes and the run was sized in tokens, the token
        // budget is kept instead.
        long steps = global != localGlobal && t.Steps is null
            ? (t.Tokens!.Value + ((long)global * t.SeqLen) - 1) / ((long)global * t.SeqLen)
            : t.TotalSteps();
        long warmup = LearningRateSchedule.For(t, steps).WarmupSteps;
        return new JobPlan(o, student, studentConfig, map, teacher, teacherConfig, distillation, tokens, count, bytesPerToken, separator, tokenVocab, split, evalWindows, fraction, splitSeed, global, micro, steps, warmup);
    }

    private static int LargestDivisorAtMost(int value, int limit)
    {
        for (int d = Math.Min(value, limit); d > 1; d--)
        {
            if (value % d == 0)
            {
                return d;
            }
        }

        return 1;
    }

    private static LlamaConfig LoadCheckpointConfig(string directory, string option)
    {
        string config = Path.Combine(directory, "config.json");
        if (!Directory.Exists(directory))
        {
            throw new JobExportException(option, $"'{directory}' does not exist.");
        }

        if (!File.Exists(config))
        {
            throw new JobExportException(option, $"'{directory}' is not a checkpoint folder (no config.json).");
        }

        if (!Directory.EnumerateFiles(directory, "*.safetensors").Any())
        {
            throw new JobExportException(option, $"'{directory}' holds no .safetensors weights.");
        }

        try
        {
            return LlamaConfig.Load(config);
        }
        catch (InvalidDataException e)
        {
            throw new JobExportException(option, e.Message, innerException: e);
        }
    }

    private static void Usage(bool condition, string option, string problem)
    {
        if (!condition)
        {
            throw new JobExportException(option, problem, isUsageError: true);
        }
    }

    /// <summary>
    /// Estimates the bytes <see cref="ExportAsync"/> writes into the disk of <see cref="JobExportOptions.OutputDirectory"/>:
    /// the student's and teacher's files and the token file where they are copied (with
    /// <see cref="JobExportOptions.HardLink"/> a file on the output's file system is linked and costs nothing), the split
    /// files, and <see cref="ScriptAllowance"/> for the engine's configuration and scripts.
    /// </summary>
    /// <param name="options">Inputs, hyper-parameters and the cluster shape.</param>
    /// <returns>The estimate in bytes.</returns>
    /// <exception cref="JobExportException">An option or input is wrong.</exception>
    public static long EstimateDiskBytes(JobExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        JobPlan plan = Check(options);
        return EstimateDiskBytes(plan, OutputParent(plan)).Total;
    }

    /// <summary>Bytes allowed for the engine's configuration, job description and scripts (a few kilobytes in practice).</summary>
    public const long ScriptAllowance = 1L << 20;

    private static string OutputParent(JobPlan plan) => Path.GetDirectoryName(Path.GetFullPath(plan.Options.OutputDirectory)) ?? Path.GetFullPath(plan.Options.OutputDirectory);

    private static (long Total, long Copied, long Split) EstimateDiskBytes(JobPlan plan, string parent)
    {
        string? target = plan.Options.HardLink && !OperatingSystem.IsWindows() ? MountPoint(parent) : null;
        long copied = Placements(plan, parent)
            .Where(f => target is null || MountPoint(f.Source) != target)
            .Sum(f => new FileInfo(f.Source).Length);

        // Two int64 .npy files, each with its header padded to 64 bytes (at most 128 for these shapes).
        long split = (8L * (plan.Split.Train.Count + plan.EvalWindows.Count)) + (2 * 128);
        return (copied + split + ScriptAllowance, copied, split);
    }

    private static void EnsureDiskSpace(JobPlan plan, string parent)
    {
        (long total, long copied, long split) = EstimateDiskBytes(plan, parent);
        try
        {
            Inference.Runtime.MemoryPreflight.EnsureDiskSpace(
                parent,
                total,
                $"The job {Path.GetFullPath(plan.Options.OutputDirectory)}",
                string.Create(System.Globalization.CultureInfo.InvariantCulture, $"That is {Inference.Checkpoints.ByteSize.Format(copied)} of checkpoints and corpus copied{(plan.Options.HardLink ? " (those on another file system cannot be hard-linked)" : " (--copy)")}, {Inference.Checkpoints.ByteSize.Format(split)} of split and {Inference.Checkpoints.ByteSize.Format(ScriptAllowance)} allowed for scripts. Free space or choose another --out{(plan.Options.HardLink ? ", on the file system of the inputs so that they are linked" : ", or leave out --copy to hard-link the inputs")}."));
        }
        catch (IOException e)
        {
            throw new JobExportException("out", e.Message, isUsageError: false, e);
        }
    }

    /// <summary>The mount point holding <paramref name="path"/> (the longest mounted root it lies under); null when unknown.</summary>
    private static string? MountPoint(string path)
    {
        string full = Path.GetFullPath(path);
        try
        {
            return DriveInfo.GetDrives()
                .Select(d => d.RootDirectory.FullName)
                .Where(root => full.StartsWith(root.EndsWith(Path.DirectorySeparatorChar) ? root : root + Path.DirectorySeparatorChar, StringComparison.Ordinal) || full == root)
                .MaxBy(root => root.Length);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Unknown mounts: count every file as copied, the safe side.
            return null;
        }
    }

    /// <summary>Every file the job holds from its inputs, with its place in <paramref name="job"/>.</summary>
    private static List<(string Source, string Destination)> Placements(JobPlan plan, string job)
    {
        var files = new List<(string Source, string Destination)>();
        void Folder(string source, string name)
        {
            // Top-level files only: a Hugging Face folder keeps config, weights, index and tokenizer side by side.
            foreach (string file in Directory.EnumerateFiles(source).Order(StringComparer.Ordinal))
            {
                files.Add((file, Path.Combine(job, name, Path.GetFileName(file))));
            }
        }

        Folder(plan.Student, StudentFolder);
        if (plan.Teacher is not null)
        {
            Folder(plan.Teacher, TeacherFolder);
        }

        files.Add((plan.TokensPath, Path.Combine(job, DataFolder, HfAccelerateJob.TokensFileName)));
        return files;
    }

    private static async Task<(long Linked, long Copied)> PlaceFilesAsync(JobPlan plan, string job, IProgress<JobExportProgress>? progress, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Path.Combine(job, StudentFolder));
        if (plan.Teacher is not null)
        {
            Directory.CreateDirectory(Path.Combine(job, TeacherFolder));
        }

        Directory.CreateDirectory(Path.Combine(job, DataFolder));
        List<(string Source, string Destination)> files = Placements(plan, job);
        long total = files.Sum(f => new FileInfo(f.Source).Length);
        long done = 0;
        long linked = 0;
        long copied = 0;
        foreach ((string source, string destination) in files)
        {
            long length = new FileInfo(source).Length;
            if (await JobFiles.PlaceAsync(source, destination, plan.Options.HardLink, n =>
            {
                done += n;
                progress?.Report(new JobExportProgress("copying", source, done, total));
            }, cancellationToken).ConfigureAwait(false))
            {
                linked += length;
                done += length;
                progress?.Report(new JobExportProgress("linking", source, done, total));
            }
            else
            {
                copied += length;
            }
        }

        return (linked, copied);
    }

    private static void WriteSplit(JobPlan plan, string data)
    {
        JobFiles.WriteInt64Npy(Path.Combine(data, HfAccelerateJob.TrainWindowsFileName), plan.Split.Train);
        JobFiles.WriteInt64Npy(Path.Combine(data, HfAccelerateJob.EvalWindowsFileName), plan.EvalWindows);
    }
}

/// <summary>Log messages of <see cref="JobExporter"/>.</summary>
internal static partial class ExportLog
{
    [LoggerMessage(Level = LogLevel.Information, Message = "wrote the {Engine} job {Directory} for {WorldSize} processes ({Linked} bytes linked, {Copied} copied)")]
    public static partial void Written(ILogger logger, string directory, string engine, int worldSize, long linked, long copied);
}
