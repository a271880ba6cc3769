using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Benchmarks;

/// <summary>
/// <c>decode-profile</c>: where the time of one decoding token goes, on a random-weight Llama (stories110M's shape by
/// default) with a KV cache half full: the whole step as <see cref="Inference.Generation.TextGenerator"/> runs it, the
/// projections alone (every weight matrix of the step, called one by one as the layers call them, at torch's thread count
/// and at one thread), the cost of one empty parallel region (the fork and join every split projection pays) and of one
/// small LibTorch op (what each residual add, activation or view costs), and the rotary tables of one position; the step
/// again with the kernels' regions on <c>Parallel.For</c>, and the managed bytes and tensors a step allocates.
/// Each figure is the median of several rounds, the parts interleaved within a round.
/// </summary>
internal static class DecodeProfileBenchmark
{
    // KernelOperands.ParallelForSwitch: the kernels' regions through Parallel.For instead of their own workers.
    private const string ParallelForSwitch = "ModelSurgery.Decoding.ParallelFor";

    public static Command Create()
    {
        var shape = new ModelShapeOptions(hidden: 768, layers: 12, heads: 12, ffn: 2048, vocab: 32000);
        var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "bf16", Description = "fp32 or bf16." };
        var tokens = new Option<int>("--tokens") { DefaultValueFactory = _ => 64, Description = "Tokens (steps) timed per round." };
        var rounds = new Option<int>("--rounds") { DefaultValueFactory = _ => 5, Description = "Rounds; medians are reported." };
        var threads = new Option<int?>("--threads") { Description = "torch.set_num_threads (default: the logical cores)." };
        var command = new Command("decode-profile", "Time per decoding token by part: projections, parallel regions, small LibTorch ops, the rest.")
        { dtype, tokens, rounds, threads };
        shape.AddTo(command);
        command.SetAction(parsed =>
        {
            int threadCount = parsed.GetValue(threads) ?? Environment.ProcessorCount;
            torch.set_num_threads(threadCount);
            int steps = parsed.GetValue(tokens), roundCount = parsed.GetValue(rounds);
            ScalarType type = parsed.GetValue(dtype) switch
            {
                "fp32" => ScalarType.Float32,
                "bf16" => ScalarType.BFloat16,
                var other => throw new ArgumentException($"--dtype: '{other}' is not fp32 or bf16."),
            };
            int context = 2 * steps;
            LlamaConfig config = shape.Config(parsed, c => c with { MaxPositionEmbeddings = 2 * context, TieWordEmbeddings = true, RmsNormEps = 1e-5 });
            using var model = new LlamaForCausalLM(config);
            model.InitializeWeights(seed: 110);
            model.to(type);
            using var noGrad = torch.no_grad();

            var linears = new List<LlamaLinear>();
            foreach (LlamaDecoderLayer layer in model.Model.Layers)
            {
                linears.AddRange([layer.Attention.QueryProjection, layer.Attention.KeyProjection, layer.Attention.ValueProjection, layer.Attention.OutputProjection]);
                linears.AddRange([layer.Mlp.GateProjection, layer.Mlp.UpProjection, layer.Mlp.DownProjection]);
            }

            Tensor head = model.HeadWeight;
            var inputs = linears.Select(l => torch.randn([1, 1, l.Weight.shape[1]]).to_type(type)).ToList(); // [1, 1, in] each
            using Tensor headInput = torch.randn([1, 1, head.shape[1]]).to_type(type); // [1, 1, D]
            using Tensor left = torch.randn([1, 1, config.HiddenSize]).to_type(type), right = torch.randn([1, 1, config.HiddenSize]).to_type(type); // [1, 1, D]

            var step = new List<double>();
            var bytes = new List<double>();
            var stepParallelFor = new List<double>();
            var bytesParallelFor = new List<double>();
            var tensorsCreated = new List<double>();
            var projections = new List<double>();
            var projectionsOneThread = new List<double>();
            var region = new List<double>();
            var smallOp = new List<double>();
            var rotary = new List<double>();
            var stepOneThread = new List<double>();
            var attention = new List<double>();
            var mlp = new List<double>();
            var norms = new List<double>();
            for (int r = 0; r < roundCount; r++)
            {
                (double tokenMs, double bytesPerToken, double tensorsPerToken) = Step(model, context, steps);
                step.Add(tokenMs);
                bytes.Add(bytesPerToken);
                tensorsCreated.Add(tensorsPerToken);
                AppContext.SetSwitch(ParallelForSwitch, true);
                (tokenMs, bytesPerToken, _) = Step(model, context, steps);
                AppContext.SetSwitch(ParallelForSwitch, false);
                stepParallelFor.Add(tokenMs);
                bytesParallelFor.Add(bytesPerToken);
                torch.set_num_threads(1);
                stepOneThread.Add(StepMilliseconds(model, context, steps));
                torch.set_num_threads(threadCount);
                (double attentionMs, double mlpMs, double normMs) = BlockMilliseconds(model, context, steps, left);
                attention.Add(attentionMs);
                mlp.Add(mlpMs);
                norms.Add(normMs);
                projections.Add(Milliseconds(steps, () => ProjectAll(linears, inputs, head, headInput)));
                torch.set_num_threads(1);
                projectionsOneThread.Add(Milliseconds(steps, () => ProjectAll(linears, inputs, head, headInput)));
                torch.set_num_threads(threadCount);
                region.Add(Milliseconds(1000, () => Parallel.For(0, threadCount, _ => { })) * 1000);
                smallOp.Add(Milliseconds(1000, () =>
                {
                    using Tensor sum = left + right;
                }) * 1000);
                rotary.Add(Milliseconds(1000, () =>
                {
                    using RotaryTables tables = model.CreateRotaryTables(context / 2, 1);
                }) * 1000);
            }

            int regions = linears.Count + 1;
            double stepMs = Median(step), projectionMs = Median(projections);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"machine        {Environment.ProcessorCount} logical cores, threads {threadCount}, load average {GenerateBenchmark.LoadAverage()}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"model          D {config.HiddenSize}, L {config.NumHiddenLayers}, FFN {config.IntermediateSize}, vocab {config.VocabSize}, {type}; {steps} tokens after {steps} cached, medians of {roundCount} rounds"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"step           {stepMs,8:F3} ms/token ({1000 / stepMs:F1} tokens/s)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"step, Parallel.For regions {Median(stepParallelFor),8:F3} ms/token ({Median(bytesParallelFor):F0} managed bytes/token): step / this {stepMs / Median(stepParallelFor):F3}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"allocations    {Median(bytes),8:F0} managed bytes/token, {Median(tensorsCreated):F0} tensors created/token (each a LibTorch op or view)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"step, 1 thread {Median(stepOneThread),8:F3} ms/token"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"attention      {Median(attention),8:F3} ms/token (all layers: q/k/v, rotary, cache, attention, o)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"mlp            {Median(mlp),8:F3} ms/token (all layers: gate, up, silu, product, down)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"norms          {Median(norms),8:F3} ms/token (2 per layer + final)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"projections    {projectionMs,8:F3} ms/token ({regions} matrix-vector products; 1 thread: {Median(projectionsOneThread):F3} ms)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"everything else{stepMs - projectionMs,8:F3} ms/token (norms, rotary, attention, cache, adds, activation, embedding, argmax, dispatch)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"parallel region{Median(region),8:F1} us empty Parallel.For over {threadCount} (x {regions} projections = {Median(region) * regions / 1000:F3} ms/token)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"small op       {Median(smallOp),8:F1} us one LibTorch add of [1, 1, {config.HiddenSize}]"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"rotary tables  {Median(rotary),8:F1} us for one position"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"load average after: {GenerateBenchmark.LoadAverage()}"));
            foreach (Tensor input in inputs)
            {
                input.Dispose();
            }
        });
        return command;
    }

    // Greedy steps from a cache that already holds `context / 2` positions, as TextGenerator steps: ids tensor, logits, argmax.
    private static double StepMilliseconds(LlamaForCausalLM model, int context, int steps) => Step(model, context, steps).Milliseconds;

    // As StepMilliseconds, then counting per token, over as many further steps, the managed bytes allocated (by every
    // thread) and the tensors created (every LibTorch op that returns a tensor, views included, on the calling thread).
    private static (double Milliseconds, double Bytes, double Tensors) Step(LlamaForCausalLM model, int context, int steps)
    {
        using KvCache cache = model.CreateKvCache(context + steps + 2); // the warm-up step and the counted steps too
        using (var scope = NewDisposeScope())
        {
            _ = model.NextTokenLogits(torch.ones([1, context / 2], ScalarType.Int64), cache);
        }

        long next = 1;
        void Decode()
        {
            using var scope = NewDisposeScope();
            Tensor logits = model.NextTokenLogits(torch.tensor(new[] { next }, [1, 1]), cache); // [1, V]
            next = logits[0].argmax().item<long>();
        }

        double milliseconds = Milliseconds(steps, Decode);
        long bytesBefore = GC.GetTotalAllocatedBytes(precise: true), tensorsBefore = TensorsCreated();
        for (int i = 0; i < steps; i++)
        {
            Decode();
        }

        double bytes = GC.GetTotalAllocatedBytes(precise: true) - bytesBefore, tensors = TensorsCreated() - tensorsBefore;
        return (milliseconds, bytes / steps, tensors / steps);
    }

    private static long TensorsCreated() =>
        DisposeScopeManager.Statistics.CreatedInScopeCount + DisposeScopeManager.Statistics.CreatedOutsideScopeCount;

    // The blocks of every layer called one by one on a fixed hidden row, the attention blocks over a cache half full.
    private static (double Attention, double Mlp, double Norms) BlockMilliseconds(LlamaForCausalLM model, int context, int steps, Tensor hidden)
    {
        IReadOnlyList<LlamaDecoderLayer> layers = model.Model.Layers;
        using KvCache cache = model.CreateKvCache(context + 1);
        using (var scope = NewDisposeScope())
        {
            _ = model.NextTokenLogits(torch.ones([1, context / 2], ScalarType.Int64), cache);
        }

        double attention = Milliseconds(steps, () =>
        {
            using var scope = NewDisposeScope();
            using RotaryTables rope = model.CreateRotaryTables(cache.Length, 1);
            foreach (LlamaDecoderLayer layer in layers)
            {
                _ = layer.Attention.forward(hidden, rope, cache);
            }
        });
        double mlp = Milliseconds(steps, () =>
        {
            using var scope = NewDisposeScope();
            foreach (LlamaDecoderLayer layer in layers)
            {
                _ = layer.Mlp.forward(hidden);
            }
        });
        double norms = Milliseconds(steps, () =>
        {
            using var scope = NewDisposeScope();
            foreach (LlamaDecoderLayer layer in layers)
            {
                _ = layer.InputNorm.forward(hidden);
                _ = layer.PostAttentionNorm.forward(hidden);
            }

            _ = model.Model.Norm.forward(hidden);
        });
        return (attention, mlp, norms);
    }

    private static void ProjectAll(List<LlamaLinear> linears, List<Tensor> inputs, Tensor head, Tensor headInput)
    {
        using var scope = NewDisposeScope();
        for (int i = 0; i < linears.Count; i++)
        {
            _ = linears[i].forward(inputs[i]);
        }

        _ = Inference.Runtime.CpuLinear.Linear(headInput, head);
    }

    private static double Milliseconds(int count, Action action)
    {
        action(); // warm-up
        long started = Stopwatch.GetTimestamp();
        for (int i = 0; i < count; i++)
        {
            action();
        }

        return Stopwatch.GetElapsedTime(started).TotalMilliseconds / count;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }
}
