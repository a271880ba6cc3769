using System.CommandLine;
using System.Globalization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery;
using ModelSurgery.Surgery.Building;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Surgery.Scoring.Reports;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Cli.Commands;

/// <summary>
/// Parameter inheritance from the command line: <c>score</c> (importance on calibration data), <c>plan</c> (scores and
/// targets into a plan), <c>build</c> (the student checkpoint from a plan) and <c>prune</c> (all three in one go). The
/// commands bind their options to the stage records and run the stages through <see cref="Surgeon"/>; what is theirs is
/// the console (progress bars, summaries) and the files around the student (scores, charts, the plan).
/// </summary>
internal static class SurgeryCommands
{
    public static Command CreateScore(CliContext context)
    {
        var model = CommonOptions.Model();
        var calibration = new CalibrationOptions();
        var metrics = MetricsOption();
        var output = new Option<string>("--out") { Description = "Folder for <metric>.json, <metric>.csv and the heat map / layer curve PNGs.", Required = true };
        var device = CommonOptions.Device();
        var command = new Command("score", "Score layers, heads, neurons and hidden channels of a model on calibration data.") { model, metrics, output, device };
        calibration.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            using OutputGuard guard = new OutputGuard()
                .Input(parsed.GetValue(model), "--model", InputKind.Model)
                .Input(parsed.GetValue(calibration.Tokens), "--tokens")
                .Folder(parsed.GetValue(output), "--out");
            IReadOnlyList<ImportanceScores> scores = await ScoreAsync(context, parsed, parsed.GetValue(model)!, calibration, parsed.GetValue(metrics)!, parsed.GetValue(device)!, cancellationToken).ConfigureAwait(false);
            await SaveScoresAsync(context, scores, parsed.GetValue(output)!).ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }

    public static Command CreatePlan(CliContext context)
    {
        var model = CommonOptions.Model();
        var scores = new Option<string[]>("--scores") { Description = "Scores JSON from 'score'; repeat to combine (e.g. block-influence for layers, l2 for width): the first file holding a part supplies it." };
        var targets = new PlanTargetOptions();
        var output = new Option<string>("--out") { Description = "Plan JSON to write.", Required = true };
        var command = new Command("plan", "Turn importance scores and target sizes (or a parameter budget) into a validated plan.") { model, scores, output };
        targets.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            using OutputGuard guard = new OutputGuard()
                .Input(parsed.GetValue(model), "--model", InputKind.Model)
                .Inputs(parsed.GetValue(scores), "--scores")
                .File(parsed.GetValue(output), "--out");
            LlamaConfig teacher = LlamaConfig.Load(Path.Combine(parsed.GetValue(model)!, "config.json"));
            ImportanceScores? combined = Combine([.. (parsed.GetValue(scores) ?? []).Select(ImportanceScores.Load)], teacher);
            SurgeryPlan plan = targets.Build(context, parsed, teacher, combined);
            await WritePlanAsync(context, plan, parsed.GetValue(output)!).ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }

    public static Command CreateBuild(CliContext context)
    {
        var model = CommonOptions.Model();
        var plan = new Option<string>("--plan") { Description = "Plan JSON from 'plan' (or edited by hand).", Required = true };
        var build = new BuildOptions();
        var command = new Command("build", "Build the student checkpoint from a plan, reading only the kept rows and columns of the teacher.") { model, plan };
        build.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            using OutputGuard guard = build.Guard(parsed, parsed.GetValue(model)!).Input(parsed.GetValue(plan), "--plan");
            SurgeryPlan loaded = SurgeryPlan.Load(parsed.GetValue(plan)!);
            await build.RunAsync(context, parsed, parsed.GetValue(model)!, loaded, cancellationToken).ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }

    public static Command CreatePrune(CliContext context)
    {
        var model = CommonOptions.Model();
        var calibration = new CalibrationOptions();
        var metrics = MetricsOption();
        var targets = new PlanTargetOptions();
        var build = new BuildOptions();
        var device = CommonOptions.Device();
        var command = new Command("prune", "Score, plan and build in one go; the scores and the plan are kept in <out>/surgery/.") { model, metrics, device };
        calibration.AddTo(command);
        targets.AddTo(command);
        build.AddTo(command);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            string teacherDir = parsed.GetValue(model)!;
            string surgeryDir = Path.Combine(parsed.GetValue(build.Output)!, "surgery");
            using OutputGuard guard = build.Guard(parsed, teacherDir).Input(parsed.GetValue(calibration.Tokens), "--tokens");
            LlamaConfig teacher = LlamaConfig.Load(Path.Combine(teacherDir, "config.json"));
            IReadOnlyList<ImportanceScores> scores = await ScoreAsync(context, parsed, teacherDir, calibration, parsed.GetValue(metrics)!, parsed.GetValue(device)!, cancellationToken).ConfigureAwait(false);
            SurgeryPlan plan = targets.Build(context, parsed, teacher, Combine(scores, teacher));
            await build.RunAsync(context, parsed, teacherDir, plan, cancellationToken).ConfigureAwait(false);

            // Written after the build: its writer owns the output folder and clears stale files there.
            await SaveScoresAsync(context, scores, surgeryDir).ConfigureAwait(false);
            await WritePlanAsync(context, plan, Path.Combine(surgeryDir, "plan.json")).ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }

    private static Option<string[]> MetricsOption() => new("--metric")
    {
        Description = $"Metric(s) to compute: {string.Join(", ", ScoringMetrics.All.Select(m => m.Name))}; repeat for several.",
        DefaultValueFactory = _ => [.. new ScoringOptions().Metrics],
    };

    private static async Task<IReadOnlyList<ImportanceScores>> ScoreAsync(CliContext context, ParseResult parsed, string modelDir, CalibrationOptions calibration, string[] metrics, string device, CancellationToken cancellationToken)
    {
        var options = new ScoringOptions
        {
            Metrics = metrics,
            CalibrationSequences = parsed.GetValue(calibration.Sequences),
            CalibrationLength = parsed.GetValue(calibration.Length),
            BatchSize = parsed.GetValue(calibration.BatchSize),
            Seed = parsed.GetValue(calibration.Seed),
            Device = device,
        };
        IReadOnlyList<string> errors = options.Validate(key => key switch
        {
            "metrics" => "--metric",
            "calibration_sequences" => calibration.Sequences.Name,
            "calibration_length" => calibration.Length.Name,
            "batch_size" => calibration.BatchSize.Name,
            "seed" => calibration.Seed.Name,
            "device" => "--device",
            _ => key,
        });
        if (errors.Count > 0)
        {
            throw new UsageException(string.Join("; ", errors) + ".");
        }

        // Refused from the options alone, before the calibration tokens or any weight are read.
        LlamaConfig config = TrainingCommandOptions.ReadConfig(modelDir);
        bool calibrated = parsed.GetValue(calibration.Tokens) is not null;
        ScoringMemory.EnsureFits(
            config,
            options,
            calibrated ? options.CalibrationSequences : 0,
            calibrated ? options.CalibrationLength : 0,
            Inference.Runtime.ComputeDevice.Resolve(device).type,
            $"lower {calibration.BatchSize.Name}, {calibration.Length.Name} or {calibration.Sequences.Name}, choose a --metric that reads weights only (such as l2), or run on another --device");
        CalibrationData? data = calibration.Load(parsed, config.MaxPositionEmbeddings);
        if (data is null && metrics.FirstOrDefault(m => (ScoringMetrics.Get(m).Needs & (MetricNeeds.Activations | MetricNeeds.Gradients | MetricNeeds.Masks)) != 0) is { } needy)
        {
            throw new UsageException($"--metric {needy} runs the model on calibration text: give {calibration.Tokens.Name} <token file>.");
        }

        Surgeon surgeon = Surgeon.ForTeacher(modelDir).ScoreWith(options);
        surgeon = data is null ? surgeon : surgeon.CalibrateOn(data);
        using var bar = context.CreateProgressBar("score", ProgressUnit.Steps);
        return await surgeon
            .ReportTo(bar)
            .ScoreAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async Task SaveScoresAsync(CliContext context, IReadOnlyList<ImportanceScores> scores, string folder)
    {
        Directory.CreateDirectory(folder);
        foreach (ImportanceScores score in scores)
        {
            string stem = Path.Combine(folder, score.Metric);
            score.Save(stem + ".json");
            score.SaveCsv(stem + ".csv");
            if (score.Heads is not null)
            {
                score.DrawHeadHeatMap(stem + "-heads.png");
            }

            if (score.Layers is not null)
            {
                score.DrawLayerCurves(stem + "-layers.png");
            }

            await context.Output.WriteLineAsync($"wrote {stem}.json ({Parts(score)})").ConfigureAwait(false);
        }

        // Metrics that rank the same units can be compared: how much do they agree?
        for (int i = 0; i < scores.Count; i++)
        {
            for (int j = i + 1; j < scores.Count; j++)
            {
                if (scores[i].Heads is { } a && scores[j].Heads is { } b)
                {
                    await context.Output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"spearman(heads) {scores[i].Metric} vs {scores[j].Metric}: {RankAgreement.Spearman(a, b):F3}")).ConfigureAwait(false);
                }
            }
        }
    }

    private static string Parts(ImportanceScores s) => string.Join(", ", new (string Name, object? Part)[]
    {
        ("layers", s.Layers), ("heads", s.Heads), ("kv_groups", s.KvGroups), ("neurons", s.Neurons), ("hidden_channels", s.HiddenChannels), ("tokens", s.Tokens),
    }.Where(p => p.Part is not null).Select(p => p.Name));

    private static ImportanceScores? Combine(IReadOnlyList<ImportanceScores> scores, LlamaConfig teacher)
    {
        foreach (ImportanceScores s in scores)
        {
            s.EnsureMatches(teacher);
        }

        return scores.Count == 0 ? null : ImportanceScores.Combine(scores);
    }

    private static async Task WritePlanAsync(CliContext context, SurgeryPlan plan, string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        plan.Save(path);
        await context.Output.WriteLineAsync(plan.Summary()).ConfigureAwait(false);
        await context.Output.WriteLineAsync($"wrote {path}").ConfigureAwait(false);
    }

    /// <summary>Calibration data options: a token file, how many windows, how long.</summary>
    private sealed class CalibrationOptions
    {
        public Option<string?> Tokens { get; } = new("--tokens") { Description = "Calibration tokens: a packed token file from 'tokenize', or token ids as text." };

        public Option<int> Sequences { get; } = new("--sequences") { Description = "Calibration windows.", DefaultValueFactory = _ => Defaults.CalibrationSequences };

        public Option<int> Length { get; } = new("--length") { Description = "Tokens per calibration window.", DefaultValueFactory = _ => Defaults.CalibrationLength };

        public Option<int> BatchSize { get; } = new("--batch-size") { Description = "Calibration windows per forward pass.", DefaultValueFactory = _ => Defaults.BatchSize };

        public Option<int> Seed { get; } = new("--seed") { Description = "Seed of the window positions and of random metrics.", DefaultValueFactory = _ => Defaults.Seed };

        private static ScoringOptions Defaults { get; } = new();

        public void AddTo(Command command)
        {
            command.Options.Add(Tokens);
            command.Options.Add(Sequences);
            command.Options.Add(Length);
            command.Options.Add(BatchSize);
            command.Options.Add(Seed);
        }

        public CalibrationData? Load(ParseResult parsed, int maxPositions)
        {
            if (parsed.GetValue(Tokens) is not { } path)
            {
                return null;
            }

            int sequences = parsed.GetValue(Sequences);
            int length = parsed.GetValue(Length);
            if (sequences < 1)
            {
                throw new UsageException($"--sequences must be positive, got {sequences}.");
            }

            if (length < 2 || length > maxPositions)
            {
                throw new UsageException($"--length must be between 2 and the model's max_position_embeddings ({maxPositions}), got {length}.");
            }

            int[] ids = TokenInput.Read(path);
            if (ids.Length <= length)
            {
                throw new UsageException($"--tokens {path} holds {ids.Length} tokens, not enough for windows of --length {length}.");
            }

            return CalibrationData.FromTokenStream(ids, parsed.GetValue(Sequences), length, parsed.GetValue(Seed));
        }
    }

    /// <summary>What the student keeps, as options: explicit sizes, or a parameter budget (see <see cref="PlanTargets"/>).</summary>
    private sealed class PlanTargetOptions
    {
        private readonly Option<int?> _layers = new("--layers") { Description = "Layers to keep." };
        private readonly Option<string?> _keepLayers = new("--keep-layers") { Description = "Teacher layers to keep, e.g. \"0,1,2,21\"." };
        private readonly Option<LayerSelection> _layerSelection = CommonOptions.Choice("--layer-selection", "How --layers picks: position-prior (the paper's first-and-last prior) or top-scores (top layer scores)", new PlanTargets().LayerSelection);
        private readonly Option<int?> _kvGroups = new("--kv-groups") { Description = "KV groups to keep per layer (the top-scored), each with all its query heads unless --heads-per-group cuts them too." };
        private readonly Option<int?> _headsPerGroup = new("--heads-per-group") { Description = "Query heads to keep in each kept KV group (the top-scored); every group is kept unless --kv-groups cuts them too." };
        private readonly Option<int?> _neurons = new("--neurons") { Description = "FFN neurons per layer." };
        private readonly Option<double?> _neuronFraction = new("--neuron-fraction") { Description = "FFN neurons per layer, as a fraction of the teacher's." };
        private readonly Option<int?> _hidden = new("--hidden") { Description = "Hidden channels." };
        private readonly Option<double?> _hiddenFraction = new("--hidden-fraction") { Description = "Hidden channels, as a fraction of the teacher's." };
        private readonly Option<int> _roundTo = new("--round-to") { Description = "Round neuron and channel counts (and, with --budget, candidate widths) to a multiple of this.", DefaultValueFactory = _ => 1 };
        private readonly Option<string?> _budget = new("--budget") { Description = "Parameter budget (e.g. 1.1e9): choose the deepest-and-thinnest shape that meets it." };

        private IEnumerable<Option> All => [_layers, _keepLayers, _layerSelection, _kvGroups, _headsPerGroup, _neurons, _neuronFraction, _hidden, _hiddenFraction, _roundTo, _budget];

        public void AddTo(Command command)
        {
            foreach (Option option in All)
            {
                command.Options.Add(option);
            }
        }

        public SurgeryPlan Build(CliContext context, ParseResult parsed, LlamaConfig teacher, ImportanceScores? scores)
        {
            PlanTargets targets = Read(parsed);
            try
            {
                IReadOnlyList<ShapeCandidate> candidates = targets.BudgetCandidates(teacher, OptionName);
                if (candidates.Count > 0)
                {
                    context.Output.WriteLine($"{candidates.Count} shapes meet the budget; deepest and thinnest first:");
                    foreach (ShapeCandidate candidate in candidates.Take(5))
                    {
                        context.Output.WriteLine($"  {candidate}");
                    }
                }

                return targets.Build(teacher, scores, OptionName);
            }
            catch (ArgumentException ex)
            {
                throw new UsageException(ex.Message, ex);
            }
        }

        private PlanTargets Read(ParseResult parsed)
        {
            long? budget = null;
            if (parsed.GetValue(_budget) is { } budgetText)
            {
                if (!double.TryParse(budgetText, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || !(value >= 1) || value > long.MaxValue)
                {
                    throw new UsageException($"{_budget.Name}: '{budgetText}' is not a positive number of parameters.");
                }

                budget = (long)value;
            }

            return new PlanTargets
            {
                Layers = parsed.GetValue(_layers),
                KeepLayers = parsed.GetValue(_keepLayers) is { } keep ? TokenIds.Parse(keep, _keepLayers.Name) : null,
                LayerSelection = parsed.GetValue(_layerSelection),
                KvGroups = parsed.GetValue(_kvGroups),
                HeadsPerGroup = parsed.GetValue(_headsPerGroup),
                Neurons = parsed.GetValue(_neurons),
                NeuronFraction = parsed.GetValue(_neuronFraction),
                HiddenChannels = parsed.GetValue(_hidden),
                HiddenFraction = parsed.GetValue(_hiddenFraction),
                RoundTo = parsed.GetValue(_roundTo),
                BudgetParameters = budget,
            };
        }

        private string OptionName(string key) => key switch
        {
            PlanTargets.Keys.Layers => _layers.Name,
            PlanTargets.Keys.KeepLayers => _keepLayers.Name,
            PlanTargets.Keys.LayerSelection => _layerSelection.Name,
            PlanTargets.Keys.KvGroups => _kvGroups.Name,
            PlanTargets.Keys.HeadsPerGroup => _headsPerGroup.Name,
            PlanTargets.Keys.Neurons => _neurons.Name,
            PlanTargets.Keys.NeuronFraction => _neuronFraction.Name,
            PlanTargets.Keys.HiddenChannels => _hidden.Name,
            PlanTargets.Keys.HiddenFraction => _hiddenFraction.Name,
            PlanTargets.Keys.RoundTo => _roundTo.Name,
            PlanTargets.Keys.BudgetParameters => _budget.Name,
            _ => key,
        };
    }

    /// <summary>Where and how the student is written.</summary>
    private sealed class BuildOptions
    {
        public Option<string> Output { get; } = new("--out") { Description = "Student checkpoint folder.", Required = true };

        private readonly Option<string?> _dtype = new("--dtype") { Description = "Stored dtype of the student (f32, bf16, f16); default: the teacher's." };
        private readonly Option<string?> _maxShard = new("--max-shard-size") { Description = "Largest shard (e.g. 2GB).", DefaultValueFactory = _ => "2GiB" };
        private readonly Option<string?> _tokenizer = new("--tokenizer") { Description = "Tokenizer file or folder to put in the student (needed when the plan compresses the vocabulary)." };
        private readonly Option<int?> _readWorkers = new("--read-workers") { Description = "Chunks of the teacher read at once (default: 1 on a rotational disk, else 2)." };
        private readonly Option<bool> _force = new("--force") { Description = "Replace a model already in --out, and build even when the memory estimate exceeds what is available." };

        public void AddTo(Command command)
        {
            command.Options.Add(Output);
            command.Options.Add(_dtype);
            command.Options.Add(_maxShard);
            command.Options.Add(_tokenizer);
            command.Options.Add(_readWorkers);
            command.Options.Add(_force);
        }

        /// <summary>The output checks of a build: the teacher and the tokenizer are inputs, --out a model folder.</summary>
        public OutputGuard Guard(ParseResult parsed, string teacherDir) => new OutputGuard()
            .Input(teacherDir, "--model", InputKind.Model)
            .Input(parsed.GetValue(_tokenizer), "--tokenizer", InputKind.Model)
            .Folder(parsed.GetValue(Output), "--out", parsed.GetValue(_force));

        public async Task RunAsync(CliContext context, ParseResult parsed, string teacherDir, SurgeryPlan plan, CancellationToken cancellationToken)
        {
            if (parsed.GetValue(_readWorkers) is < 1)
            {
                throw new UsageException($"--read-workers must be at least 1, got {parsed.GetValue(_readWorkers)}.");
            }

            var options = new StudentBuildOptions
            {
                DType = parsed.GetValue(_dtype) is { } dtype ? SynthCommand.ParseWeightDType(dtype) : null,
                ReadWorkers = parsed.GetValue(_readWorkers),
                MaxShardBytes = SynthCommand.ParseSize(parsed.GetValue(_maxShard)!, "--max-shard-size"),
                Tokenizer = parsed.GetValue(_tokenizer),
                IgnoreMemoryEstimate = parsed.GetValue(_force),
            };
            PlanEstimate estimate = PlanEstimate.For(plan, plan.Teacher.TorchDtype, options.DType is { } d ? Inference.Checkpoints.SyntheticCheckpoint.ToTorchDtypeName(d) : null);
            await context.Error.WriteLineAsync($"estimate: {estimate.Summary()}").ConfigureAwait(false);
            Inference.Runtime.MemoryPreflight.EnsureDiskSpace(parsed.GetValue(Output)!, estimate.BytesToWrite, "build");
            StudentBuildResult result;
            using (var bar = context.CreateProgressBar("build", ProgressUnit.Bytes))
            {
                SurgeryResult built = await Surgeon.ForTeacher(teacherDir)
                    .UsePlan(plan)
                    .WriteWith(options)
                    .ReportTo(bar)
                    .BuildAsync(parsed.GetValue(Output)!, cancellationToken).ConfigureAwait(false);
                result = built.Student;
            }

            await context.Output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"built {result.Directory}: {result.Parameters.Total:N0} parameters ({result.Config.NumHiddenLayers} layers, hidden {result.Config.HiddenSize}, FFN {result.Config.IntermediateSize}, {result.Config.NumAttentionHeads}/{result.Config.NumKeyValueHeads} heads), {result.BytesRead / 1e6:F1} MB of the teacher needed and {result.BytesFetched / 1e6:F1} MB read ({(double)result.BytesFetched / Math.Max(1, result.BytesRead):F2} x) by {result.ReadWorkers} read workers, {result.BytesWritten / 1e6:F1} MB written in {result.Elapsed.TotalSeconds:F1} s")).ConfigureAwait(false);
        }
    }
}
