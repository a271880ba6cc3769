using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Generation;
using ModelSurgery.Inference.Llama2C;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Benchmarks;

/// <summary>
/// <c>generate</c>: decoding tokens/s of <see cref="TextGenerator"/> on a random-weight Llama (stories110M's shape by
/// default) against the memory-bandwidth limit of this machine and llama2.c's run.c on the same weights (the vendored
/// llama2c/run.c built here, or a binary given with --run), all measured side by side in one run, each figure the median
/// of several repeats.
/// <para>
/// Decoding one token reads every weight once (the tied embedding as the head, one embedding row, the norms), so the
/// bandwidth limit is bandwidth / weight bytes. Bandwidth is what a large tensor copy moves (bytes copied per second,
/// with torch's threads). A copy also writes what it reads, so a read-only stream of weights can beat this limit a little.
/// </para>
/// </summary>
internal static class GenerateBenchmark
{
    public static Command Create()
    {
        var shape = new ModelShapeOptions(hidden: 768, layers: 12, heads: 12, ffn: 2048, vocab: 32000);
        var seqLen = new Option<int>("--seq-len") { DefaultValueFactory = _ => 256, Description = "Context: positions decoded per run (from one BOS token)." };
        var repeats = new Option<int>("--repeats") { DefaultValueFactory = _ => 5, Description = "Runs per contender; the median is reported." };
        var dtypes = new Option<string>("--dtypes") { DefaultValueFactory = _ => "fp32", Description = "Comma-separated: fp32, bf16." };
        var threads = new Option<int?>("--threads") { Description = "torch.set_num_threads and OMP_NUM_THREADS of run.c (default: the logical cores)." };
        var run = new Option<string?>("--run") { Description = "Path to a built llama2.c run binary; without it the vendored llama2c/run.c is built with the C compiler ($CC, else cc) and -Ofast -fopenmp -march=native, as llama2.c's README recommends." };
        var noRunC = new Option<bool>("--no-run-c") { Description = "Skip llama2.c's run.c (only the bandwidth limit is the reference)." };
        var defaultAllocator = new Option<bool>("--default-allocator") { Description = "Leave the C allocator's defaults (freed large blocks unmapped) instead of NativeAllocator.KeepFreedMemoryInProcess, as the modelsurgery tool runs." };
        var command = new Command("generate", "Decoding tokens/s against the memory-bandwidth limit and llama2.c's run.c.")
        { seqLen, repeats, dtypes, threads, run, noRunC, defaultAllocator };
        shape.AddTo(command);
        command.SetAction(async (parsed, ct) =>
        {
            int threadCount = parsed.GetValue(threads) ?? Environment.ProcessorCount;
            torch.set_num_threads(threadCount);
            bool keptFreedMemory = !parsed.GetValue(defaultAllocator) && NativeAllocator.KeepFreedMemoryInProcess();
            int positions = parsed.GetValue(seqLen), runs = parsed.GetValue(repeats);
            LlamaConfig config = shape.Config(parsed, c => c with
            {
                MaxPositionEmbeddings = positions,
                TieWordEmbeddings = true, // as stories110M: the head is the embedding
                RmsNormEps = 1e-5, // what run.c hard-codes
                BosTokenId = 1,
                EosTokenIds = [],
            });
            string? runBinary = parsed.GetValue(run) is { } r ? Path.GetFullPath(r) : null;
            if (runBinary is not null && !File.Exists(runBinary))
            {
                throw new FileNotFoundException($"--run: {runBinary} does not exist.", runBinary);
            }

            long parameters = LlamaTensorLayout.CountParameters(config).Total;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"machine     {Environment.ProcessorCount} logical cores, threads {threadCount}, load average {LoadAverage()}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"model       D {config.HiddenSize}, L {config.NumHiddenLayers}, heads {config.NumAttentionHeads}, FFN {config.IntermediateSize}, vocab {config.VocabSize}, tied head: {parameters / 1e6:F1} M parameters, random weights"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"decoding    {positions - 1} tokens after BOS, greedy; median of {runs} runs per contender, contenders interleaved"));
            Console.WriteLine($"allocator   {(keptFreedMemory ? "freed memory kept in the process" : "C library defaults")}");

            string work = Directory.CreateTempSubdirectory("generate-bench").FullName;
            try
            {
                string checkpoint = Path.Combine(work, "model");
                using (var model = new LlamaForCausalLM(config))
                {
                    model.InitializeWeights(seed: 110);
                    await ModelCheckpoint.SaveAsync(model, checkpoint, cancellationToken: ct);
                }

                runBinary ??= parsed.GetValue(noRunC) ? null : BuildRunC(work);
                string? modelBin = null, tokenizerBin = null;
                if (runBinary is not null)
                {
                    modelBin = Path.Combine(work, "model.bin");
                    Llama2CImporter.Export(checkpoint, modelBin);
                    tokenizerBin = Path.Combine(work, "tokenizer.bin");
                    WriteLlama2CTokenizer(tokenizerBin, config.VocabSize);
                }

                // Bandwidth is sampled between the contenders' runs too, so it sees the same load they do.
                var bandwidths = new List<double>();
                var contenders = new List<(string Name, long WeightBytes, Func<(double TokensPerSecond, double FaultsPerToken)> Measure)>();
                var models = new List<LlamaForCausalLM>();
                foreach (string name in parsed.GetValue(dtypes)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                {
                    ScalarType dtype = name switch
                    {
                        "fp32" => ScalarType.Float32,
                        "bf16" => ScalarType.BFloat16,
                        _ => throw new ArgumentException($"--dtypes: '{name}' is not fp32 or bf16."),
                    };
                    LlamaForCausalLM model = ModelCheckpoint.Load(checkpoint, new ModelLoadOptions { Device = "cpu", DType = dtype });
                    models.Add(model);
                    long bytes = parameters * (dtype == ScalarType.Float32 ? 4 : 2);
                    contenders.Add(($"TextGenerator {name}", bytes, () => DecodeTokensPerSecond(model, positions)));
                }

                if (runBinary is not null)
                {
                    contenders.Add(("llama2.c run.c fp32", parameters * 4L, () => (RunC(runBinary, modelBin!, tokenizerBin!, positions, threadCount), double.NaN)));
                }

                var samples = contenders.Select(_ => new List<double>()).ToList();
                var faults = contenders.Select(_ => new List<double>()).ToList();
                foreach (var (_, _, measure) in contenders)
                {
                    measure(); // warm-up: page in the weights, let the allocator settle
                }

                for (int i = 0; i < runs; i++)
                {
                    bandwidths.Add(CopyBandwidth());
                    for (int c = 0; c < contenders.Count; c++)
                    {
                        (double rate, double faultsPerToken) = contenders[c].Measure();
                        samples[c].Add(rate);
                        faults[c].Add(faultsPerToken);
                    }
                }

                double bandwidth = Median(bandwidths);

                foreach (LlamaForCausalLM model in models)
                {
                    model.Dispose();
                }

                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"bandwidth   {bandwidth / 1e9:F1} GB/s copied (1 GiB tensor copy: median over the repeats of the best of 3; min {bandwidths.Min() / 1e9:F1}, max {bandwidths.Max() / 1e9:F1})"));
                Console.WriteLine();
                Console.WriteLine($"{"contender",-22}{"tokens/s",10}{"min",9}{"max",9}{"limit",9}{"of limit",10}{"faults/token",14}");
                double? runC = runBinary is not null ? Median(samples[^1]) : null;
                for (int c = 0; c < contenders.Count; c++)
                {
                    double median = Median(samples[c]);
                    double limit = bandwidth / contenders[c].WeightBytes;
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{contenders[c].Name,-22}{median,10:F2}{samples[c].Min(),9:F2}{samples[c].Max(),9:F2}{limit,9:F1}{median / limit,10:P0}{Median(faults[c]),14:F1}"));
                }

                if (runC is double reference)
                {
                    Console.WriteLine();
                    for (int c = 0; c < contenders.Count - 1; c++)
                    {
                        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{contenders[c].Name} / run.c = {Median(samples[c]) / reference:F2}"));
                    }
                }

                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"load average after: {LoadAverage()}"));
            }
            finally
            {
                Directory.Delete(work, recursive: true);
            }
        });
        return command;
    }

    // Decoding rate of one greedy run from BOS to the full context, as GenerationStatistics reports it, and the minor page
    // faults per decoded token (the prompt pass included): fresh pages the allocator hands out on the hot path.
    private static (double TokensPerSecond, double FaultsPerToken) DecodeTokensPerSecond(LlamaForCausalLM model, int positions)
    {
        var statistics = new GenerationStatistics();
        long faultsBefore = Measure.MinorPageFaults();
        var options = new GenerationOptions { MaxNewTokens = positions - 1, MaxContext = positions };
        var enumerator = TextGenerator.GenerateAsync(model, [1], options, statistics).GetAsyncEnumerator();
        try
        {
            while (enumerator.MoveNextAsync().AsTask().GetAwaiter().GetResult())
            {
            }
        }
        finally
        {
            enumerator.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }

        long faultsAfter = Measure.MinorPageFaults();
        double faultsPerToken = faultsBefore < 0 || faultsAfter < 0 ? double.NaN : (faultsAfter - faultsBefore) / (double)(statistics.PromptTokens + statistics.DecodeTokens);
        return (statistics.DecodeTokensPerSecond, faultsPerToken);
    }

    // Builds the vendored run.c as llama2.c's README recommends; a machine without a C compiler skips run.c and says so.
    private static string? BuildRunC(string work)
    {
        string source = Path.Combine(AppContext.BaseDirectory, "llama2c", "run.c");
        string binary = Path.Combine(work, "run");
        string compiler = Environment.GetEnvironmentVariable("CC") is { Length: > 0 } cc ? cc : "cc";
        var info = new ProcessStartInfo(compiler) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (string arg in new[] { "-Ofast", "-fopenmp", "-march=native", source, "-lm", "-o", binary })
        {
            info.ArgumentList.Add(arg);
        }

        try
        {
            using Process process = Process.Start(info)!;
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            string stderr = process.StandardError.ReadToEnd();
            process.WaitForExit();
            _ = stdout.Result;
            if (process.ExitCode != 0)
            {
                Console.WriteLine($"run.c       skipped: {compiler} exited with {process.ExitCode}: {stderr.Trim()}");
                return null;
            }
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            Console.WriteLine($"run.c       skipped: no C compiler '{compiler}' ({e.Message}); set CC or pass --run <binary>");
            return null;
        }

        Console.WriteLine($"run.c       llama2c/run.c built with {compiler} -Ofast -fopenmp -march=native");
        return binary;
    }

    // run.c prints "achieved tok/s: X" on stderr, timed from after its first step, as our decode rate is.
    private static double RunC(string binary, string modelBin, string tokenizerBin, int positions, int threads)
    {
        var info = new ProcessStartInfo(binary) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (string arg in new[] { modelBin, "-t", "0", "-n", positions.ToString(CultureInfo.InvariantCulture), "-z", tokenizerBin })
        {
            info.ArgumentList.Add(arg);
        }

        info.Environment["OMP_NUM_THREADS"] = threads.ToString(CultureInfo.InvariantCulture);
        using Process process = Process.Start(info)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        string stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        _ = stdout.Result;
        const string marker = "achieved tok/s:";
        int at = stderr.IndexOf(marker, StringComparison.Ordinal);
        if (process.ExitCode != 0 || at < 0)
        {
            // run.c also stops early when it decodes id 1 (BOS), which a tiny random model can do on its first steps.
            throw new InvalidOperationException($"{binary} exited with {process.ExitCode} without a tok/s figure (run.c stops when it decodes id 1; a larger --vocab makes that unlikely): {stderr}");
        }

        return double.Parse(stderr[(at + marker.Length)..].Trim().Split('\n')[0], CultureInfo.InvariantCulture);
    }

    // run.c needs a tokenizer.bin with one piece per id: max length, then (score, length, bytes) per piece.
    private static void WriteLlama2CTokenizer(string path, int vocabSize)
    {
        using var writer = new BinaryWriter(File.Create(path));
        writer.Write(16);
        for (int i = 0; i < vocabSize; i++)
        {
            byte[] piece = Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $" t{i}"));
            writer.Write(0f);
            writer.Write(piece.Length);
            writer.Write(piece);
        }
    }

    private static double CopyBandwidth()
    {
        using var scope = NewDisposeScope();
        Tensor source = torch.ones(1L << 28, ScalarType.Float32); // 1 GiB
        Tensor target = torch.empty_like(source);
        double best = 0;
        for (int i = 0; i < 3; i++)
        {
            long start = Stopwatch.GetTimestamp();
            target.copy_(source);
            double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            best = Math.Max(best, source.NumberOfElements * 4.0 / seconds);
        }

        return best;
    }

    private static double Median(List<double> values)
    {
        double[] sorted = [.. values.Order()];
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    internal static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";
}
