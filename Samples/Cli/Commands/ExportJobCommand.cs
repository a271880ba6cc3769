using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.Logging;
using ModelSurgery.Training;
using ModelSurgery.Training.Distillation;
using ModelSurgery.Training.Export;
using ModelSurgery.Training.Recipes;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Cli.Commands;

/// <summary>
/// <c>modelsurgery export-job &lt;engine&gt; --student &lt;dir&gt; [--teacher &lt;dir&gt;] --data &lt;tokens&gt; --out &lt;dir&gt;</c>:
/// writes a runnable job for a distributed engine from the options a local <c>train</c> or <c>distill</c> run takes.
/// </summary>
internal static class ExportJobCommand
{
    public static Command Create(CliContext context)
    {
        var engine = new Argument<string>("engine") { Description = $"The engine to write the job for: {string.Join(", ", DistributedEngines.Names)}." };
        var student = new Option<string>("--student") { Description = "Student checkpoint folder (its tokenizer and vocab_map.json go with it).", Required = true };
        var teacher = new Option<string?>("--teacher") { Description = "Teacher checkpoint folder: the job distils; without it, the job continues pretraining." };
        // The distillation stage's record, as distill binds it; a job's teacher runs in bf16 on every GPU unless told
        // otherwise (as a recipe's export_job), the one default that is the job's own.
        var defaults = new DistillationOptions { TeacherDtype = TrainingPrecision.Bf16 };
        Option<DistillationDivergence> kdLoss = CommonOptions.Choice("--kd-loss", "Divergence: kl (forward KL), rkl (reverse KL) or jsd (Jensen-Shannon)", defaults.KdLoss);
        var temperature = new Option<double>("--temperature") { Description = "Softmax temperature T (the KD term is scaled by T^2).", DefaultValueFactory = _ => defaults.Temperature };
        var alpha = new Option<double>("--alpha") { Description = "loss = alpha * KD + (1 - alpha) * cross-entropy.", DefaultValueFactory = _ => defaults.Alpha };
        Option<TrainingPrecision> teacherDtype = CommonOptions.Choice("--teacher-dtype", "Precision the teacher runs in on every GPU", defaults.TeacherDtype);
        var nodes = new Option<int>("--nodes") { Description = "Nodes the job runs on.", DefaultValueFactory = _ => 1 };
        var gpus = new Option<int>("--gpus-per-node") { Description = "GPUs (processes) per node.", DefaultValueFactory = _ => 8 };
        var globalBatch = new Option<int?>("--global-batch") { Description = "Windows per optimizer step over all GPUs (default: --batch-size x --grad-accum, the local run's); must be a multiple of nodes x GPUs." };
        var microBatch = new Option<int?>("--micro-batch") { Description = "Windows per GPU per forward pass (default: --batch-size, or the largest divisor of the per-GPU share below it)." };
        var port = new Option<int>("--main-port") { Description = "Rendezvous port on node 0.", DefaultValueFactory = _ => 29500 };
        var force = new Option<bool>("--force") { Description = "Replace --out when it exists." };
        var copy = new Option<bool>("--copy") { Description = "Copy checkpoints and the token file instead of hard-linking them." };
        var shared = new TrainingCommandOptions(defaults, localRun: false);
        var command = new Command(
            "export-job",
            "Write a runnable job for a distributed training engine (hf-accelerate: Hugging Face Accelerate with FSDP2) from the options of a local " +
            "'train' or 'distill' run: the engine's configuration, launch.sh and slurm.sbatch for --nodes x --gpus-per-node, the student (and teacher) " +
            "as Hugging Face folders with the student's own tokenizer and vocab_map.json, the token file with the local train/validation split, " +
            "and the hyper-parameters translated (job.json). Checkpoints and the token file are hard-linked when the file system allows it. " +
            "Multiple rounds, hidden-state distillation and teacher caches are not exported.")
        { engine, student, teacher, kdLoss, temperature, alpha, teacherDtype, nodes, gpus, globalBatch, microBatch, port, force, copy };
        shared.AddTo(command);
        shared.Out.Description = "The job folder to create; refused when it exists, unless --force.";
        command.SetAction(async (parsed, cancellationToken) =>
        {
            DistributedEngine chosen;
            try
            {
                chosen = DistributedEngines.Parse(parsed.GetValue(engine)!);
            }
            catch (JobExportException e)
            {
                throw new UsageException(e.Message, e);
            }

            string studentDir = parsed.GetValue(student)!;
            if (!Directory.Exists(studentDir))
            {
                throw new UsageException($"--student: '{studentDir}' does not exist.");
            }

            (DistillationOptions stage, CheckpointTrainingSettings settings) = shared.Read(parsed, studentDir, defaults with
            {
                KdLoss = parsed.GetValue(kdLoss),
                Temperature = parsed.GetValue(temperature),
                Alpha = parsed.GetValue(alpha),
                TeacherDtype = parsed.GetValue(teacherDtype),
            });
            string? teacherDir = parsed.GetValue(teacher);
            using var guard = new OutputGuard()
                .Input(studentDir, "--student", InputKind.Model)
                .Input(teacherDir, "--teacher", InputKind.Model)
                .Input(parsed.GetValue(shared.Data), "--data");
            guard.NotAnInputFolder(parsed.GetValue(shared.Out)!, "--out");
            JobExportOptions options = JobExportOptions.ForStage(stage, studentDir, teacherDir, parsed.GetValue(shared.Data)!, parsed.GetValue(shared.Out)!) with
            {
                Engine = chosen,
                ValidationFraction = settings.ValidationFraction,
                Nodes = parsed.GetValue(nodes),
                GpusPerNode = parsed.GetValue(gpus),
                GlobalBatchWindows = parsed.GetValue(globalBatch),
                MicroBatchSize = parsed.GetValue(microBatch),
                MainProcessPort = parsed.GetValue(port),
                Force = parsed.GetValue(force),
                HardLink = !parsed.GetValue(copy),
            };

            using ILoggerFactory loggers = context.CreateLoggerFactory(parsed);
            ExportedJob job;
            try
            {
                using ProgressBar bar = context.CreateProgressBar("export-job", ProgressUnit.Bytes);
                ProgressBar progress = bar;
                job = await JobExporter.ExportAsync(options, progress, loggers.CreateLogger("export-job"), cancellationToken).ConfigureAwait(false);
            }
            catch (JobExportException e) when (e.IsUsageError)
            {
                throw new UsageException("--" + e.Message, e);
            }
            catch (JobExportException e)
            {
                throw new InvalidDataException("--" + e.Message, e);
            }

            TextWriter o = context.Output;
            await o.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"wrote the {DistributedEngines.NameOf(job.Engine)} job {job.Directory}")).ConfigureAwait(false);
            await o.WriteLineAsync(string.Create(
                CultureInfo.InvariantCulture,
                $"{job.Nodes} node(s) x {job.GpusPerNode} GPU(s) = {job.WorldSize} processes; {job.TotalSteps} steps of {job.GlobalBatchWindows} windows ({job.MicroBatchSize} per GPU x {job.GradientAccumulation} accumulated), {job.WarmupSteps} warmup")).ConfigureAwait(false);
            await o.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"files: {job.LinkedBytes} bytes hard-linked, {job.CopiedBytes} bytes copied")).ConfigureAwait(false);
            await o.WriteLineAsync($"run on every node: {job.LaunchCommand}").ConfigureAwait(false);
            foreach (string note in job.Notes)
            {
                await o.WriteLineAsync($"note: {note}").ConfigureAwait(false);
            }

            return ExitCodes.Success;
        });
        return command;
    }
}
