using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Runtime;
using TorchSharp;

namespace ModelSurgery.Benchmarks;

/// <summary>
/// <c>io</c>: reading every tensor of a checkpoint against a plain sequential read of the same files, and peak RSS while
/// streaming tensor by tensor (measured in a fresh child process so earlier work does not count). Both run with the
/// allocator setting the <c>modelsurgery</c> tool makes (freed memory kept in the process), or with
/// <c>--default-allocator</c> with the C library's defaults.
/// </summary>
internal static class IoBenchmark
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { DefaultValueFactory = _ => "tinyllama-1.1b", Description = "Model preset to synthesise." };
        var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "bf16", Description = "Stored dtype: f32, bf16, f16." };
        var work = new Option<string>("--work") { DefaultValueFactory = _ => Path.Combine("artifacts", "bench"), Description = "Folder for synthetic checkpoints (reused across runs)." };
        var repeat = new Option<int>("--repeat") { DefaultValueFactory = _ => 3, Description = "Measurements of each reader; the median is reported." };
        var defaultAllocator = new Option<bool>("--default-allocator") { Description = "Leave the C allocator's defaults (freed large blocks unmapped) instead of NativeAllocator.KeepFreedMemoryInProcess, as the modelsurgery tool runs." };
        var compareWith = new Option<string?>("--compare-with") { Description = "Another build of this benchmark program (its executable or .dll, e.g. of an earlier commit) whose model load joins every round, alternating with this one's." };
        var command = new Command("io", "Checkpoint read throughput, model load time and streaming peak RSS.") { preset, dtype, work, repeat, defaultAllocator, compareWith };
        command.SetAction(async (parsed, ct) =>
        {
            bool keptFreedMemory = !parsed.GetValue(defaultAllocator) && NativeAllocator.KeepFreedMemoryInProcess();
            string dir = await Checkpoints.EnsureSyntheticAsync(parsed.GetValue(preset)!, parsed.GetValue(dtype)!, parsed.GetValue(work)!, ct);
            using var reader = CheckpointReader.Open(dir);
            string[] files = [.. reader.Shards.Select(s => s.Path)];
            long fileBytes = reader.Shards.Sum(s => s.ByteSize);
            var sequential = new List<double>();
            var tensors = new List<double>();
            var faults = new List<long>();
            var loads = new List<double>();
            var otherLoads = new List<double>();
            string? other = parsed.GetValue(compareWith);
            bool cold = true;
            for (int r = 0; r < parsed.GetValue(repeat); r++)
            {
                cold &= Measure.DropPageCache();
                var watch = Stopwatch.StartNew();
                Measure.SequentialRead(files);
                sequential.Add(watch.Elapsed.TotalSeconds);

                cold &= Measure.DropPageCache();
                long faultsBefore = NativeAllocator.MinorPageFaults() ?? 0;
                watch.Restart();
                foreach (string name in reader.TensorNames)
                {
                    using torch.Tensor t = reader.ReadTensor(name);
                }

                tensors.Add(watch.Elapsed.TotalSeconds);
                faults.Add((NativeAllocator.MinorPageFaults() ?? 0) - faultsBefore);

                // A model is loaded once per process, into fresh memory: each load runs in a child of its own.
                for (int turn = 0; turn < (other is null ? 1 : 2); turn++)
                {
                    bool ours = (turn == 0) == (r % 2 == 0 || other is null);
                    cold &= Measure.DropPageCache();
                    (ours ? loads : otherLoads).Add(RunLoadChild(ours ? null : other, dir, keptFreedMemory));
                }
            }

            double seq = Median(sequential), ten = Median(tensors);
            Console.WriteLine($"checkpoint       {dir} ({Measure.Mb(fileBytes)} in {files.Length} file(s), {reader.TensorNames.Count} tensors)");
            Console.WriteLine($"page cache       {(cold ? "dropped before each read (cold reads)" : "could not be dropped (warm reads)")}");
            Console.WriteLine($"allocator        {(keptFreedMemory ? "freed memory kept in the process (NativeAllocator.KeepFreedMemoryInProcess, as the modelsurgery tool runs)" : "the C library's defaults (large blocks unmapped when freed)")}");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"sequential read  {seq:F2} s  ({fileBytes / seq / 1e6:F0} MB/s)   median of {sequential.Count}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"read all tensors {ten:F2} s  ({fileBytes / ten / 1e6:F0} MB/s)   median of {tensors.Count}; {Median(faults):N0} minor page faults (median)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ratio            {ten / seq:F2}  (goal <= 1.2)"));
            double load = Median(loads);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"load the model   {load:F2} s  ({fileBytes / load / 1e6:F0} MB/s)   median of {loads.Count}, each in a fresh process (ModelCheckpoint.Load in the stored dtype); ratio {load / seq:F2}"));
            if (other is not null)
            {
                double before = Median(otherLoads);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  other program {before:F2} s  median of {otherLoads.Count} ({string.Join(", ", otherLoads.Select(v => v.ToString("F2", CultureInfo.InvariantCulture)))} against {string.Join(", ", loads.Select(v => v.ToString("F2", CultureInfo.InvariantCulture)))}); ratio {before / seq:F2}"));
            }

            long largest = reader.TensorNames.Max(n => reader.GetInfo(n).ByteLength);
            (long baseline, long peak) = RunStreamingChild(dir, keptFreedMemory);
            Console.WriteLine($"largest tensor   {Measure.Mb(largest)}");
            Console.WriteLine($"streaming RSS    peak {Measure.Mb(peak)}, of which process baseline before reading {Measure.Mb(baseline)}");
            Console.WriteLine($"peak - baseline  {Measure.Mb(peak - baseline)}  (goal: largest tensor + 256 MB = {Measure.Mb(largest + (256L << 20))})");
            return 0;
        });
        return command;
    }

    /// <summary>Hidden child mode: stream every tensor and print baseline and peak RSS.</summary>
    public static Command CreateStreamingChild() => ChildCommand(
        "io-stream-child",
        "Internal: streams every tensor and prints RSS figures.",
        folder =>
        {
            using var reader = CheckpointReader.Open(folder);
            long baseline = Measure.RssBytes();
            Measure.ResetPeakRss();
            foreach (string name in reader.TensorNames)
            {
                using torch.Tensor t = reader.ReadTensor(name);
            }

            return string.Create(CultureInfo.InvariantCulture, $"{baseline} {Measure.PeakRssBytes()}");
        });

    /// <summary>Hidden child mode: load the checkpoint as a model in its stored dtype and print the seconds it took.</summary>
    public static Command CreateLoadChild() => ChildCommand(
        "io-load-child",
        "Internal: loads a model and prints the seconds it took.",
        folder =>
        {
            torch.ScalarType stored;
            using (var reader = CheckpointReader.Open(folder))
            {
                stored = reader.GetInfo(reader.TensorNames[0]).DType.ToScalarType();
            }

            var watch = Stopwatch.StartNew();
            using (ModelCheckpoint.Load(folder, new ModelLoadOptions { DType = stored, Device = "cpu" }))
            {
                return string.Create(CultureInfo.InvariantCulture, $"{watch.Elapsed.TotalSeconds}");
            }
        });

    /// <summary>
    /// A hidden child command over a checkpoint folder: it applies the allocator setting it is given and loads LibTorch
    /// before <paramref name="measure"/> runs, so neither counts in what is measured, then prints what it returns.
    /// </summary>
    private static Command ChildCommand(string name, string description, Func<string, string> measure)
    {
        var dir = new Argument<string>("dir");
        var keepFreedMemory = new Argument<bool>("keep-freed-memory");
        var command = new Command(name, description) { dir, keepFreedMemory };
        command.Hidden = true;
        command.SetAction(parsed =>
        {
            if (parsed.GetValue(keepFreedMemory))
            {
                NativeAllocator.KeepFreedMemoryInProcess();
            }

            using (torch.ones(1))
            {
                // Loads LibTorch.
            }

            Console.WriteLine(measure(parsed.GetValue(dir)!));
            return 0;
        });
        return command;
    }

    private static double RunLoadChild(string? program, string dir, bool keepFreedMemory) =>
        double.Parse(ChildProcess.Run(program, ["io-load-child", dir, keepFreedMemory ? "true" : "false"]).Trim(), CultureInfo.InvariantCulture);

    private static (long Baseline, long Peak) RunStreamingChild(string dir, bool keepFreedMemory)
    {
        string output = ChildProcess.RunSelf(["io-stream-child", dir, keepFreedMemory ? "true" : "false"]);
        long[] values = [.. output.Trim().Split(' ').Select(v => long.Parse(v, CultureInfo.InvariantCulture))];
        return (values[0], values[1]);
    }

    private static T Median<T>(List<T> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }
}
