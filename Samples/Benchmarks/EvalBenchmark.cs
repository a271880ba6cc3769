using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Tokenization;
using TorchSharp;

namespace ModelSurgery.Benchmarks;

/// <summary>
/// <c>eval</c>: log-likelihood scoring throughput (scored continuation tokens per second) of a ~17M-parameter random
/// Llama on multiple-choice-like requests, with batching off (batch 1) and on.
/// </summary>
internal static class EvalBenchmark
{
    public static Command Create()
    {
        var questions = new Option<int>("--questions") { DefaultValueFactory = _ => 16, Description = "Multiple-choice questions (4 choices each, so 4 requests per question)." };
        var batches = new Option<string>("--batch-sizes") { DefaultValueFactory = _ => "1,8,16", Description = "Batch sizes to compare, comma separated." };
        var device = new Option<string>("--device") { DefaultValueFactory = _ => "cpu", Description = "cpu, cuda or cuda:N." };
        var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "f32", Description = "Model dtype: f32, bf16 or f16." };
        var repeat = new Option<int>("--repeat") { DefaultValueFactory = _ => 1, Description = "Later (steady-state) passes per batch size after the first; the fastest is reported." };
        var threads = new Option<int?>("--threads") { Description = "Intra-op CPU threads for LibTorch (default: LibTorch's choice)." };
        var command = new Command("eval", "Evaluation scoring throughput with batching on and off.") { questions, batches, device, dtype, repeat, threads };
        command.SetAction(async (parsed, ct) =>
        {
            int[] batchSizes = [.. parsed.GetValue(batches)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(s => int.Parse(s, CultureInfo.InvariantCulture))];
            torch.ScalarType scalar = parsed.GetValue(dtype)!.ToUpperInvariant() switch
            {
                "F32" => torch.ScalarType.Float32,
                "BF16" => torch.ScalarType.BFloat16,
                "F16" => torch.ScalarType.Float16,
                var other => throw new ArgumentException($"--dtype {other}: use f32, bf16 or f16."),
            };
            if (parsed.GetValue(threads) is int threadCount)
            {
                torch.set_num_threads(threadCount);
            }

            // As the modelsurgery tool runs every command: freed logits of one batch are reused by the next.
            ModelSurgery.Inference.Runtime.NativeAllocator.KeepFreedMemoryInProcess();

            torch.Device target = torch.device(parsed.GetValue(device)!);
            LlamaConfig config = BenchmarkConfig();
            torch.manual_seed(0);
            using var model = new LlamaForCausalLM(config, scalar, target);
            TokenizedRequest[] requests = MultipleChoiceRequests(parsed.GetValue(questions), config.VocabSize, seed: 0);

            // Token-level scoring never calls the tokenizer; the scorer only needs one to exist.
            var tokenizer = TokenizerFiles.Load("gpt2");
            long scoredTokens = requests.Sum(r => (long)r.Continuation.Count);
            long inputTokens = requests.Sum(r => (long)(r.Context.Count + r.Continuation.Count - 1));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"model            {LlamaTensorLayout.CountParameters(config).Total / 1e6:F1}M parameters (hidden {config.HiddenSize}, {config.NumHiddenLayers} layers, {config.NumAttentionHeads} heads, FFN {config.IntermediateSize}, vocab {config.VocabSize}), {scalar} on {target}"));
            Console.WriteLine($"requests         {requests.Length} ({requests.Length / 4} questions x 4 choices), {inputTokens} input tokens, {scoredTokens} scored tokens");
            Console.WriteLine($"threads          torch {torch.get_num_threads()}, processors {Environment.ProcessorCount}");
            Console.WriteLine($"load average     {LoadAverage()} (before)");
            Console.WriteLine();
            // CPU seconds of this process are steadier than wall-clock time on a shared machine. The first pass meets
            // every input shape for the first time, which LibTorch pays for (allocations, kernel selection); a single
            // evaluation run is mostly such a pass, a long one reaches the later passes' steady state.
            Console.WriteLine("| batch | padding | 1st pass s | 1st pass CPU s | later pass s | later pass CPU s | scored tok/s 1st | scored tok/s later | CPU speed-up 1st | CPU speed-up later |");
            Console.WriteLine("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
            using var process = Process.GetCurrentProcess();
            var unrelatedShape = new TokenizedRequest([.. Enumerable.Range(2, 40)], [2, 3]);
            await new LogLikelihoodScorer(model, tokenizer).ScoreTokensAsync([unrelatedShape], null, ct); // loads kernels once
            (double Wall, double Cpu)? firstBaseline = null, laterBaseline = null;
            foreach (int batchSize in batchSizes)
            {
                var scorer = new LogLikelihoodScorer(model, tokenizer, new EvaluationOptions { BatchSize = batchSize, MaxLength = config.MaxPositionEmbeddings });
                var passes = new List<(double Wall, double Cpu)>();
                for (int r = 0; r < 1 + Math.Max(1, parsed.GetValue(repeat)); r++)
                {
                    process.Refresh();
                    TimeSpan cpuBefore = process.TotalProcessorTime;
                    var watch = Stopwatch.StartNew();
                    await scorer.ScoreTokensAsync(requests, null, ct);
                    double wall = watch.Elapsed.TotalSeconds;
                    process.Refresh();
                    passes.Add((wall, (process.TotalProcessorTime - cpuBefore).TotalSeconds));
                }

                (double Wall, double Cpu) first = passes[0];
                (double Wall, double Cpu) later = (passes.Skip(1).Min(p => p.Wall), passes.Skip(1).Min(p => p.Cpu));
                firstBaseline ??= first;
                laterBaseline ??= later;
                long padded = PaddedInputTokens(requests, batchSize);
                Console.WriteLine(string.Create(
                    CultureInfo.InvariantCulture,
                    $"| {batchSize} | {(padded - inputTokens) / (double)padded:P1} | {first.Wall:F2} | {first.Cpu:F2} | {later.Wall:F2} | {later.Cpu:F2} | {scoredTokens / first.Wall:F0} | {scoredTokens / later.Wall:F0} | {firstBaseline.Value.Cpu / first.Cpu:F2}x | {laterBaseline.Value.Cpu / later.Cpu:F2}x |"));
            }

            Console.WriteLine();
            Console.WriteLine($"load average     {LoadAverage()} (after)");
            return 0;
        });
        return command;
    }

    /// <summary>About 17M parameters: hidden 384, 6 layers of 6 heads, FFN 1024, vocabulary 8192.</summary>
    private static LlamaConfig BenchmarkConfig() => new()
    {
        ModelType = "llama",
        HiddenSize = 384,
        IntermediateSize = 1024,
        NumHiddenLayers = 6,
        NumAttentionHeads = 6,
        NumKeyValueHeads = 6,
        VocabSize = 8192,
        MaxPositionEmbeddings = 512,
        BosTokenId = 1,
    };

    /// <summary>
    /// Requests shaped like a multiple-choice benchmark: per question a context of 100 to 300 tokens shared by 4 choices
    /// of 5 to 20 tokens each.
    /// </summary>
    private static TokenizedRequest[] MultipleChoiceRequests(int questions, int vocabulary, int seed)
    {
        var random = new Random(seed);
        var requests = new List<TokenizedRequest>();
        for (int q = 0; q < questions; q++)
        {
            int[] context = [.. Enumerable.Range(0, random.Next(100, 301)).Select(_ => random.Next(2, vocabulary))];
            for (int c = 0; c < 4; c++)
            {
                requests.Add(new TokenizedRequest(context, [.. Enumerable.Range(0, random.Next(5, 21)).Select(_ => random.Next(2, vocabulary))]));
            }
        }

        return [.. requests];
    }

    /// <summary>Tokens fed with padding: the scorer sorts longest first and pads each batch to its longest input.</summary>
    private static long PaddedInputTokens(TokenizedRequest[] requests, int batchSize) =>
        requests.Select(r => r.Context.Count + r.Continuation.Count - 1)
            .OrderDescending()
            .Chunk(batchSize)
            .Sum(batch => (long)batch[0] * batch.Length);

    private static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "unavailable";
        }
    }
}
