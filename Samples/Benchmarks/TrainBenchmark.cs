using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Benchmarks;

/// <summary>
/// <c>train</c>: training throughput of a small Llama through <see cref="Trainer"/> in fp32 and bf16, against the
/// matmul peak of this machine measured in the same run.
/// <para>
/// Model FLOPs per trained token = 6 * N + 12 * L * T * D (PaLM, appendix B): N counts the parameters that take part in
/// matmuls (every decoder layer plus the LM head; the embedding lookup is not a matmul), the second term is attention
/// scores and weighted values over T positions, forward and backward. Achieved FLOP/s = that times tokens/s; the
/// fraction of peak divides it by the 2048 x 2048 matmul rate of the same dtype.
/// </para>
/// </summary>
internal static class TrainBenchmark
{
    public static Command Create()
    {
        var shape = new ModelShapeOptions(hidden: 384, layers: 6, heads: 6, ffn: 1024, vocab: 8192);
        var seqLen = new Option<int>("--seq-len") { DefaultValueFactory = _ => 256, Description = "Tokens per window T." };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 4, Description = "Windows per step." };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 2, Description = "Timed steps per precision (after the warm-up steps)." };
        var warmupSteps = new Option<int>("--warmup-steps")
        {
            DefaultValueFactory = _ => 6,
            Description = "Untimed steps before the timed ones, for the precision table (the C library's heap grows over a process's first steps, faulting fresh memory in; the table shows the faults left per timed step).",
        };
        var precisions = new Option<string>("--precisions") { DefaultValueFactory = _ => "fp32,bf16", Description = "Comma-separated: fp32, bf16." };
        var threads = new Option<int?>("--threads") { Description = "torch.set_num_threads (default: leave torch's choice)." };
        var profile = new Option<bool>("--profile") { Description = "Also time each phase of a step (forward, loss, backward, casts, clipping, AdamW) per precision." };
        var stepCosts = new Option<string?>("--step-costs")
        {
            Description = "Comma-separated step shapes (" + string.Join(", ", StepCosts.ShapeNames) + "): per shape, the fp32 Trainer step's fraction of " +
                "the matmul peak and the distillation step's cost over the plain step beside its arithmetic ratio, measured interleaved " +
                "in this run (replaces the precision table; the model-shape, --seq-len and --batch-size options are not used).",
        };
        var repeats = new Option<int>("--repeats")
        {
            DefaultValueFactory = _ => 3,
            Description = "Interleaved repetitions, medians reported: rounds of the precisions alternating (fp32, bf16, fp32, ...), or with --step-costs repetitions per shape.",
        };
        var teacherDtype = new Option<string>("--teacher-dtype") { DefaultValueFactory = _ => "fp32", Description = "With --step-costs: the teacher's dtype, fp32 or bf16." };
        ModelShapeOptions.Positive(steps);
        ModelShapeOptions.Positive(warmupSteps);
        ModelShapeOptions.Positive(repeats);
        stepCosts.Validators.Add(result =>
        {
            string[] unknown = [.. (result.GetValueOrDefault<string?>() ?? string.Empty).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Where(n => !StepCosts.ShapeNames.Contains(n))];
            if (unknown.Length > 0 || string.IsNullOrWhiteSpace(result.GetValueOrDefault<string?>()))
            {
                result.AddError($"--step-costs: name shapes from {string.Join(", ", StepCosts.ShapeNames)}; '{string.Join(", ", unknown)}' is not one.");
            }
        });
        teacherDtype.AcceptOnlyFromAmong("fp32", "bf16");
        var command = new Command("train", "Training throughput (tokens/s) and fraction of the measured matmul peak; with --step-costs, the cost of distillation steps too.")
        { seqLen, batch, steps, warmupSteps, precisions, threads, profile, stepCosts, repeats, teacherDtype };
        shape.AddTo(command);
        command.SetAction(async (parsed, ct) =>
        {
            if (parsed.GetValue(threads) is int n)
            {
                torch.set_num_threads(n);
            }

            if (parsed.GetValue(stepCosts) is string names)
            {
                await StepCosts.RunAsync(names, parsed.GetValue(steps), parsed.GetValue(repeats), parsed.GetValue(teacherDtype)!, parsed.GetValue(profile), ct);
                return;
            }

            LlamaConfig config = shape.Config(parsed, c => c with
            {
                MaxPositionEmbeddings = Math.Max(2048, parsed.GetValue(seqLen)),
                EosTokenIds = [0],
            });
            int t = parsed.GetValue(seqLen), b = parsed.GetValue(batch), timed = parsed.GetValue(steps), warmup = parsed.GetValue(warmupSteps);
            ParameterCount count = LlamaTensorLayout.CountParameters(config);
            long embedding = (long)config.VocabSize * config.HiddenSize;
            long matmulParameters = count.Total - embedding + (config.TieWordEmbeddings ? embedding : 0);
            double flopsPerToken = (6.0 * matmulParameters) + (12.0 * config.NumHiddenLayers * t * config.HiddenSize);

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"machine          {Environment.ProcessorCount} logical cores, torch threads {torch.get_num_threads()}, load average {LoadAverage()}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"model            D {config.HiddenSize}, L {config.NumHiddenLayers}, heads {config.NumAttentionHeads}, FFN {config.IntermediateSize}, vocab {config.VocabSize}: {count.Total / 1e6:F1} M parameters ({matmulParameters / 1e6:F1} M in matmuls)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"batch            {b} x {t} = {b * t} tokens per step, {timed} timed steps after {warmup} warm-up steps"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"FLOPs per token  6 N + 12 L T D = {flopsPerToken / 1e6:F1} M"));

            string work = Directory.CreateTempSubdirectory("train-bench").FullName;
            try
            {
                string tokens = WriteRandomTokens(work, config.VocabSize, (long)b * t * (warmup + timed + 1) * 2);
                using TokenFile file = TokenFile.Open(tokens);
                string[] precisionNames = parsed.GetValue(precisions)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                int rounds = parsed.GetValue(repeats);
                var runs = precisionNames.ToDictionary(p => p, _ => new List<PrecisionRun>(), StringComparer.Ordinal);
                var profiles = new List<(string Precision, IReadOnlyList<(string Phase, double Seconds)> Phases)>();

                // As the Trainer and the modelsurgery tool run: freed memory stays in the process from the first
                // measurement on, so no precision pays page faults the other does not.
                bool keptFreedMemory = NativeAllocator.KeepFreedMemoryInProcess();
                Console.WriteLine($"rounds           {rounds}, precisions alternating ({string.Join(", ", precisionNames)}) in this process; freed memory kept: {(keptFreedMemory ? "yes" : "no")}");

                // Precisions alternate round by round (fp32, bf16, fp32, bf16, ...) so that a change in the machine's load
                // falls on both alike; medians over the rounds are reported.
                for (int round = 0; round < rounds; round++)
                {
                    foreach (string precision in precisionNames)
                    {
                        ScalarType dtype = precision == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32;
                        double peak = MatmulPeak(dtype);
                        double bare = BareForwardBackward(config, dtype, b, t, warmup, timed);
                        if (parsed.GetValue(profile) && round == 0)
                        {
                            profiles.Add((precision, PhaseProfile(config, dtype, b, t, warmup, timed)));
                        }

                        var (trainer, faults, losses) = await TrainerThroughput(config, file, precision == "bf16" ? TrainingPrecision.Bf16 : TrainingPrecision.Fp32, b, t, warmup, timed, Path.Combine(work, $"{precision}-{round}"), ct);
                        runs[precision].Add(new PrecisionRun(peak, bare, trainer, losses));
                        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"round {round + 1} {precision,-5}  Trainer {trainer,8:F0} tokens/s, {faults,8:F0} minor page faults per timed step, matmul peak {peak / 1e9:F1} GFLOP/s, load average {LoadAverage()}"));
                    }
                }

                Console.WriteLine();
                Console.WriteLine("precision  matmul peak  fwd+bwd only  Trainer      achieved   of peak   (medians of " + rounds.ToString(CultureInfo.InvariantCulture) + ")");
                Console.WriteLine("            (GFLOP/s)    (tokens/s)   (tokens/s)   (GFLOP/s)");
                foreach (string precision in precisionNames)
                {
                    List<PrecisionRun> r = runs[precision];
                    double peak = Median(r.Select(x => x.Peak)), bare = Median(r.Select(x => x.Bare)), trainer = Median(r.Select(x => x.Trainer));
                    Console.WriteLine(string.Create(
                        CultureInfo.InvariantCulture,
                        $"{precision,-9} {peak / 1e9,10:F1} {bare,12:F0} {trainer,12:F0} {trainer * flopsPerToken / 1e9,12:F2} {100 * trainer * flopsPerToken / peak,9:F1}%"));
                }

                if (runs.TryGetValue("fp32", out List<PrecisionRun>? fp32) && runs.TryGetValue("bf16", out List<PrecisionRun>? bf16))
                {
                    // Same initial weights, same windows in the same order: the curves differ only by bf16 arithmetic.
                    double[] ratios = [.. fp32.Zip(bf16, (f, h) => h.Trainer / f.Trainer)];
                    double gap = fp32.Zip(bf16, (f, h) => f.Losses.Zip(h.Losses, (x, y) => Math.Abs(x - y)).DefaultIfEmpty(double.NaN).Max()).Max();
                    double scale = fp32.SelectMany(f => f.Losses).Max();
                    Console.WriteLine(string.Create(
                        CultureInfo.InvariantCulture,
                        $"bf16 / fp32 Trainer tokens/s: {Median(bf16.Select(x => x.Trainer)) / Median(fp32.Select(x => x.Trainer)):F2} (medians; per round {string.Join(", ", ratios.Select(x => x.ToString("F2", CultureInfo.InvariantCulture)))})"));
                    Console.WriteLine(string.Create(
                        CultureInfo.InvariantCulture,
                        $"largest gap between the loss curves: {gap:E2} over {fp32[0].Losses.Count} steps per round (losses up to {scale:F3}; bf16 epsilon x loss = {scale * torch.finfo(ScalarType.BFloat16).eps:E2})"));
                }

                if (profiles.Count > 0)
                {
                    Console.WriteLine();
                    Console.WriteLine("seconds per step phase (median of the timed steps, first round)");
                    Console.WriteLine($"{"phase",-18}" + string.Concat(profiles.Select(p => $"{p.Precision,10}")));
                    for (int phase = 0; phase < profiles[0].Phases.Count; phase++)
                    {
                        Console.WriteLine($"{profiles[0].Phases[phase].Phase,-18}" + string.Concat(profiles.Select(p => string.Create(CultureInfo.InvariantCulture, $"{p.Phases[phase].Seconds,10:F3}"))));
                    }
                }

                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"AdamW step + gradient clipping alone (fp32, {count.Total / 1e6:F1} M parameters): {OptimizerStepSeconds(config):F2} s per step"));
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"load average after: {LoadAverage()}"));
            }
            finally
            {
                Directory.Delete(work, recursive: true);
            }
        });
        return command;
    }

    /// <summary>Best rate of a few 2048 x 2048 matmuls (2 n^3 FLOPs each).</summary>
    internal static double MatmulPeak(ScalarType dtype)
    {
        const int size = 2048;
        using var scope = torch.NewDisposeScope();
        Tensor a = torch.randn([size, size]).to(dtype); // [n, n]
        Tensor c = torch.randn([size, size]).to(dtype); // [n, n]
        using (torch.mm(a, c))
        {
        }

        double best = double.MaxValue;
        for (int i = 0; i < 3; i++)
        {
            var watch = Stopwatch.StartNew();
            using Tensor product = torch.mm(a, c); // [n, n]
            best = Math.Min(best, watch.Elapsed.TotalSeconds);
        }

        return 2.0 * size * size * size / best;
    }

    /// <summary>Seconds of one AdamW step plus global-norm clipping over the model's parameters (best of three).</summary>
    private static double OptimizerStepSeconds(LlamaConfig config)
    {
        using var model = new LlamaForCausalLM(config);
        model.InitializeWeights(1);
        var parameters = model.parameters().ToList();
        foreach (var p in parameters)
        {
            p.grad = torch.randn_like(p) * 1e-3;
        }

        using var optimizer = torch.optim.AdamW(parameters, lr: 1e-4);
        double best = double.MaxValue;
        for (int i = 0; i < 4; i++)
        {
            var watch = Stopwatch.StartNew();
            torch.nn.utils.clip_grad_norm_(parameters, 1.0);
            optimizer.step();
            if (i > 0)
            {
                best = Math.Min(best, watch.Elapsed.TotalSeconds);
            }
        }

        return best;
    }

    /// <summary>
    /// Seconds per phase of a training step as <see cref="Trainer"/> runs it (forward, loss, backward, in bf16 the cast of
    /// the gradients to the float32 masters, clipping, AdamW, in bf16 the rounding of the masters into the model), each
    /// the median over the timed steps: where the time of a precision goes.
    /// </summary>
    private static IReadOnlyList<(string Phase, double Seconds)> PhaseProfile(LlamaConfig config, ScalarType dtype, int batch, int seqLen, int warmup, int steps)
    {
        using var model = new LlamaForCausalLM(config);
        model.InitializeWeights(1);
        bool bf16 = dtype == ScalarType.BFloat16;
        if (bf16)
        {
            model.to(ScalarType.BFloat16);
        }

        model.train();
        List<Parameter> weights = [.. model.parameters()];
        List<Parameter> masters = bf16 ? [.. weights.Select(w => new Parameter(w.detach().to(ScalarType.Float32).clone()))] : weights;
        using var optimizer = torch.optim.AdamW(masters, lr: 1e-4, weight_decay: 0.1);
        string[] names = ["forward", "loss", "backward", "grads to fp32", "clip", "AdamW", "masters to bf16"];
        var samples = names.Select(_ => new List<double>()).ToArray();
        for (int i = 0; i < warmup + steps; i++)
        {
            using var scope = torch.NewDisposeScope();
            Tensor ids = torch.randint(config.VocabSize, [batch, seqLen + 1], dtype: ScalarType.Int64); // [B, T+1]
            double[] times = new double[names.Length];
            long mark = Stopwatch.GetTimestamp();
            void Lap(int phase)
            {
                times[phase] = Stopwatch.GetElapsedTime(mark).TotalSeconds;
                mark = Stopwatch.GetTimestamp();
            }

            model.zero_grad();
            if (!bf16)
            {
                optimizer.zero_grad();
            }

            Tensor logits = model.forward(ids[.., ..^1]); // [B, T, V]
            Lap(0);
            Tensor loss = CrossEntropyObjective.Compute(logits, ids[.., 1..]);
            _ = loss.item<float>();
            Lap(1);
            loss.backward();
            Lap(2);
            if (bf16)
            {
                // As the Trainer: master gradients allocated once, then overwritten.
                using var noGrad = torch.no_grad();
                for (int w = 0; w < weights.Count; w++)
                {
                    Tensor? master = masters[w].grad;
                    if (master is null)
                    {
                        masters[w].grad = weights[w].grad?.to(ScalarType.Float32);
                    }
                    else
                    {
                        master.copy_(weights[w].grad!);
                    }
                }
            }

            Lap(3);
            torch.nn.utils.clip_grad_norm_(masters, 1.0);
            Lap(4);
            optimizer.step();
            Lap(5);
            if (bf16)
            {
                using var noGrad = torch.no_grad();
                for (int w = 0; w < weights.Count; w++)
                {
                    weights[w].copy_(masters[w]);
                }
            }

            Lap(6);
            if (i >= warmup)
            {
                for (int phase = 0; phase < names.Length; phase++)
                {
                    samples[phase].Add(times[phase]);
                }
            }
        }

        if (bf16)
        {
            masters.ForEach(m => m.Dispose());
        }

        return [.. names.Select((name, phase) => (name, samples[phase].Order().ElementAt(samples[phase].Count / 2)))];
    }

    /// <summary>Tokens/s of model forward, loss and backward alone, the floor any training loop adds to.</summary>
    private static double BareForwardBackward(LlamaConfig config, ScalarType dtype, int batch, int seqLen, int warmup, int steps)
    {
        using var model = new LlamaForCausalLM(config, dtype);
        model.InitializeWeights(1);
        model.train();
        double total = 0;
        for (int i = 0; i < warmup + steps; i++)
        {
            using var scope = torch.NewDisposeScope();
            Tensor ids = torch.randint(config.VocabSize, [batch, seqLen + 1], dtype: ScalarType.Int64); // [B, T+1]
            var watch = Stopwatch.StartNew();
            Tensor logits = model.forward(ids[.., ..^1]); // [B, T, V]
            Tensor loss = CrossEntropyObjective.Compute(logits, ids[.., 1..]);
            loss.backward();
            model.zero_grad();
            if (i >= warmup)
            {
                total += watch.Elapsed.TotalSeconds;
            }
        }

        return (double)batch * seqLen * steps / total;
    }

    /// <summary>
    /// Tokens/s of <see cref="Trainer"/> steps, timed from the end of the last warm-up step to the end of the last timed
    /// one, the minor page faults per timed step (fresh memory touched), and the loss of every step.
    /// </summary>
    private static async Task<(double TokensPerSecond, double FaultsPerStep, IReadOnlyList<double> Losses)> TrainerThroughput(LlamaConfig config, TokenFile file, TrainingPrecision precision, int batch, int seqLen, int warmup, int steps, string output, CancellationToken ct)
    {
        using var model = new LlamaForCausalLM(config);
        model.InitializeWeights(1);
        var options = new TrainingOptions
        {
            BatchSize = batch,
            SeqLen = seqLen,
            Steps = warmup + steps + 1, // the last step also writes the training state; it is not timed
            EvalEvery = 0,
            EvalBatches = 0,
            CheckpointEvery = 0,
            Precision = precision,
            OutputDir = output,
        };
        var marks = new Dictionary<long, (double Seconds, long Faults)>();
        var clock = Stopwatch.StartNew();
        var progress = new SynchronousProgress<TrainingProgress>(p => marks[p.Completed] = (clock.Elapsed.TotalSeconds, Measure.MinorPageFaults()));
        long windows = TokenWindows.Count(file.Count, seqLen);
        TrainingResult result = await new Trainer(model, options).TrainAsync(new TrainingData(file, [.. Enumerable.Range(0, (int)windows).Select(w => (long)w)], []), progress, cancellationToken: ct);
        var (first, last) = (marks[warmup], marks[warmup + steps]);
        return ((double)batch * seqLen * steps / (last.Seconds - first.Seconds), (double)(last.Faults - first.Faults) / steps, [.. result.History.Select(h => h.Loss)]);
    }

    private static double Median(IEnumerable<double> values)
    {
        double[] sorted = [.. values.Order()];
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>One precision's figures in one round.</summary>
    private sealed record PrecisionRun(double Peak, double Bare, double Trainer, IReadOnlyList<double> Losses);

    internal static string WriteRandomTokens(string directory, int vocab, long count)
    {
        string path = Path.Combine(directory, "tokens.bin");
        var random = new Random(5);
        using var writer = new TokenFileWriter(path, vocab, 0);
        writer.AppendDocument([.. Enumerable.Range(0, (int)count).Select(_ => random.Next(1, vocab))]);
        writer.Complete();
        return path;
    }

    internal static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";
}
