using System.Diagnostics;
using System.Globalization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Distillation;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ModelSurgery.Benchmarks;

/// <summary>
/// <c>train --step-costs</c>: at named student/teacher shapes, the fp32 <see cref="Trainer"/> step with plain
/// cross-entropy against the fp32 matmul peak (model FLOPs utilisation), and the same step with a
/// <see cref="DistillationObjective"/> against the plain one beside the ratio the arithmetic implies. Everything is
/// measured in one run with the contenders interleaved (peak, plain, distil, peak, plain, distil, ...), so a loaded
/// machine slows all of them alike; medians over the repetitions are reported.
/// <para>
/// FLOPs per student token: 6 N_s + 12 L_s T D_s (PaLM, appendix B; N counts parameters in matmuls: decoder layers and
/// head). A distillation step adds the teacher's forward, 2 N_t + 4 L_t T D_t, so its arithmetic ratio to the plain step
/// is (2 N_t + 4 L_t T D_t + 6 N_s + 12 L_s T D_s) / (6 N_s + 12 L_s T D_s). The last two columns count minor page faults
/// per step: memory the allocator handed back to the system and had to fault in again. The "apart" columns time the same
/// distillation step with the two terms computed apart (<see cref="TermsApartObjective"/>), interleaved with the others.
/// </para>
/// </summary>
internal static class StepCosts
{
    /// <summary>A student and its teacher trained at one batch shape.</summary>
    private sealed record StepShape(string Name, string Source, LlamaConfig Student, LlamaConfig Teacher, int Batch, int SeqLen);

    private static readonly StepShape[] Shapes =
    [
        // A medium shape: a 15M student (hidden 512) of a 27M teacher.
        new("d512", "15M student of a 27M teacher", Config(512, 4, 8, 8, 1024, 4096, 256), Config(512, 8, 8, 8, 1152, 4096, 256), Batch: 4, SeqLen: 256),
        // QuickstartSizes.Full and QuickstartSizes.Fast (Samples/Quickstart): the student and teacher widths, vocabulary, context and student batch.
        new("quickstart", "QuickstartSizes.Full", Config(96, 3, 2, 1, 288, 8192, 128), Config(128, 6, 4, 2, 384, 8192, 128), Batch: 8, SeqLen: 128),
        new("quickstart-fast", "QuickstartSizes.Fast", Config(48, 2, 2, 1, 96, 1024, 32), Config(64, 4, 4, 2, 192, 1024, 32), Batch: 8, SeqLen: 32),
    ];

    /// <summary>The shape names <c>--step-costs</c> accepts.</summary>
    public static IEnumerable<string> ShapeNames => Shapes.Select(s => s.Name);

    /// <summary>Measures and prints the table for the comma-separated <paramref name="names"/>.</summary>
    /// <exception cref="ArgumentException">An unknown shape or dtype, or a count below one; the message names the option.</exception>
    public static async Task RunAsync(string names, int steps, int repeats, string teacherDtype, bool profile, CancellationToken ct)
    {
        List<StepShape> chosen = [.. names.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(name =>
            Shapes.FirstOrDefault(s => s.Name == name) ?? throw new ArgumentException($"--step-costs: '{name}' is not a known shape; use {string.Join(", ", ShapeNames)}."))];
        if (chosen.Count == 0)
        {
            throw new ArgumentException($"--step-costs: name at least one shape ({string.Join(", ", ShapeNames)}).");
        }

        if (steps < 1 || repeats < 1)
        {
            throw new ArgumentException($"--steps and --repeats must be at least 1; got {steps} and {repeats}.");
        }

        ScalarType teacherType = teacherDtype switch
        {
            "fp32" => ScalarType.Float32,
            "bf16" => ScalarType.BFloat16,
            _ => throw new ArgumentException($"--teacher-dtype: '{teacherDtype}' is not fp32 or bf16."),
        };

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"machine   {Environment.ProcessorCount} logical cores, torch threads {torch.get_num_threads()}, load average {TrainBenchmark.LoadAverage()}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"method    fp32 Trainer steps (student fp32, teacher {teacherDtype}, forward KL, T = 1, alpha = 0.5); per repetition: the 2048 x 2048 fp32 matmul peak, {steps} timed plain steps, {steps} timed distillation steps (each after a warm-up step); medians of {repeats} repetitions"));
        var rows = new List<string>();
        var profiles = new List<(string Shape, IReadOnlyList<(string Phase, double Plain, double Distil)> Phases)>();
        var pieces = new List<(string Shape, IReadOnlyList<(string Piece, double Seconds)> Pieces)>();
        foreach (StepShape shape in chosen)
        {
            double studentFlops = TrainingFlopsPerToken(shape.Student, shape.SeqLen);
            double teacherFlops = ForwardFlopsPerToken(shape.Teacher, shape.SeqLen);
            double arithmetic = (studentFlops + teacherFlops) / studentFlops;
            Console.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"shape     {shape.Name} ({shape.Source}): student {Describe(shape.Student)}, teacher {Describe(shape.Teacher)}, batch {shape.Batch} x {shape.SeqLen}"));
            string work = Directory.CreateTempSubdirectory("step-costs").FullName;
            try
            {
                string tokens = TrainBenchmark.WriteRandomTokens(work, shape.Student.VocabSize, (long)shape.Batch * shape.SeqLen * (steps + 3) * 2);
                using TokenFile file = TokenFile.Open(tokens);
                using var teacher = new LlamaForCausalLM(shape.Teacher);
                teacher.InitializeWeights(2);
                var peaks = new List<double>();
                var plain = new List<double>();
                var distil = new List<double>();
                var apart = new List<double>();
                var faults = new List<(double Plain, double Distil)>();
                for (int r = 0; r < repeats; r++)
                {
                    peaks.Add(TrainBenchmark.MatmulPeak(ScalarType.Float32));
                    var (plainSeconds, plainFaults) = await TrainerStep(shape, file, null, steps, Path.Combine(work, $"plain{r}"), ct);
                    var (distilSeconds, distilFaults) = await TrainerStep(shape, file, Objective(teacher, teacherType), steps, Path.Combine(work, $"distil{r}"), ct);
                    var (apartSeconds, _) = await TrainerStep(shape, file, new TermsApartObjective(teacher, teacherType), steps, Path.Combine(work, $"apart{r}"), ct);
                    plain.Add(plainSeconds);
                    distil.Add(distilSeconds);
                    apart.Add(apartSeconds);
                    faults.Add((plainFaults, distilFaults));
                }

                if (profile)
                {
                    profiles.Add((shape.Name, PhaseProfile(shape, file, teacher, teacherType, steps)));
                    pieces.Add((shape.Name, LossPieces(shape, teacher)));
                }

                double peak = Median(peaks), plainStep = Median(plain), distilStep = Median(distil);
                long tokensPerStep = (long)shape.Batch * shape.SeqLen;
                double achieved = studentFlops * tokensPerStep / plainStep;
                double measuredRatio = distilStep / plainStep;
                double apartRatio = Median(apart) / plainStep;
                rows.Add(string.Create(
                    CultureInfo.InvariantCulture,
                    $"{shape.Name,-16}{peak / 1e9,9:F1}{plainStep,10:F3}{achieved / 1e9,10:F1}{100 * achieved / peak,8:F1}%{distilStep,10:F3}{measuredRatio,9:F2}{arithmetic,9:F2}{measuredRatio / arithmetic,9:F2}{apartRatio,9:F2}{apartRatio / arithmetic,9:F2}{Median(faults.Select(f => f.Plain)),10:F0}{Median(faults.Select(f => f.Distil)),10:F0}"));
            }
            finally
            {
                Directory.Delete(work, recursive: true);
            }
        }

        Console.WriteLine();
        Console.WriteLine($"{"shape",-16}{"peak",9}{"plain",10}{"achieved",10}{"MFU",9}{"distil",10}{"ratio",9}{"arith.",9}{"ratio /",9}{"apart",9}{"apart /",9}{"faults",10}{"faults",10}");
        Console.WriteLine($"{"",-16}{"GFLOP/s",9}{"s/step",10}{"GFLOP/s",10}{"",9}{"s/step",10}{"",9}{"ratio",9}{"arith.",9}{"ratio",9}{"arith.",9}{"plain",10}{"distil",10}");
        rows.ForEach(Console.WriteLine);
        foreach (var (shapeName, phases) in profiles)
        {
            Console.WriteLine();
            Console.WriteLine($"{shapeName}: seconds per step phase (median of {steps} steps after a warm-up step; the distillation objective runs the teacher forward again)");
            Console.WriteLine($"{"phase",-22}{"plain",10}{"distil",10}");
            foreach (var (phase, plainSeconds, distilSeconds) in phases)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{phase,-22}{plainSeconds,10:F4}{distilSeconds,10:F4}"));
            }
        }

        foreach (var (shapeName, parts) in pieces)
        {
            Console.WriteLine();
            Console.WriteLine($"{shapeName}: seconds per piece of a distillation step (median of {LossPieceRepeats} runs, interleaved; the loss pieces on B x T x V fp32 logits)");
            foreach (var (piece, seconds) in parts)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{piece,-52}{seconds,10:F4}"));
            }
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"load average after: {TrainBenchmark.LoadAverage()}"));
    }

    private static LlamaConfig Config(int hidden, int layers, int heads, int kvHeads, int ffn, int vocab, int seqLen) => new()
    {
        VocabSize = vocab,
        HiddenSize = hidden,
        IntermediateSize = ffn,
        NumHiddenLayers = layers,
        NumAttentionHeads = heads,
        NumKeyValueHeads = kvHeads,
        MaxPositionEmbeddings = Math.Max(2048, seqLen),
        EosTokenIds = [0],
    };

    private static string Describe(LlamaConfig c) => string.Create(
        CultureInfo.InvariantCulture,
        $"D {c.HiddenSize} L {c.NumHiddenLayers} heads {c.NumAttentionHeads}/{c.NumKeyValueHeads} FFN {c.IntermediateSize} vocab {c.VocabSize} ({LlamaTensorLayout.CountParameters(c).Total / 1e6:F1} M, {MatmulParameters(c) / 1e6:F1} M in matmuls)");

    private static long MatmulParameters(LlamaConfig c)
    {
        long embedding = (long)c.VocabSize * c.HiddenSize;
        return LlamaTensorLayout.CountParameters(c).Total - embedding + (c.TieWordEmbeddings ? embedding : 0);
    }

    private static double TrainingFlopsPerToken(LlamaConfig c, int seqLen) => (6.0 * MatmulParameters(c)) + (12.0 * c.NumHiddenLayers * seqLen * c.HiddenSize);

    private static double ForwardFlopsPerToken(LlamaConfig c, int seqLen) => (2.0 * MatmulParameters(c)) + (4.0 * c.NumHiddenLayers * seqLen * c.HiddenSize);

    private static DistillationObjective Objective(LlamaForCausalLM teacher, ScalarType dtype) =>
        new(teacher, new DistillationLoss(DistillationDivergence.ForwardKl, temperature: 1.0, alpha: 0.5), teacherDtype: dtype);

    private static TrainingOptions Options(StepShape shape, long steps, string output) => new()
    {
        BatchSize = shape.Batch,
        SeqLen = shape.SeqLen,
        Steps = steps,
        EvalEvery = 0,
        EvalBatches = 0,
        CheckpointEvery = 0,
        OutputDir = output,
    };

    /// <summary>Seconds per <see cref="Trainer"/> step, timed from the end of the warm-up step to the end of the last timed one.</summary>
    private static async Task<(double Seconds, double PageFaults)> TrainerStep(StepShape shape, TokenFile file, ITrainingObjective? objective, int steps, string output, CancellationToken ct)
    {
        using var student = new LlamaForCausalLM(shape.Student);
        student.InitializeWeights(1);
        var marks = new Dictionary<long, (double Seconds, long Faults)>();
        var clock = Stopwatch.StartNew();
        var progress = new SynchronousProgress<TrainingProgress>(p => marks[p.Completed] = (clock.Elapsed.TotalSeconds, Measure.MinorPageFaults()));
        long windows = TokenWindows.Count(file.Count, shape.SeqLen);
        // The last step also writes the training state; it is not timed.
        await new Trainer(student, Options(shape, steps + 2, output), objective).TrainAsync(
            new TrainingData(file, [.. Enumerable.Range(0, (int)windows).Select(w => (long)w)], []), progress, cancellationToken: ct);
        return ((marks[steps + 1].Seconds - marks[1].Seconds) / steps, (marks[steps + 1].Faults - marks[1].Faults) / (double)steps);
    }

    /// <summary>
    /// Seconds per phase of an fp32 step as <see cref="Trainer"/> runs it (data, objective forward and loss, backward,
    /// clipping, AdamW), plain and distilled, each the median over the timed steps.
    /// </summary>
    private static IReadOnlyList<(string Phase, double Plain, double Distil)> PhaseProfile(StepShape shape, TokenFile file, LlamaForCausalLM teacher, ScalarType teacherType, int steps)
    {
        string[] names = ["data", "teacher forward alone", "objective fwd+loss", "backward", "clip", "AdamW"];
        double[][] plain = Phases(shape, file, null, steps, names.Length);
        double[][] distil = Phases(shape, file, teacher, steps, names.Length, teacherType);
        return [.. names.Select((name, i) => (name, Median(plain[i]), Median(distil[i])))];
    }

    private static double[][] Phases(StepShape shape, TokenFile file, LlamaForCausalLM? teacher, int steps, int count, ScalarType teacherType = ScalarType.Float32)
    {
        using var student = new LlamaForCausalLM(shape.Student);
        student.InitializeWeights(1);
        student.train();
        List<Parameter> parameters = [.. student.parameters()];
        using var optimizer = torch.optim.AdamW(parameters, lr: 1e-4, weight_decay: 0.1);
        ITrainingObjective objective = teacher is null ? CrossEntropyObjective.Instance : Objective(teacher, teacherType);
        long windows = TokenWindows.Count(file.Count, shape.SeqLen);
        var sampler = new BatchSampler(file, [.. Enumerable.Range(0, (int)windows).Select(w => (long)w)], shape.Batch, shape.SeqLen, seed: 3);
        var samples = Enumerable.Range(0, count).Select(_ => new double[steps]).ToArray();
        for (int i = 0; i <= steps; i++)
        {
            using var scope = torch.NewDisposeScope();
            double[] times = new double[count];
            long mark = Stopwatch.GetTimestamp();
            void Lap(int phase)
            {
                times[phase] = Stopwatch.GetElapsedTime(mark).TotalSeconds;
                mark = Stopwatch.GetTimestamp();
            }

            student.zero_grad();
            TrainingBatch batch = sampler.Next();
            Lap(0);
            if (teacher is not null)
            {
                // The teacher's forward alone, as the objective runs it (no gradients), so its share can be read off.
                using var noGrad = torch.no_grad();
                teacher.eval();
                using Tensor logits = teacher.forward(batch.Inputs); // [B, T, V]
            }

            Lap(1);
            Tensor loss = objective.Loss(student, batch); // []
            _ = loss.item<float>();
            Lap(2);
            loss.backward();
            Lap(3);
            torch.nn.utils.clip_grad_norm_(parameters, 1.0);
            Lap(4);
            optimizer.step();
            Lap(5);
            if (i > 0)
            {
                for (int phase = 0; phase < count; phase++)
                {
                    samples[phase][i - 1] = times[phase];
                }
            }
        }

        return samples;
    }

    private const int LossPieceRepeats = 7;

    /// <summary>
    /// Seconds for each piece of a distillation step at the shape (teacher and student forwards, and the loss pieces on
    /// random fp32 logits of the shape's B x T x V), the pieces interleaved and repeated, medians.
    /// </summary>
    private static IReadOnlyList<(string Piece, double Seconds)> LossPieces(StepShape shape, LlamaForCausalLM teacher)
    {
        using var student = new LlamaForCausalLM(shape.Student);
        student.InitializeWeights(1);
        student.train();
        teacher.eval();
        var generator = new Generator(5, torch.CPU);
        using Tensor inputs = torch.randint(shape.Student.VocabSize, [shape.Batch, shape.SeqLen], generator: generator); // [B, T]
        using Tensor targets = torch.randint(shape.Student.VocabSize, [shape.Batch, shape.SeqLen], generator: generator); // [B, T]
        using Tensor studentValues = torch.randn([shape.Batch, shape.SeqLen, shape.Student.VocabSize], generator: generator) * 3; // [B, T, V]
        using Tensor teacherLogits = torch.randn([shape.Batch, shape.SeqLen, shape.Student.VocabSize], generator: generator) * 3; // [B, T, V]
        var loss = new DistillationLoss(DistillationDivergence.ForwardKl, temperature: 1.0, alpha: 0.5);
        (string Name, Action Run)[] pieces =
        [
            ("teacher forward, no-grad", () =>
            {
                using var noGrad = torch.no_grad();
                using Tensor logits = teacher.forward(inputs);
            }),
            ("teacher forward, inference mode", () =>
            {
                using var inference = torch.inference_mode();
                using Tensor logits = teacher.forward(inputs);
            }),
            ("student forward and backward through a sum", () =>
            {
                using var scope = torch.NewDisposeScope();
                student.zero_grad();
                student.forward(inputs).sum().backward();
            }),
            ("teacher log_softmax + exp (no-grad)", () =>
            {
                using var scope = torch.NewDisposeScope();
                using var noGrad = torch.no_grad();
                _ = teacherLogits.log_softmax(-1).exp();
            }),
            ("student log_softmax forward + backward", () => LossOnLogits(studentValues, s => s.log_softmax(-1).sum())),
            ("plain cross-entropy forward + backward", () => LossOnLogits(studentValues, s => CrossEntropyObjective.Compute(s, targets))),
            ("KL and CE apart forward + backward", () => LossOnLogits(studentValues, s => TermsApartObjective.Compute(s, teacherLogits, targets))),
            ("library loss (one soft-target CE) forward + backward", () => LossOnLogits(studentValues, s => loss.Compute(s, teacherLogits, targets))),
        ];
        var samples = pieces.Select(_ => new List<double>()).ToArray();
        for (int r = 0; r <= LossPieceRepeats; r++)
        {
            for (int i = 0; i < pieces.Length; i++)
            {
                long start = Stopwatch.GetTimestamp();
                pieces[i].Run();
                if (r > 0)
                {
                    samples[i].Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
                }
            }
        }

        return [.. pieces.Select((p, i) => (p.Name, Median(samples[i])))];
    }

    // The loss of fresh leaf logits and its backward, as a step runs them.
    private static void LossOnLogits(Tensor values, Func<Tensor, Tensor> loss)
    {
        using var scope = torch.NewDisposeScope();
        Tensor logits = values.detach().requires_grad_(true); // [B, T, V]
        Tensor value = loss(logits);
        _ = value.item<float>();
        value.backward();
    }

    private static double Median(IEnumerable<double> values)
    {
        double[] sorted = [.. values.Order()];
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }
}

/// <summary>
/// The distillation objective with its two terms computed apart, as the library did before it folded them into one
/// soft-target cross-entropy: log-softmax of teacher and student, KL(p || q) = sum p (log p - log q), and cross-entropy
/// read from the student's log-softmax; forward KL, T = 1, alpha 0.5. Used as the "apart" contender.
/// </summary>
internal sealed class TermsApartObjective : ITrainingObjective
{
    private readonly LlamaForCausalLM _teacher;

    public TermsApartObjective(LlamaForCausalLM teacher, ScalarType teacherDtype)
    {
        _teacher = teacher;
        _teacher.to(teacherDtype);
    }

    public IReadOnlyList<(string Name, Parameter Parameter)> Parameters => [];

    /// <summary>0.5 KL(softmax(teacher) || softmax(student)) + 0.5 CE, the terms taken apart.</summary>
    public static Tensor Compute(Tensor studentLogits, Tensor teacherLogits, Tensor targets)
    {
        using var scope = torch.NewDisposeScope();
        Tensor logQ = studentLogits.to(ScalarType.Float32).log_softmax(-1); // [B, T, V]
        Tensor logP = teacherLogits.to(ScalarType.Float32).log_softmax(-1); // [B, T, V]
        Tensor kl = (logP.exp() * (logP - logQ)).sum(-1).mean();
        Tensor crossEntropy = nn.functional.nll_loss(logQ.reshape(-1, logQ.shape[^1]), targets.reshape(-1));
        return ((0.5 * kl) + (0.5 * crossEntropy)).MoveToOuterDisposeScope();
    }

    public Tensor Loss(nn.Module<Tensor, Tensor> model, TrainingBatch batch)
    {
        using var scope = torch.NewDisposeScope();
        Tensor teacherLogits;
        _teacher.eval();
        using (torch.no_grad())
        {
            teacherLogits = _teacher.forward(batch.Inputs); // [B, T, V]
        }

        return Compute(model.forward(batch.Inputs), teacherLogits, batch.Targets).MoveToOuterDisposeScope();
    }
}
