using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Training;
using ModelSurgery.Training.Distillation;
using ModelSurgery.Training.MultiRound;
using ModelSurgery.Training.Recipes;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Cli.Commands;

/// <summary>
/// The options <c>train</c> and <c>distill</c> share: the schedule of a <see cref="TrainingStageOptions"/> (each flag's
/// default read from the record) and the run's <see cref="CheckpointTrainingSettings"/>.
/// </summary>
internal sealed class TrainingCommandOptions
{
    public const string LayoutHelp =
        "Output folder: checkpoints/last (model + training-state.bin for --resume), checkpoints/best (lowest validation loss), " +
        "checkpoints/final (model after the last step), metrics.jsonl, metrics.csv, loss.png; with --rounds R > 1 each round writes these under round-k/ " +
        "(under rounds/ with --round-schedule continue, one run over all rounds) and round-sampling.jsonl logs the batch draws, " +
        "and the final model still goes to checkpoints/final. " +
        "Checkpoints are normal model folders (config.json + model.safetensors + the source tokenizer files).";

    private readonly Option<string> _data = new("--data") { Description = "Token file from 'modelsurgery tokenize'. Its <file>.json description supplies the validation split.", Required = true };
    private readonly Option<string> _out = new("--out") { Description = "Output folder (see the layout above).", Required = true };
    private readonly Option<long?> _steps;
    private readonly Option<long?> _tokens = new("--tokens") { Description = "Training tokens to consume instead of --steps; steps = ceil(tokens / tokens per step)." };
    private readonly Option<double> _lr;
    private readonly Option<double?> _minLr;
    private readonly Option<double> _warmup;
    private readonly Option<double> _weightDecay;
    private readonly Option<double> _gradClip;
    private readonly Option<long?> _batchTokens = new("--batch-tokens") { Description = "Tokens per optimizer step; sets --grad-accum to batch-tokens / (batch-size * seq-len), which must divide evenly." };
    private readonly Option<int> _batchSize;
    private readonly Option<int?> _seqLen;
    private readonly Option<int?> _gradAccum;
    private readonly Option<int> _evalEvery;
    private readonly Option<int> _evalBatches;
    private readonly Option<int> _checkpointEvery;
    private readonly Option<TrainingPrecision> _precision;
    private readonly Option<int> _maxNonFinite;
    private readonly Option<int> _rounds = new("--rounds") { Description = "Multi-round training: R rounds (1: plain training).", DefaultValueFactory = _ => 1 };
    private readonly Option<double> _roundRatio = new("--round-ratio") { Description = "Share of batches redrawn by loss for each later round.", DefaultValueFactory = _ => 0.5 };
    private readonly Option<string> _roundSchedule = new("--round-schedule") { Description = "restart: each round starts a fresh optimizer and learning-rate schedule; continue: one optimizer and one schedule span all rounds.", DefaultValueFactory = _ => "restart" };
    private readonly Option<bool> _resume = new("--resume") { Description = "Continue from <out>/checkpoints/last/training-state.bin (same options required)." };
    private readonly Option<bool> _force = CommonOptions.Force("a run or model");
    private readonly Option<ulong> _seed;
    private readonly Option<double?> _valFraction = new("--val-fraction") { Description = "Validation share of windows; overrides the value recorded by 'tokenize' (default: recorded, else 0)." };
    private readonly Option<string> _device = CommonOptions.Device();
    private readonly TrainingStageOptions _defaults;
    private readonly bool _localRun;

    /// <param name="defaults">The stage record whose values are the flags' defaults (a new <see cref="TrainingStageOptions"/> or <see cref="DistillationOptions"/>).</param>
    /// <param name="localRun">False for commands that only translate the options (export-job): multiple rounds, --resume and --device are left out.</param>
    public TrainingCommandOptions(TrainingStageOptions defaults, bool localRun = true)
    {
        _defaults = defaults;
        _localRun = localRun;
        _roundSchedule.AcceptOnlyFromAmong("restart", "continue");
        _steps = new("--steps") { Description = $"Optimizer steps (default {TrainingStageOptions.DefaultSteps}, unless --tokens is given)." };
        _lr = new("--lr") { Description = "Peak learning rate.", DefaultValueFactory = _ => defaults.LearningRate };
        _minLr = new("--min-lr") { Description = "Learning rate at the end of the cosine decay (default: a tenth of --lr).", DefaultValueFactory = _ => defaults.MinLearningRate };
        _warmup = new("--warmup-fraction") { Description = "Share of steps in linear warmup.", DefaultValueFactory = _ => defaults.WarmupFraction };
        _weightDecay = new("--weight-decay") { Description = "AdamW decoupled weight decay (not on norms and biases).", DefaultValueFactory = _ => defaults.WeightDecay };
        _gradClip = new("--grad-clip") { Description = "Global gradient-norm clip (0: off).", DefaultValueFactory = _ => defaults.GradClip };
        _batchSize = new("--batch-size") { Description = "Windows per micro-batch.", DefaultValueFactory = _ => defaults.BatchSize };
        _seqLen = new("--seq-len") { Description = $"Tokens per window (default {defaults.SeqLen}, at most the model's max_position_embeddings)." };
        _gradAccum = new("--grad-accum") { Description = $"Micro-batches per optimizer step (default {defaults.GradAccum})." };
        _evalEvery = new("--eval-every") { Description = "Validate every N steps (0: only at the end).", DefaultValueFactory = _ => defaults.EvalEvery };
        _evalBatches = new("--eval-batches") { Description = "Validation batches per evaluation.", DefaultValueFactory = _ => defaults.EvalBatches };
        _checkpointEvery = new("--checkpoint-every") { Description = "Save checkpoints/last every N steps (0: only at the end).", DefaultValueFactory = _ => defaults.CheckpointEvery };
        _precision = CommonOptions.Choice("--precision", "Compute precision: fp32, or bf16 (bfloat16 compute with float32 master weights)", defaults.Precision);
        _maxNonFinite = new("--max-non-finite-steps") { Description = "Steps in a row with a non-finite loss or gradient (each skipped) after which the run stops with an error.", DefaultValueFactory = _ => defaults.MaxNonFiniteSteps };
        _seed = new("--seed") { Description = "Seed of data order and initialisation.", DefaultValueFactory = _ => defaults.Seed };
        _device.DefaultValueFactory = _ => defaults.Device;
    }

    public Option<string> Data => _data;

    public Option<string> Out => _out;

    public void AddTo(Command command)
    {
        foreach (Option option in new Option[]
        {
            _data, _out, _steps, _tokens, _lr, _minLr, _warmup, _weightDecay, _gradClip, _batchTokens, _batchSize, _seqLen, _gradAccum,
            _evalEvery, _evalBatches, _checkpointEvery, _precision, _maxNonFinite, _rounds, _roundRatio, _roundSchedule, _resume, _force, _seed, _valFraction, _device,
        })
        {
            if (_localRun || !(option == _rounds || option == _roundRatio || option == _roundSchedule || option == _resume || option == _device || option == _force))
            {
                command.Options.Add(option);
            }
        }
    }

    /// <summary>
    /// The schedule flags read into <paramref name="stage"/> (a <see cref="DistillationOptions"/> keeps its loss), checked
    /// by the record's own validation with the problems named by their flags, and the run's settings; command-line
    /// mistakes become <see cref="UsageException"/>.
    /// </summary>
    public (T Stage, CheckpointTrainingSettings Settings) Read<T>(ParseResult parsed, string modelDir, T stage)
        where T : TrainingStageOptions
    {
        int maxPositions = ReadConfig(modelDir).MaxPositionEmbeddings;
        int seqLen = parsed.GetValue(_seqLen) ?? Math.Min(_defaults.SeqLen, maxPositions);
        if (seqLen > maxPositions)
        {
            throw new UsageException($"--seq-len {seqLen} is longer than the model's max_position_embeddings ({maxPositions}) in {Path.Combine(modelDir, "config.json")}.");
        }

        int batchSize = parsed.GetValue(_batchSize);
        int? gradAccum = parsed.GetValue(_gradAccum);
        if (parsed.GetValue(_batchTokens) is long batchTokens)
        {
            long perMicro = (long)batchSize * seqLen;
            if (gradAccum is not null)
            {
                throw new UsageException("give --batch-tokens or --grad-accum, not both.");
            }

            if (batchTokens <= 0 || batchSize <= 0 || seqLen <= 0 || batchTokens % perMicro != 0)
            {
                throw new UsageException($"--batch-tokens {batchTokens} must be a positive multiple of --batch-size x --seq-len = {perMicro}.");
            }

            gradAccum = (int)(batchTokens / perMicro);
        }

        TrainingStageOptions schedule = ((TrainingStageOptions)stage) with
        {
            Steps = parsed.GetValue(_steps),
            Tokens = parsed.GetValue(_tokens),
            BatchSize = batchSize,
            SeqLen = seqLen,
            GradAccum = gradAccum ?? _defaults.GradAccum,
            LearningRate = parsed.GetValue(_lr),
            MinLearningRate = parsed.GetValue(_minLr),
            WarmupFraction = parsed.GetValue(_warmup),
            WeightDecay = parsed.GetValue(_weightDecay),
            GradClip = parsed.GetValue(_gradClip),
            Precision = parsed.GetValue(_precision),
            MaxNonFiniteSteps = parsed.GetValue(_maxNonFinite),
            CheckpointEvery = parsed.GetValue(_checkpointEvery),
            EvalEvery = parsed.GetValue(_evalEvery),
            EvalBatches = parsed.GetValue(_evalBatches),
            Seed = parsed.GetValue(_seed),
            Device = _localRun ? parsed.GetValue(_device)! : stage.Device,
        };
        if (schedule.Validate(TrainingFlags.OptionName) is { Count: > 0 } problems)
        {
            throw new UsageException(string.Join("; ", problems) + ".");
        }

        int rounds = _localRun ? parsed.GetValue(_rounds) : 1;
        if (rounds < 1)
        {
            throw new UsageException($"--rounds must be at least 1, got {rounds}.");
        }

        if (rounds > 1 && _localRun && parsed.GetValue(_resume))
        {
            throw new UsageException("--resume works with single-round runs only (--rounds 1).");
        }

        try
        {
            if (rounds > 1)
            {
                RoundSampler.CountFor(1, parsed.GetValue(_roundRatio));
            }
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message, e);
        }

        double? fraction = parsed.GetValue(_valFraction);
        if (fraction is { } f && !(f >= 0 && f < 1))
        {
            throw new UsageException($"--val-fraction must be in [0, 1), got {f}.");
        }

        var settings = new CheckpointTrainingSettings
        {
            ValidationFraction = fraction,
            Rounds = rounds > 1
                ? new MultiRoundOptions(rounds, parsed.GetValue(_roundRatio), parsed.GetValue(_roundSchedule) == "continue" ? RoundSchedule.Continue : RoundSchedule.Restart)
                : null,
            Resume = _localRun && parsed.GetValue(_resume),
            Device = schedule.Device,
        };
        return ((T)schedule, settings);
    }

    /// <summary>The output checks of a local run: the model folders and the token file are inputs, --out a run folder, locked while it runs.</summary>
    public OutputGuard Guard(ParseResult parsed, params (string? Path, string Option)[] models)
    {
        var guard = new OutputGuard();
        foreach ((string? path, string option) in models)
        {
            guard.Input(path, option, InputKind.Model);
        }

        string? data = parsed.GetValue(_data);
        return guard
            .Input(data, "--data")
            .Input(data is null ? null : ModelSurgery.Training.Data.TokenFileInfo.PathFor(data), "--data (its .json)")
            .Folder(parsed.GetValue(_out), "--out", parsed.GetValue(_force), parsed.GetValue(_resume));
    }

    public static LlamaConfig ReadConfig(string modelDir)
    {
        string path = Path.Combine(modelDir, "config.json");
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{modelDir}: no config.json; not a checkpoint folder.", path);
        }

        return LlamaConfig.Load(path);
    }

    /// <summary>Runs a training recipe with a progress line on standard error and prints the outcome.</summary>
    public static async Task<int> RunWithProgressAsync(CliContext context, ParseResult parsed, string label, Func<IProgress<TrainingProgress>, ILogger, Task<CheckpointTrainingResult>> run)
    {
        using ILoggerFactory loggers = context.CreateLoggerFactory(parsed);
        ILogger logger = parsed.GetValue(CliContext.Verbose) ? loggers.CreateLogger("modelsurgery." + label) : Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
        CheckpointTrainingResult result;
        using (ProgressBar bar = context.CreateProgressBar(label, ProgressUnit.Steps))
        {
            try
            {
                result = await run(bar, logger).ConfigureAwait(false);
            }
            catch (ResumeMismatchException e)
            {
                throw new UsageException(TrainingFlags.ResumeMessage(e), e);
            }
            catch (TrainingDivergedException e)
            {
                // Name the options that usually cause it.
                throw new TrainingDivergedException(e.Message.Replace("Lower the learning rate", "Lower --lr", StringComparison.Ordinal), e);
            }
        }

        TrainingResult last = result.Runs[^1];
        string best = result.Runs.Select(r => r.BestValidationLoss).LastOrDefault(b => b is not null) is { } b ? string.Create(CultureInfo.InvariantCulture, $", best validation loss {b:F4}") : string.Empty;
        await context.Output.WriteLineAsync(string.Create(
            CultureInfo.InvariantCulture,
            $"{label}: {result.Runs.Count} round(s), {last.Steps} steps in the last, final loss {result.FinalLoss:F4}{best}; final checkpoint {result.FinalCheckpoint}")).ConfigureAwait(false);
        return ExitCodes.Success;
    }
}

/// <summary>A <c>train</c> or <c>distill</c> command line, bound: the stage's record, the run's settings and the chain that runs them.</summary>
/// <param name="Stage">The stage's options (a <see cref="DistillationOptions"/> for <c>distill</c>).</param>
/// <param name="Settings">Split, rounds, resume.</param>
/// <param name="Data">The token file (<c>--data</c>).</param>
/// <param name="Output">The run folder (<c>--out</c>).</param>
/// <param name="Pipeline">The fluent chain over the above, ready for <c>ReportTo</c>, <c>LogTo</c> and <c>RunAsync</c>.</param>
internal sealed record TrainingRun(TrainingStageOptions Stage, CheckpointTrainingSettings Settings, string Data, string Output, StudentPipeline Pipeline)
{
    /// <summary>Runs the chain with the command's progress line and logger.</summary>
    public async Task<CheckpointTrainingResult> RunAsync(IProgress<TrainingProgress> progress, ILogger logger, CancellationToken cancellationToken)
    {
        StudentPipelineResult result = await Pipeline.ReportTo(progress).LogTo(logger).RunAsync(cancellationToken).ConfigureAwait(false);
        return result.Training!;
    }
}

/// <summary><c>modelsurgery train</c>.</summary>
internal static class TrainCommand
{
    public static Command Create(CliContext context) => Create(context, out _);

    /// <param name="context">Where the command writes.</param>
    /// <param name="bind">Reads a parsed command line into the run (what the command runs; tests inspect it).</param>
    public static Command Create(CliContext context, out Func<ParseResult, TrainingRun> bind)
    {
        var model = CommonOptions.Model();
        var shared = new TrainingCommandOptions(new TrainingStageOptions());
        var command = new Command(
            "train",
            "Train a checkpoint on a token file with next-token cross-entropy (AdamW, warmup + cosine, clipping). " + TrainingCommandOptions.LayoutHelp)
        { model };
        shared.AddTo(command);
        bind = parsed =>
        {
            string modelDir = parsed.GetValue(model)!;
            (TrainingStageOptions stage, CheckpointTrainingSettings settings) = shared.Read(parsed, modelDir, new TrainingStageOptions());
            string data = parsed.GetValue(shared.Data)!;
            string output = parsed.GetValue(shared.Out)!;
            return new TrainingRun(stage, settings, data, output, StudentPipeline.ForStudent(modelDir).Train(data, stage, output).RunWith(settings));
        };
        Func<ParseResult, TrainingRun> read = bind;
        command.SetAction(async (parsed, cancellationToken) =>
        {
            TrainingRun run = read(parsed);
            using OutputGuard guard = shared.Guard(parsed, (parsed.GetValue(model), "--model"));
            return await TrainingCommandOptions.RunWithProgressAsync(context, parsed, "train", (progress, logger) => run.RunAsync(progress, logger, cancellationToken)).ConfigureAwait(false);
        });
        return command;
    }
}

/// <summary><c>modelsurgery distill</c>.</summary>
internal static class DistillCommand
{
    public static Command Create(CliContext context) => Create(context, out _);

    /// <param name="context">Where the command writes.</param>
    /// <param name="bind">Reads a parsed command line into the run (what the command runs; tests inspect it).</param>
    public static Command Create(CliContext context, out Func<ParseResult, TrainingRun> bind)
    {
        var defaults = new DistillationOptions();
        var teacher = new Option<string?>("--teacher") { Description = "Teacher checkpoint folder (not needed with --teacher-cache unless --plan is given)." };
        var student = new Option<string>("--student") { Description = "Student checkpoint folder; its vocab_map.json (from vocabulary compression), if any, maps student ids to teacher ids.", Required = true };
        Option<DistillationDivergence> kdLoss = CommonOptions.Choice("--kd-loss", "Divergence: kl (forward KL), rkl (reverse KL) or jsd (Jensen-Shannon)", defaults.KdLoss);
        var temperature = new Option<double>("--temperature") { Description = "Softmax temperature T (the KD term is scaled by T^2).", DefaultValueFactory = _ => defaults.Temperature };
        var alpha = new Option<double>("--alpha") { Description = "loss = alpha * KD + (1 - alpha) * cross-entropy.", DefaultValueFactory = _ => defaults.Alpha };
        var cache = new Option<string?>("--teacher-cache") { Description = "Top-k teacher logits from 'modelsurgery cache-teacher' (same --data, --seq-len and split); the teacher is then not run (top-k forward KL)." };
        var plan = new Option<string?>("--plan") { Description = "Surgery plan (plan.json): student layer i also matches teacher layer plan.layers[i].teacher_layer's hidden state (MSE, learned projection when widths differ)." };
        var hiddenWeight = new Option<double>("--hidden-weight") { Description = "Weight of the hidden-state term (with --plan).", DefaultValueFactory = _ => defaults.HiddenWeight };
        Option<TrainingPrecision> teacherDtype = CommonOptions.Choice("--teacher-dtype", "Precision the teacher runs in", defaults.TeacherDtype);
        var shared = new TrainingCommandOptions(defaults);
        var command = new Command(
            "distill",
            "Distil a teacher into a student on a token file of student ids (logit KD mixed with cross-entropy, optional hidden-state KD). " + TrainingCommandOptions.LayoutHelp)
        { teacher, student, kdLoss, temperature, alpha, cache, plan, hiddenWeight, teacherDtype };
        shared.AddTo(command);
        bind = parsed =>
        {
            string studentDir = parsed.GetValue(student)!;
            string? teacherDir = parsed.GetValue(teacher);

            // The distillation stage's record: the loss and teacher flags here, the schedule in Read, all checked by the
            // same Validate a recipe's distillation section goes through, with the problems named by their flags.
            var loss = defaults with
            {
                KdLoss = parsed.GetValue(kdLoss),
                Temperature = parsed.GetValue(temperature),
                Alpha = parsed.GetValue(alpha),
                TeacherCache = parsed.GetValue(cache),
                HiddenStatePlan = parsed.GetValue(plan),
                HiddenWeight = parsed.GetValue(hiddenWeight),
                TeacherDtype = parsed.GetValue(teacherDtype),
            };
            if (teacherDir is null && loss.NeedsTeacherFolder)
            {
                throw new UsageException(loss.HiddenStatePlan is null ? "give --teacher or --teacher-cache." : "--plan needs --teacher (hidden states come from the running teacher).");
            }

            (DistillationOptions stage, CheckpointTrainingSettings settings) = shared.Read(parsed, studentDir, loss);
            StudentPipeline pipeline = StudentPipeline.ForStudent(studentDir);
            pipeline = teacherDir is null ? pipeline : pipeline.DistilledFrom(teacherDir);
            string data = parsed.GetValue(shared.Data)!;
            string output = parsed.GetValue(shared.Out)!;
            return new TrainingRun(stage, settings, data, output, pipeline.Distill(data, stage, output).RunWith(settings));
        };
        Func<ParseResult, TrainingRun> read = bind;
        command.SetAction(async (parsed, cancellationToken) =>
        {
            TrainingRun run = read(parsed);
            using OutputGuard guard = shared.Guard(parsed, (parsed.GetValue(student), "--student"), (parsed.GetValue(teacher), "--teacher"))
                .Input(parsed.GetValue(cache), "--teacher-cache")
                .Input(parsed.GetValue(plan), "--plan");
            return await TrainingCommandOptions.RunWithProgressAsync(context, parsed, "distill", (progress, logger) => run.RunAsync(progress, logger, cancellationToken)).ConfigureAwait(false);
        });
        return command;
    }
}

/// <summary>The flag of each <see cref="DistillationOptions"/> (and <see cref="TrainingStageOptions"/>) key, so the record's checks name the flag.</summary>
internal static class TrainingFlags
{
    private static readonly Dictionary<string, string> Flags = new(StringComparer.Ordinal)
    {
        ["kd_loss"] = "--kd-loss",
        ["temperature"] = "--temperature",
        ["alpha"] = "--alpha",
        ["teacher_cache"] = "--teacher-cache",
        ["hidden_state_plan"] = "--plan",
        ["hidden_weight"] = "--hidden-weight",
        ["teacher_dtype"] = "--teacher-dtype",
        ["steps"] = "--steps",
        ["tokens"] = "--tokens",
        ["batch_size"] = "--batch-size",
        ["seq_len"] = "--seq-len",
        ["grad_accum"] = "--grad-accum",
        ["learning_rate"] = "--lr",
        ["min_learning_rate"] = "--min-lr",
        ["warmup_fraction"] = "--warmup-fraction",
        ["weight_decay"] = "--weight-decay",
        ["grad_clip"] = "--grad-clip",
        ["precision"] = "--precision",
        ["max_non_finite_steps"] = "--max-non-finite-steps",
        ["checkpoint_every"] = "--checkpoint-every",
        ["eval_every"] = "--eval-every",
        ["eval_batches"] = "--eval-batches",
        ["seed"] = "--seed",
        ["device"] = "--device",
    };

    /// <summary>The flag for a record key (the key itself when the command has no such flag).</summary>
    public static string OptionName(string key) => Flags.GetValueOrDefault(key, key);

    // The flag of each option a resume can be refused for (Trainer.ResumeCheckedOptions): the message names the
    // TrainingOptions property, the user typed the flag.
    private static readonly Dictionary<string, string> ResumeFlags = new(StringComparer.Ordinal)
    {
        [nameof(TrainingOptions.Steps)] = "--steps or --tokens",
        [nameof(TrainingOptions.Seed)] = "--seed",
        [nameof(TrainingOptions.LearningRate)] = "--lr",
        [nameof(TrainingOptions.MinLearningRate)] = "--min-lr",
        [nameof(TrainingOptions.WarmupFraction)] = "--warmup-fraction",
        [nameof(TrainingOptions.WeightDecay)] = "--weight-decay",
        [nameof(TrainingOptions.GradClip)] = "--grad-clip",
        [nameof(TrainingOptions.BatchSize)] = "--batch-size",
        [nameof(TrainingOptions.SeqLen)] = "--seq-len",
        [nameof(TrainingOptions.GradAccumulation)] = "--grad-accum (or --batch-tokens)",
        [nameof(TrainingOptions.Precision)] = "--precision",
        [nameof(TrainingOptions.Beta1)] = "AdamW beta1 (no flag: the commands use the default)",
        [nameof(TrainingOptions.Beta2)] = "AdamW beta2 (no flag: the commands use the default)",
        [nameof(TrainingOptions.Epsilon)] = "AdamW epsilon (no flag: the commands use the default)",
        ["Data"] = "--data",
        ["DataTokens"] = "--data (its token count)",
    };

    /// <summary>The flag a resume was refused for, as the user typed it (see <see cref="ResumeMessage"/>).</summary>
    /// <param name="option">A <see cref="ResumeMismatchException.Option"/>.</param>
    /// <returns>The flag, or null when the table has none.</returns>
    public static string? ResumeFlag(string option) => ResumeFlags.GetValueOrDefault(option);

    /// <summary>The refusal's message with the option named by its flag; the rest of the message as the trainer wrote it.</summary>
    public static string ResumeMessage(ResumeMismatchException e)
    {
        ArgumentNullException.ThrowIfNull(e);
        return ResumeFlag(e.Option) is { } flag ? e.Message.Replace("Training option " + e.Option, flag, StringComparison.Ordinal) : e.Message;
    }
}

/// <summary><c>modelsurgery cache-teacher</c>.</summary>
internal static class CacheTeacherCommand
{
    public static Command Create(CliContext context)
    {
        var teacher = new Option<string>("--teacher") { Description = "Teacher checkpoint folder.", Required = true };
        var data = new Option<string>("--data") { Description = "Token file (student ids when --vocab-map is given).", Required = true };
        var output = new Option<string>("--out") { Description = "Cache file to write.", Required = true };
        var topK = new Option<int>("--top-k") { Description = "Logits kept per position.", DefaultValueFactory = _ => 32 };
        var seqLen = new Option<int?>("--seq-len") { Description = "Tokens per window; must equal the distill run's --seq-len (default as in train)." };
        var batchSize = new Option<int>("--batch-size") { Description = "Windows per teacher pass.", DefaultValueFactory = _ => 8 };
        var vocabMap = new Option<string?>("--vocab-map") { Description = "vocab_map.json of a compressed student: the teacher reads mapped ids and the cache stores student ids." };
        var valFraction = new Option<double?>("--val-fraction") { Description = "Validation share (default: as recorded by 'tokenize'); only training windows are cached." };
        var device = CommonOptions.Device();
        var force = new Option<bool>("--force") { Description = "Replace a cache file already at --out, and write even when the size estimate exceeds the free disk space." };
        var command = new Command(
            "cache-teacher",
            "Run the teacher once over the training windows of a token file and store its top-k logits for 'distill --teacher-cache'.")
        { teacher, data, output, topK, seqLen, batchSize, vocabMap, valFraction, device, force };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            string teacherDir = parsed.GetValue(teacher)!;
            int k = parsed.GetValue(topK);
            int batch = parsed.GetValue(batchSize);
            if (k < 1 || batch < 1)
            {
                throw new UsageException($"--top-k and --batch-size must be positive, got {k} and {batch}.");
            }

            LlamaConfig teacherConfig = TrainingCommandOptions.ReadConfig(teacherDir);
            int maxPositions = teacherConfig.MaxPositionEmbeddings;
            if (k > teacherConfig.VocabSize)
            {
                throw new UsageException($"--top-k {k} is more than the teacher's vocab_size ({teacherConfig.VocabSize}).");
            }

            int length = parsed.GetValue(seqLen) ?? Math.Min(512, maxPositions);
            if (length < 1 || length > maxPositions)
            {
                throw new UsageException($"--seq-len must be between 1 and the teacher's max_position_embeddings ({maxPositions}), got {length}.");
            }

            var settings = new CheckpointTrainingSettings { ValidationFraction = parsed.GetValue(valFraction), Device = parsed.GetValue(device)! };
            string path = parsed.GetValue(output)!;
            string tokensPath = parsed.GetValue(data)!;
            using OutputGuard guard = new OutputGuard()
                .Input(teacherDir, "--teacher", InputKind.Model)
                .Input(tokensPath, "--data")
                .Input(ModelSurgery.Training.Data.TokenFileInfo.PathFor(tokensPath), "--data (its .json)")
                .Input(parsed.GetValue(vocabMap), "--vocab-map")
                .File(path, "--out");
            bool replace = parsed.GetValue(force);
            if (File.Exists(path) && !replace)
            {
                throw new UsageException($"--out {path} already exists; give --force to replace it.");
            }

            int total;
            using (var file = ModelSurgery.Training.Data.TokenFile.Open(tokensPath))
            {
                total = CheckpointTraining.OpenData(file, length, settings).TrainWindows.Count;
            }

            if (!replace)
            {
                // Before the teacher is loaded: the file's size follows from the windows, --seq-len and --top-k alone.
                TeacherLogitCache.EnsureFits(path, total, length, k, "--out", "Free space, choose another --out, lower --top-k or --seq-len, or give --force to write anyway.");
            }

            int windows;
            using (ProgressBar bar = context.CreateProgressBar("cache-teacher", ProgressUnit.Windows))
            {
                windows = await CheckpointTraining.CacheTeacherAsync(
                    teacherDir,
                    tokensPath,
                    path,
                    k,
                    length,
                    batch,
                    parsed.GetValue(vocabMap),
                    settings,
                    bar,
                    cancellationToken).ConfigureAwait(false);
            }

            await context.Output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"cached top-{k} teacher logits of {windows} windows of {length} tokens to {path}")).ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }
}
