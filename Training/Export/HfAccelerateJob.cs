using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using ModelSurgery.Training.Distillation;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Training.Export;

/// <summary>
/// The files of an <c>hf-accelerate</c> job: Accelerate's launch configuration (FSDP2), the launch scripts, job.json
/// (every hyper-parameter the training script reads), the corpus description and the training script itself.
/// </summary>
internal static class HfAccelerateJob
{
    /// <summary>The Accelerate release the configuration keys and APIs were checked against.</summary>
    public const string AccelerateVersion = "1.14.0";

    /// <summary>The Transformers versions whose loading API the script uses.</summary>
    public const string TransformersRequirement = ">=4.56.2,<6";

    /// <summary>The PyTorch versions FSDP2 (<c>fully_shard</c>) and the script need.</summary>
    public const string TorchRequirement = ">=2.6";

    public const string TokensFileName = "tokens.bin";

    public const string TrainWindowsFileName = "train_windows.npy";

    public const string EvalWindowsFileName = "eval_windows.npy";

    public const string ConfigFileName = "accelerate_config.yaml";

    public const string JobFileName = "job.json";

    public const string CorpusFileName = "corpus.json";

    public const string OutputFolder = "output";

    /// <summary>The Python files shipped with every job (embedded in this assembly).</summary>
    public static readonly IReadOnlyList<string> Scripts = ["train.py", "objective.py", "corpus.py"];

    // Relaxed escaping keeps '<' and '>' readable in a file people open; it is never embedded in HTML.
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static ExportedJob Write(JobExporter.JobPlan plan, string job, string finalDirectory, long linked, long copied)
    {
        JobExportOptions o = plan.Options;
        int world = o.Nodes * o.GpusPerNode;
        int accumulation = plan.GlobalBatch / (plan.MicroBatch * world);
        string data = JobExporter.DataFolder;
        WriteText(Path.Combine(job, data, CorpusFileName), Corpus(plan).ToJsonString(Indented) + "\n");
        WriteText(Path.Combine(job, JobFileName), Job(plan, world, accumulation).ToJsonString(Indented) + "\n");
        WriteText(Path.Combine(job, ConfigFileName), AccelerateConfig(plan, world));
        WriteText(Path.Combine(job, "launch.sh"), LaunchScript(o), executable: true);
        WriteText(Path.Combine(job, "slurm.sbatch"), SlurmScript(o), executable: true);
        WriteText(
            Path.Combine(job, "requirements.txt"),
            $"# Checked against accelerate {AccelerateVersion}; transformers {TransformersRequirement} for AutoModelForCausalLM.from_pretrained(dtype=...).\n" +
            $"accelerate=={AccelerateVersion}\ntransformers{TransformersRequirement}\ntorch{TorchRequirement}\nnumpy\nsafetensors\n");
        foreach (string script in Scripts)
        {
            WriteText(Path.Combine(job, script), ReadScript(script));
        }

        List<string> notes = Notes(plan);
        string launch = LaunchLine(o.Nodes, o.GpusPerNode);
        WriteText(Path.Combine(job, "README.md"), Readme(plan, world, accumulation, launch, notes));
        return new ExportedJob(finalDirectory, o.Engine, o.Nodes, o.GpusPerNode, plan.GlobalBatch, plan.MicroBatch, accumulation, plan.TotalSteps, plan.WarmupSteps, launch, linked, copied, notes);
    }

    /// <summary>The text of one of the job's Python files.</summary>
    public static string ReadScript(string name)
    {
        using Stream stream = typeof(HfAccelerateJob).Assembly.GetManifestResourceStream($"ModelSurgery.Training.Export.HfAccelerate.{name}")
            ?? throw new InvalidOperationException($"The assembly lacks the job script {name}.");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    }

    /// <summary>The divergence's name in job.json.</summary>
    public static string DivergenceName(DistillationDivergence divergence) => divergence switch
    {
        DistillationDivergence.ForwardKl => "forward_kl",
        DistillationDivergence.ReverseKl => "reverse_kl",
        _ => "jsd",
    };

    /// <summary>The line that starts the job on one node.</summary>
    public static string LaunchLine(int nodes, int gpusPerNode) =>
        string.Create(CultureInfo.InvariantCulture, $"NODES={nodes} GPUS_PER_NODE={gpusPerNode} NODE_RANK=<0..{nodes - 1}> MASTER_ADDR=<node 0's address> ./launch.sh");

    private static JsonObject Corpus(JobExporter.JobPlan plan) => new()
    {
        ["tokens"] = $"{JobExporter.DataFolder}/{TokensFileName}",
        ["format"] = "ModelSurgery token file: a 32-byte 'MSTOKENS' header, then little-endian unsigned tokens",
        ["header_bytes"] = Data.TokenFile.HeaderSize,
        ["dtype"] = plan.BytesPerToken == 2 ? "<u2" : "<u4",
        ["count"] = plan.TokenCount,
        ["separator_id"] = plan.SeparatorId,
        ["vocab_size"] = plan.TokenVocabSize,
        ["seq_len"] = plan.Options.Training.SeqLen,
        ["windows"] = plan.Split.Train.Count + plan.Split.Validation.Count,
        ["validation_fraction"] = plan.ValidationFraction,
        ["split_seed"] = plan.SplitSeed,
        ["train_windows"] = $"{JobExporter.DataFolder}/{TrainWindowsFileName}",
        ["eval_windows"] = $"{JobExporter.DataFolder}/{EvalWindowsFileName}",
    };

    private static JsonObject Job(JobExporter.JobPlan plan, int world, int accumulation)
    {
        TrainingOptions t = plan.Options.Training;
        DistillationSettings? d = plan.Distillation;
        return new JsonObject
        {
            ["format"] = "modelsurgery-job/1",
            ["engine"] = new JsonObject
            {
                ["name"] = DistributedEngines.NameOf(plan.Options.Engine),
                ["accelerate"] = AccelerateVersion,
                ["transformers"] = TransformersRequirement,
            },
            ["student"] = JobExporter.StudentFolder,
            ["teacher"] = plan.Teacher is null ? null : JobExporter.TeacherFolder,
            ["data"] = $"{JobExporter.DataFolder}/{CorpusFileName}",
            ["output_dir"] = OutputFolder,
            ["seed"] = t.Seed,
            ["precision"] = t.Precision == TrainingPrecision.Bf16 ? "bf16" : "fp32",
            ["optimizer"] = new JsonObject
            {
                ["lr"] = t.LearningRate,
                ["min_lr"] = t.MinLearningRate,
                ["beta1"] = t.Beta1,
                ["beta2"] = t.Beta2,
                ["eps"] = t.Epsilon,
                ["weight_decay"] = t.WeightDecay,
                ["grad_clip"] = t.GradClip,
            },
            ["schedule"] = new JsonObject
            {
                ["total_steps"] = plan.TotalSteps,
                ["warmup_steps"] = plan.WarmupSteps,
                ["warmup_fraction"] = t.WarmupFraction,
            },
            ["batch"] = new JsonObject
            {
                ["global_windows"] = plan.GlobalBatch,
                ["micro_batch"] = plan.MicroBatch,
                ["seq_len"] = t.SeqLen,
                ["tokens_per_step"] = (long)plan.GlobalBatch * t.SeqLen,
                ["exported_world_size"] = world,
                ["grad_accumulation_at_exported_world_size"] = accumulation,
            },
            ["eval_every"] = t.EvalEvery,
            ["checkpoint_every"] = t.CheckpointEvery,
            ["max_non_finite_steps"] = t.MaxNonFiniteSteps,
            ["distillation"] = d is null ? null : new JsonObject
            {
                ["divergence"] = DivergenceName(d.Divergence),
                ["temperature"] = d.Temperature,
                ["alpha"] = d.Alpha,
                ["teacher_dtype"] = d.TeacherDType == TorchSharp.torch.ScalarType.BFloat16 ? "bfloat16" : "float32",
                ["vocab_map"] = plan.VocabularyMap is null ? null : $"{JobExporter.StudentFolder}/{CheckpointTraining.VocabularyMapFileName}",
            },
            // The local options as given, for the record: the translation above is derived from them.
            ["local"] = new JsonObject
            {
                ["batch_size"] = t.BatchSize,
                ["grad_accumulation"] = t.GradAccumulation,
                ["steps"] = t.Steps,
                ["tokens"] = t.Tokens,
                ["eval_batches"] = t.EvalBatches,
            },
        };
    }

    private static string AccelerateConfig(JobExporter.JobPlan plan, int world)
    {
        JobExportOptions o = plan.Options;
        var y = new StringBuilder();
        y.AppendLine(CultureInfo.InvariantCulture, $"# Accelerate {AccelerateVersion} launch configuration (FSDP2), written by modelsurgery export-job for {o.Nodes} node(s) x {o.GpusPerNode} GPU(s).");
        y.AppendLine("# launch.sh overrides num_machines, num_processes, machine_rank, main_process_ip and main_process_port per node.");
        y.AppendLine("compute_environment: LOCAL_MACHINE");
        y.AppendLine("distributed_type: FSDP");
        y.AppendLine(CultureInfo.InvariantCulture, $"mixed_precision: {(o.Training.Precision == TrainingPrecision.Bf16 ? "bf16" : "'no'")}");
        y.AppendLine(CultureInfo.InvariantCulture, $"num_machines: {o.Nodes}");
        y.AppendLine(CultureInfo.InvariantCulture, $"num_processes: {world}");
        y.AppendLine("machine_rank: 0");
        y.AppendLine("main_process_ip: '127.0.0.1'");
        y.AppendLine(CultureInfo.InvariantCulture, $"main_process_port: {o.MainProcessPort}");
        y.AppendLine("rdzv_backend: static");
        y.AppendLine("same_network: true");
        y.AppendLine("fsdp_config:");
        y.AppendLine("  fsdp_version: 2");
        y.AppendLine("  # Without a class list, Accelerate wraps each class the model names in _no_split_modules (its decoder layer).");
        y.AppendLine("  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP");
        y.AppendLine("  fsdp_reshard_after_forward: true");
        y.AppendLine("  fsdp_state_dict_type: SHARDED_STATE_DICT");
        y.AppendLine("  # Off on purpose: with it on, Transformers loads real weights on rank 0 only, and the teacher, which is");
        y.AppendLine("  # not sharded, would stay empty on every other rank.");
        y.AppendLine("  fsdp_cpu_ram_efficient_loading: false");
        y.AppendLine("  fsdp_offload_params: false");
        y.AppendLine("  fsdp_activation_checkpointing: false");
        return y.ToString();
    }

    private static string LaunchScript(JobExportOptions o) => $$"""
        #!/usr/bin/env bash
        # Starts this job on one node; run it on every node, with NODE_RANK 0 on the node whose address is MASTER_ADDR.
        # Every node must see this folder at the same path (a shared file system) or hold its own copy of it.
        #   NODES=2 GPUS_PER_NODE=8 NODE_RANK=0 MASTER_ADDR=10.0.0.1 ./launch.sh        # on node 0
        #   NODES=2 GPUS_PER_NODE=8 NODE_RANK=1 MASTER_ADDR=10.0.0.1 ./launch.sh        # on node 1
        # Extra arguments go to train.py (e.g. --resume). Under SLURM, slurm.sbatch sets these variables.
        set -euo pipefail
        cd "$(dirname "$0")"
        NODES="${NODES:-{{o.Nodes}}}"
        GPUS_PER_NODE="${GPUS_PER_NODE:-{{o.GpusPerNode}}}"
        NODE_RANK="${NODE_RANK:-0}"
        MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
        MASTER_PORT="${MASTER_PORT:-{{o.MainProcessPort}}}"
        exec accelerate launch \
          --config_file accelerate_config.yaml \
          --num_machines "$NODES" \
          --num_processes "$((NODES * GPUS_PER_NODE))" \
          --machine_rank "$NODE_RANK" \
          --main_process_ip "$MASTER_ADDR" \
          --main_process_port "$MASTER_PORT" \
          train.py --job job.json "$@"

        """;

    private static string SlurmScript(JobExportOptions o) => $$"""
        #!/usr/bin/env bash
        #SBATCH --job-name=modelsurgery
        #SBATCH --nodes={{o.Nodes}}
        #SBATCH --ntasks-per-node=1
        #SBATCH --gpus-per-node={{o.GpusPerNode}}
        #SBATCH --exclusive
        # One launch.sh per node; accelerate starts one process per GPU there. Submit from this folder: sbatch slurm.sbatch
        set -euo pipefail
        MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
        export MASTER_ADDR NODES="$SLURM_NNODES" GPUS_PER_NODE={{o.GpusPerNode}}
        srun bash -c 'NODE_RANK="$SLURM_NODEID" ./launch.sh "$@"' launch "$@"

        """;

    private static List<string> Notes(JobExporter.JobPlan plan)
    {
        TrainingOptions t = plan.Options.Training;
        var notes = new List<string>
        {
            "The training windows and the train/validation split are the local run's; their order is a seeded permutation per epoch, shared out over the processes, so the batches differ from the local run's.",
            "Checkpoints: output/checkpoints/last holds Accelerate's sharded state for --resume (same world size recommended); output/final is the trained student as a Hugging Face folder. There is no checkpoints/best.",
        };
        if (plan.Distillation is not null)
        {
            notes.Add($"The teacher is not sharded: every GPU holds a whole copy in {(plan.Distillation.TeacherDType == TorchSharp.torch.ScalarType.BFloat16 ? "bfloat16" : "float32")}, so it must fit on one GPU beside the student's shard.");
        }

        if (plan.VocabularyMap is not null && plan.Distillation is not null)
        {
            notes.Add($"The student's vocabulary is compressed: the teacher reads the {plan.VocabularyMap.NewVocabSize} kept teacher ids of {JobExporter.StudentFolder}/{CheckpointTraining.VocabularyMapFileName} and is compared on those columns only.");
        }

        if (t.Precision == TrainingPrecision.Fp32)
        {
            notes.Add("The local run is fp32, and so is this job (mixed_precision 'no'); on GPUs, bf16 (export with --precision bf16) is several times faster.");
        }

        if (plan.GlobalBatch != t.BatchSize * t.GradAccumulation)
        {
            notes.Add(string.Create(CultureInfo.InvariantCulture, $"The global batch is {plan.GlobalBatch} windows per step instead of the local {t.BatchSize * t.GradAccumulation}; the learning rate was not rescaled."));
        }

        return notes;
    }

    private static string Readme(JobExporter.JobPlan plan, int world, int accumulation, string launch, IReadOnlyList<string> notes)
    {
        JobExportOptions o = plan.Options;
        TrainingOptions t = o.Training;
        string what = plan.Distillation is null
            ? "continued pretraining (next-token cross-entropy)"
            : string.Create(CultureInfo.InvariantCulture, $"distillation ({DivergenceName(plan.Distillation.Divergence)}, temperature {plan.Distillation.Temperature}, alpha {plan.Distillation.Alpha})");
        var r = new StringBuilder();
        r.AppendLine("# ModelSurgery job for Hugging Face Accelerate (FSDP2)");
        r.AppendLine();
        r.AppendLine(CultureInfo.InvariantCulture, $"Written by `modelsurgery export-job hf-accelerate`: {what} of the student in `student/` on `data/`, for {o.Nodes} node(s) x {o.GpusPerNode} GPU(s).");
        r.AppendLine(CultureInfo.InvariantCulture, $"Checked against Accelerate {AccelerateVersion} (configuration keys, launch options and every `Accelerator` member the script uses); Transformers {TransformersRequirement} loads the checkpoints.");
        r.AppendLine();
        r.AppendLine("## Run");
        r.AppendLine();
        r.AppendLine("On every node (Python 3.10 or later, CUDA GPUs), with this folder at the same path on all of them:");
        r.AppendLine();
        r.AppendLine("```bash");
        r.AppendLine("pip install -r requirements.txt");
        r.AppendLine(launch);
        r.AppendLine("```");
        r.AppendLine();
        r.AppendLine("Under SLURM: `sbatch slurm.sbatch`. After an interruption, add `--resume` (`./launch.sh --resume`) to continue from `output/checkpoints/last`.");
        r.AppendLine();
        r.AppendLine("## What runs where");
        r.AppendLine();
        r.AppendLine("| file | what it is |");
        r.AppendLine("| --- | --- |");
        r.AppendLine("| `launch.sh` | `accelerate launch` on one node: `NODES` x `GPUS_PER_NODE` processes in all, this node's `NODE_RANK`, the rendezvous at `MASTER_ADDR:MASTER_PORT` |");
        r.AppendLine("| `slurm.sbatch` | runs `launch.sh` once per node under SLURM |");
        r.AppendLine("| `accelerate_config.yaml` | Accelerate's configuration: FSDP2, mixed precision, the default cluster shape |");
        r.AppendLine("| `train.py` | the training loop (Accelerate does the distribution); `objective.py` the loss and learning-rate schedule, line for line the local ones; `corpus.py` reads the token file in place |");
        r.AppendLine("| `job.json` | every hyper-parameter, translated from the local options (`local` keeps them as given) |");
        r.AppendLine("| `student/`, `teacher/` | the checkpoints as Hugging Face folders, with the student's own (compressed) tokenizer and `vocab_map.json` |");
        r.AppendLine("| `data/` | the token file (`tokens.bin`, read through a memory map), `corpus.json` describing it, and the training and evaluation window lists |");
        r.AppendLine("| `output/` | written by the run: `metrics.jsonl`, `checkpoints/last`, `final/` |");
        r.AppendLine();
        r.AppendLine("## Translated settings");
        r.AppendLine();
        r.AppendLine(CultureInfo.InvariantCulture, $"- {plan.TotalSteps} optimizer steps of {plan.GlobalBatch} windows x {t.SeqLen} tokens ({(long)plan.GlobalBatch * t.SeqLen} tokens per step): {plan.MicroBatch} window(s) per GPU per pass and {accumulation} pass(es) accumulated per step on {world} GPUs (the script recomputes the accumulation for the world size it is launched with).");
        r.AppendLine(CultureInfo.InvariantCulture, $"- AdamW lr {t.LearningRate} (betas {t.Beta1}, {t.Beta2}, eps {t.Epsilon}, weight decay {t.WeightDecay} except norms and biases), {plan.WarmupSteps} warmup steps then cosine to {t.MinLearningRate}, gradient clipping {t.GradClip}, seed {t.Seed}, precision {(t.Precision == TrainingPrecision.Bf16 ? "bf16 with float32 master weights" : "fp32")}.");
        r.AppendLine(CultureInfo.InvariantCulture, $"- Validation every {t.EvalEvery} steps on the {plan.EvalWindows.Count} windows the local run validated on; resumable state every {t.CheckpointEvery} steps.");
        r.AppendLine();
        r.AppendLine("## Differences from the local run");
        r.AppendLine();
        foreach (string note in notes)
        {
            r.AppendLine(CultureInfo.InvariantCulture, $"- {note}");
        }

        return r.ToString();
    }

    private static void WriteText(string path, string text, bool executable = false)
    {
        File.WriteAllText(path, text.ReplaceLineEndings("\n"), new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));
        if (executable && !OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, File.GetUnixFileMode(path) | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
        }
    }
}
