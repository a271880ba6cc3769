using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.IO;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Surgery.Building;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;
using TorchSharp;

namespace ModelSurgery.Benchmarks;

/// <summary>
/// <c>surgery</c>: scoring and building against a synthetic teacher larger than half of this machine's memory (the
/// <c>llama-2-7b</c> preset in bf16, 13.5 GB). Each measured step runs in a fresh child process, so its peak RSS is its own.
/// </summary>
internal static class SurgeryBenchmark
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { DefaultValueFactory = _ => "llama-2-7b", Description = "Teacher preset to synthesise." };
        var work = new Option<string>("--work") { DefaultValueFactory = _ => Path.Combine("artifacts", "bench"), Description = "Folder for synthetic checkpoints (reused across runs)." };
        var sequences = new Option<int>("--sequences") { DefaultValueFactory = _ => 4, Description = "Calibration windows." };
        var length = new Option<int>("--length") { DefaultValueFactory = _ => 128, Description = "Tokens per calibration window." };
        var budget = new Option<double>("--student-budget") { DefaultValueFactory = _ => 1.1e9, Description = "Student parameter budget." };
        var skipScore = new Option<bool>("--skip-score") { Description = "Measure the build only." };
        var keepHidden = new Option<bool>("--keep-hidden")
        {
            Description = "Keep every hidden channel and prune only layers, heads and neurons, so whole rows drop (half the heads, half the FFN, as many layers as the budget allows).",
        };
        var pairs = new Option<int>("--pairs") { DefaultValueFactory = _ => 5, Description = "Pairs of (sequential read, build) to measure, in alternating order, each after a durable write of the student's bytes; the ratios are reported per pair and as their medians." };
        var warmCache = new Option<bool>("--warm") { Description = "Keep the teacher in the page cache for every read instead of dropping it: the ratio then shows the build's CPU cost, not the disk's." };
        var readWorkers = new Option<int?>("--read-workers") { Description = "Read workers of the build (StudentBuildOptions.ReadWorkers); default: what the build picks for the teacher's storage." };
        var compareReadWorkers = new Option<int?>("--compare-read-workers") { Description = "A second build with this many read workers joins every pair, alternating with the first, as --compare-with does." };
        var compareWith = new Option<string?>("--compare-with") { Description = "Another build of this benchmark program (its executable or .dll, e.g. of an earlier commit) whose build joins every pair, alternating with this one." };
        var defaultAllocator = new Option<bool>("--default-allocator") { Description = "This program's builds leave the C allocator's defaults (freed large blocks unmapped) instead of NativeAllocator.KeepFreedMemoryInProcess, as the modelsurgery tool runs." };
        var command = new Command("surgery", "Peak RSS of layer-by-layer scoring, and bytes read / peak RSS / wall time of a student build, on a teacher larger than half the RAM.")
        {
            preset, work, sequences, length, budget, skipScore, keepHidden, pairs, warmCache, readWorkers, compareReadWorkers, compareWith, defaultAllocator,
        };
        command.SetAction(async (parsed, ct) =>
        {
            string teacher = await Checkpoints.EnsureSyntheticAsync(parsed.GetValue(preset)!, "bf16", parsed.GetValue(work)!, ct);
            using (var reader = CheckpointReader.Open(teacher))
            {
                Console.WriteLine($"teacher          {teacher}: {Measure.Mb(reader.Shards.Sum(s => s.ByteSize))} on disk, machine memory {Measure.Mb(MemoryGuard.AvailableBytes())}");
            }

            // Scoring with a forward-only metric: one decoder layer in memory at a time.
            if (!parsed.GetValue(skipScore))
            {
                Measure.DropPageCache();
                string[] score = ChildProcess.RunSelf(["surgery-score-child", teacher, parsed.GetValue(sequences).ToString(CultureInfo.InvariantCulture), parsed.GetValue(length).ToString(CultureInfo.InvariantCulture)]).Trim().Split(' ');
                Console.WriteLine($"score            metric activation on {parsed.GetValue(sequences)} x {parsed.GetValue(length)} tokens: {double.Parse(score[0], CultureInfo.InvariantCulture):F1} s, peak RSS {Measure.Mb(long.Parse(score[1], CultureInfo.InvariantCulture))} (goal <= 4,000 MB)");
            }

            // Building a student of about the budget with random scores: the deepest-and-thinnest shape the planner
            // proposes (scattered hidden channels), or with --keep-hidden one that drops whole rows only.
            LlamaConfig config = LlamaConfig.Load(Path.Combine(teacher, "config.json"));
            StudentShape shape = parsed.GetValue(keepHidden)
                ? KeepHiddenShape(config, (long)parsed.GetValue(budget))
                : BudgetPlanner.Candidates(config, (long)parsed.GetValue(budget), new BudgetConstraints { HiddenMultiple = 128, IntermediateMultiple = 64 })[0].Shape;
            SurgeryPlan plan = PlanBuilder.Random(config, shape, seed: 1);
            (long pageBytes, long neededBytes) = PageBound(teacher, plan);
            string planPath = Path.Combine(parsed.GetValue(work)!, "bench-plan.json");
            plan.Save(planPath);
            string student = Path.Combine(parsed.GetValue(work)!, "bench-student");
            Console.WriteLine($"read workers     build: {parsed.GetValue(readWorkers)?.ToString(CultureInfo.InvariantCulture) ?? $"the build's choice for this storage (rotational: {StorageDevice.IsRotational(teacher)?.ToString() ?? "unknown"})"}");
            long studentBytes = plan.ParameterCount.Total * 2;
            Console.WriteLine($"student plan     {plan.Summary().Split('\n')[^1].Trim()}");

            // One build first, not counted: it tells how many bytes the build makes the kernel read from storage (the
            // length of the sequential read it is compared with), and it leaves every contender's teacher reads equally
            // warm in whatever cache lies below the page cache (a virtual disk's host), which otherwise favours whichever
            // read ran last.
            bool warm = parsed.GetValue(warmCache);
            string? before = parsed.GetValue(compareWith);
            int? workers = parsed.GetValue(readWorkers);
            int? otherWorkers = parsed.GetValue(compareReadWorkers) ?? workers;
            bool compare = before is not null || parsed.GetValue(compareReadWorkers) is not null;
            string otherName = before is not null ? "before" : $"{otherWorkers} workers";
            string[] allocator = parsed.GetValue(defaultAllocator) ? ["--default-allocator"] : [];
            BuildRun first = RunBuild(null, teacher, planPath, student, warm, workers, allocator);
            long sequentialLength = warm || first.StorageBytes <= 0 ? first.FetchedBytes : first.StorageBytes;
            Console.WriteLine($"cache            {(warm ? "teacher warm in the page cache before every run (the CPU cost alone)" : "page cache dropped before every run")}; {parsed.GetValue(pairs)} pairs after one uncounted build; sequential reads {Measure.Mb(sequentialLength)}");

            // Pairs of (sequential read, build), in alternating order; with --compare-with the other program's build joins
            // each pair, and the two builds swap places from pair to pair. Each pair starts with a durable write of the
            // student's bytes, the build's other physical limit (it reads nothing, so it leaves the teacher's caches alone).
            string writeProbe = Path.Combine(parsed.GetValue(work)!, "bench-write");
            CheckpointTensor[] studentTensors = DeclaredTensors(student);
            long writtenBytes = studentTensors.Sum(t => t.ByteLength);
            byte[] writeChunk = new byte[new StudentBuildOptions().ChunkBytes];
            new Random(1).NextBytes(writeChunk);
            var sequential = new List<double>();
            var writes = new List<double>();
            var builds = new List<BuildRun>();
            var others = new List<BuildRun>();
            for (int pair = 0; pair < parsed.GetValue(pairs); pair++)
            {
                double? sequentialSeconds = null;
                BuildRun? build = null, other = null;
                double writeSeconds = await TimeDurableWriteAsync(studentTensors, writeChunk, writeProbe, ct);
                writes.Add(writeSeconds);
                bool sequentialFirst = pair % 2 == 0;
                if (sequentialFirst)
                {
                    sequentialSeconds = TimeSequentialRead(teacher, sequentialLength, warm);
                }

                for (int turn = 0; turn < (compare ? 2 : 1); turn++)
                {
                    if ((turn == 0) == (pair % 2 == 0 || !compare))
                    {
                        build = RunBuild(null, teacher, planPath, student, warm, workers, allocator);
                    }
                    else
                    {
                        other = RunBuild(before, teacher, planPath, student, warm, otherWorkers, []);
                    }
                }

                sequentialSeconds ??= TimeSequentialRead(teacher, sequentialLength, warm);
                sequential.Add(sequentialSeconds.Value);
                builds.Add(build!);
                string line = $"pair {pair + 1}           write {writeSeconds:F2} s ({Measure.Mb(writtenBytes)}); sequential {sequentialSeconds:F2} s; build {build!.Seconds:F2} s ({build.CpuSeconds:F1} s CPU), ratio {build.Seconds / sequentialSeconds:F2}";
                if (other is not null)
                {
                    others.Add(other);
                    line += $"; {otherName} {other.Seconds:F2} s ({other.CpuSeconds:F1} s CPU), ratio {other.Seconds / sequentialSeconds:F2}";
                }

                Console.WriteLine($"{line}; load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
            }

            double[] ratios = [.. builds.Select((b, k) => b.Seconds / sequential[k])];
            BuildRun median = builds.OrderBy(b => b.Seconds).ElementAt(builds.Count / 2);
            Console.WriteLine($"build            {Median(builds.Select(b => b.Seconds)):F1} s median ({Median(builds.Select(b => b.CpuSeconds)):F1} s CPU in the whole child process, on a machine with load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}); student {Measure.Mb(studentBytes)}");
            Console.WriteLine($"  bytes copied   {Measure.Mb(median.CopiedBytes)} = {(double)median.CopiedBytes / studentBytes:F2} x student (kept elements only; goal <= 1.3)");
            Console.WriteLine($"  page bound     {Measure.Mb(pageBytes)} = {(double)pageBytes / neededBytes:F2} x needed (4 KiB pages holding at least one kept element: the least row-major storage allows)");
            Console.WriteLine($"  fetched        {Measure.Mb(median.FetchedBytes)} = {(double)median.FetchedBytes / median.CopiedBytes:F2} x needed = {(double)median.FetchedBytes / pageBytes:F2} x page bound (kept ranges as whole pages, gaps < {SafetensorsFile.CoalesceGapBytes / 1024} KiB closed shortest first within {SafetensorsFile.CoalesceSlack:P0} of the pages read)");
            Console.WriteLine($"  storage read   {(first.StorageBytes < 0 ? "unavailable" : Measure.Mb(first.StorageBytes) + $" = {(double)first.StorageBytes / studentBytes:F2} x student (uncounted first build; whole pages: scattered kept channels touch every page of a kept row)")}");
            Console.WriteLine($"  peak RSS       {Measure.Mb(builds.Max(b => b.PeakRssBytes))} (most of the pairs; goal: student + 1 GB = {Measure.Mb(studentBytes + (1L << 30))})");
            Console.WriteLine($"  sequential     {Measure.Mb(sequentialLength)} in {Median(sequential):F2} s median ({sequential.Min():F2}-{sequential.Max():F2}); build / sequential = {Median(ratios):F2} median of {ratios.Length} pairs ({ratios.Min():F2}-{ratios.Max():F2}) (goal <= 1.3)");
            double[] toSlower = [.. builds.Select((b, k) => b.Seconds / Math.Max(sequential[k], writes[k]))];
            double[] toSum = [.. builds.Select((b, k) => b.Seconds / (sequential[k] + writes[k]))];
            Console.WriteLine($"  durable write  {Median(writes):F2} s median ({writes.Min():F2}-{writes.Max():F2}) for the student's tensors and shards from memory, as the build writes them (direct I/O where allowed, then fsync and rename)");
            Console.WriteLine($"                 build / max(sequential, write) = {Median(toSlower):F2} ({toSlower.Min():F2}-{toSlower.Max():F2}), a build that overlaps them fully; build / (sequential + write) = {Median(toSum):F2} ({toSum.Min():F2}-{toSum.Max():F2}), one after the other");
            if (others.Count > 0)
            {
                double[] otherRatios = [.. others.Select((b, k) => b.Seconds / sequential[k])];
                double[] speedups = [.. others.Select((b, k) => b.Seconds / builds[k].Seconds)];
                Console.WriteLine($"  {otherName,-14} {Median(others.Select(b => b.Seconds)):F2} s median ({Median(others.Select(b => b.CpuSeconds)):F1} s CPU); {otherName} / sequential = {Median(otherRatios):F2} ({otherRatios.Min():F2}-{otherRatios.Max():F2}); {otherName} / build = {Median(speedups):F2} ({speedups.Min():F2}-{speedups.Max():F2})");
            }

            return 0;
        });
        return command;
    }

    /// <summary>Hidden child: score with a forward-only metric; prints seconds and peak RSS.</summary>
    public static Command CreateScoreChild()
    {
        var teacher = new Argument<string>("teacher");
        var sequences = new Argument<int>("sequences");
        var length = new Argument<int>("length");
        var command = new Command("surgery-score-child", "Internal.") { teacher, sequences, length };
        command.Hidden = true;
        command.SetAction(async (parsed, ct) =>
        {
            string dir = parsed.GetValue(teacher)!;
            LlamaConfig config = LlamaConfig.Load(Path.Combine(dir, "config.json"));
            var random = new Random(0);
            int[] tokens = [.. Enumerable.Range(0, parsed.GetValue(sequences) * (parsed.GetValue(length) + 1) * 2).Select(_ => random.Next(config.VocabSize))];
            var data = CalibrationData.FromTokenStream(tokens, parsed.GetValue(sequences), parsed.GetValue(length), seed: 0);
            var watch = Stopwatch.StartNew();
            await ImportanceScorer.ScoreAsync(dir, data, new ScoringOptions { Metrics = [ScoringMetrics.Activation], BatchSize = parsed.GetValue(sequences) }, cancellationToken: ct);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{watch.Elapsed.TotalSeconds} {Measure.PeakRssBytes()}"));
            return 0;
        });
        return command;
    }

    /// <summary>Hidden child: build a student; prints seconds, bytes copied, storage bytes read and peak RSS.</summary>
    public static Command CreateBuildChild()
    {
        var teacher = new Argument<string>("teacher");
        var plan = new Argument<string>("plan");
        var output = new Argument<string>("out");
        var workers = new Argument<string>("read-workers");
        var defaultAllocator = new Option<bool>("--default-allocator");
        var command = new Command("surgery-build-child", "Internal.") { teacher, plan, output, workers, defaultAllocator };
        command.Hidden = true;
        command.SetAction(async (parsed, ct) =>
        {
            if (!parsed.GetValue(defaultAllocator))
            {
                // As the modelsurgery tool runs every command.
                NativeAllocator.KeepFreedMemoryInProcess();
            }

            using (torch.ones(1))
            {
                // Loads LibTorch before the clock starts.
            }

            long storageBefore = Measure.StorageReadBytes();
            var options = new StudentBuildOptions { ReadWorkers = parsed.GetValue(workers) is "auto" ? null : int.Parse(parsed.GetValue(workers)!, CultureInfo.InvariantCulture) };
            StudentBuildResult result = await StudentBuilder.BuildAsync(parsed.GetValue(teacher)!, SurgeryPlan.Load(parsed.GetValue(plan)!), parsed.GetValue(output)!, options, cancellationToken: ct);
            long storage = storageBefore < 0 ? -1 : Measure.StorageReadBytes() - storageBefore;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{result.Elapsed.TotalSeconds} {result.BytesRead} {storage} {Measure.PeakRssBytes()} {result.BytesFetched} {Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds}"));
            return 0;
        });
        return command;
    }

    /// <summary>What one build child reported.</summary>
    private sealed record BuildRun(double Seconds, long CopiedBytes, long StorageBytes, long PeakRssBytes, long FetchedBytes, double CpuSeconds);

    /// <summary>
    /// Builds the student in a fresh child process of <paramref name="program"/> (null: this program), after deleting the
    /// previous student (freeing it would otherwise fall inside the measured time) and dropping the page cache, or with
    /// <paramref name="warm"/> after reading the whole teacher into it.
    /// </summary>
    private static BuildRun RunBuild(string? program, string teacher, string planPath, string student, bool warm, int? readWorkers, string[] childOptions)
    {
        if (Directory.Exists(student))
        {
            Directory.Delete(student, recursive: true);
        }

        PrepareCache(teacher, warm);
        string[] build = ChildProcess.Run(program, ["surgery-build-child", teacher, planPath, student, readWorkers?.ToString(CultureInfo.InvariantCulture) ?? "auto", .. childOptions]).Trim().Split(' ');
        return new BuildRun(
            double.Parse(build[0], CultureInfo.InvariantCulture),
            long.Parse(build[1], CultureInfo.InvariantCulture),
            long.Parse(build[2], CultureInfo.InvariantCulture),
            long.Parse(build[3], CultureInfo.InvariantCulture),
            long.Parse(build[4], CultureInfo.InvariantCulture),
            double.Parse(build[5], CultureInfo.InvariantCulture));
    }

    /// <summary>Seconds of a plain sequential read of the first <paramref name="bytes"/> bytes of the teacher's shards, the cache prepared as for a build.</summary>
    private static double TimeSequentialRead(string teacher, long bytes, bool warm)
    {
        PrepareCache(teacher, warm);
        var watch = Stopwatch.StartNew();
        SequentialPrefix(teacher, bytes);
        return watch.Elapsed.TotalSeconds;
    }

    /// <summary>The tensors of a built checkpoint as a writer declares them: names, dtypes and shapes, in file order.</summary>
    private static CheckpointTensor[] DeclaredTensors(string checkpoint)
    {
        using var reader = CheckpointReader.Open(checkpoint);
        return [.. reader.TensorNames.Select(name => reader.GetInfo(name)).Select(info => new CheckpointTensor(info.Name, info.DType, info.Shape))];
    }

    /// <summary>
    /// Seconds to write <paramref name="declared"/> (the built student's tensors) into <paramref name="output"/> with the
    /// build's writer settings, a <paramref name="chunk"/> already in memory at a time, until the files are on stable
    /// storage: what a build must spend besides reading, with nothing read. The chunk holds random bytes, so no layer below
    /// can skip zero blocks.
    /// </summary>
    private static async Task<double> TimeDurableWriteAsync(CheckpointTensor[] declared, byte[] chunk, string output, CancellationToken cancellationToken)
    {
        if (Directory.Exists(output))
        {
            Directory.Delete(output, recursive: true);
        }

        var defaults = new StudentBuildOptions();
        Measure.Sync();
        var watch = Stopwatch.StartNew();
        using (var writer = CheckpointWriter.Create(output, declared, new CheckpointWriterOptions { MaxShardBytes = defaults.MaxShardBytes, DirectWrite = defaults.DirectWrite }))
        {
            foreach (CheckpointTensor tensor in declared)
            {
                long done = 0;
                do
                {
                    int length = (int)Math.Min(chunk.Length, tensor.ByteLength - done);
                    await writer.WriteBytesAsync(tensor.Name, chunk.AsMemory(0, length), cancellationToken);
                    done += length;
                }
                while (done < tensor.ByteLength);
            }

            await writer.CompleteAsync(cancellationToken);
        }

        double seconds = watch.Elapsed.TotalSeconds;
        Directory.Delete(output, recursive: true);
        return seconds;
    }

    /// <summary>Drops the page cache, or with <paramref name="warm"/> reads the whole teacher into it.</summary>
    private static void PrepareCache(string teacher, bool warm)
    {
        if (!warm)
        {
            Measure.DropPageCache();
            return;
        }

        // Dirty pages of the previous student are written before the clock starts, as a cache drop would.
        Measure.Sync();

        SequentialPrefix(teacher, long.MaxValue);
    }

    private static double Median(IEnumerable<double> values)
    {
        double[] sorted = [.. values.Order()];
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>
    /// A student that keeps the teacher's hidden size and KV heads, half its attention heads (whole row blocks of q and
    /// column blocks of o_proj) and half its FFN neurons (rows of gate/up, columns of down), with as many layers as fit
    /// the budget: every kept byte range is whole rows, or long runs of columns.
    /// </summary>
    private static StudentShape KeepHiddenShape(LlamaConfig teacher, long budget)
    {
        int heads = Math.Max(teacher.NumKeyValueHeads, teacher.NumAttentionHeads / 2 / teacher.NumKeyValueHeads * teacher.NumKeyValueHeads);
        int ffn = Math.Max(64, teacher.IntermediateSize / 2 / 64 * 64);
        return Enumerable.Range(1, teacher.NumHiddenLayers)
            .Select(layers => new StudentShape(layers, teacher.HiddenSize, ffn, heads, teacher.NumKeyValueHeads, teacher.VocabSize))
            .MinBy(shape => Math.Abs(LlamaTensorLayout.CountParameters(shape.ToConfig(teacher)).Total - budget))!;
    }

    /// <summary>
    /// The page bound of a build: bytes of the 4 KiB file pages that hold at least one kept teacher element, and the
    /// bytes the kept elements need. Row-major storage cannot be read in less than whole pages, so no reader can fetch
    /// fewer bytes than the bound; fetched / bound shows what coalescing costs on top.
    /// </summary>
    private static (long PageBytes, long NeededBytes) PageBound(string checkpoint, SurgeryPlan plan)
    {
        const long page = 4096;
        using var reader = CheckpointReader.Open(checkpoint);
        var marked = new Dictionary<string, (long DataStart, System.Collections.BitArray Pages)>(StringComparer.Ordinal);
        foreach (CheckpointShard shard in reader.Shards)
        {
            using var file = SafetensorsFile.Open(shard.Path);
            marked[shard.Path] = (file.DataStart, new System.Collections.BitArray((int)((shard.ByteSize + page - 1) / page)));
        }

        long needed = 0;
        foreach (TensorSelection selection in TensorSelection.For(plan))
        {
            SafetensorsTensorInfo info = reader.GetInfo(selection.TeacherName);
            (long dataStart, System.Collections.BitArray pages) = marked[reader.ShardOf(selection.TeacherName)];
            long element = info.DType.ElementSize();
            long columnCount = info.Shape.Length == 1 ? 1 : info.Shape[1];
            long rowBytes = columnCount * element;
            long[]? columns = selection.Columns is null ? null : [.. selection.Columns.Order()];
            long keptColumns = columns?.Length ?? columnCount;
            long rowCount = selection.Rows?.Length ?? info.Shape[0];
            needed += rowCount * keptColumns * element;
            for (long r = 0; r < rowCount; r++)
            {
                long rowStart = dataStart + info.DataBegin + ((selection.Rows?[r] ?? r) * rowBytes);
                if (columns is null)
                {
                    for (long p = rowStart / page; p <= (rowStart + rowBytes - 1) / page; p++)
                    {
                        pages[(int)p] = true;
                    }

                    continue;
                }

                // Marks the page of the first kept column at or after i, then jumps to the first kept column past it.
                for (int i = 0; i < columns.Length;)
                {
                    long p = (rowStart + (columns[i] * element)) / page;
                    pages[(int)p] = true;
                    long nextColumn = ((((p + 1) * page) - rowStart) + element - 1) / element;
                    int next = Array.BinarySearch(columns, i, columns.Length - i, nextColumn);
                    i = next >= 0 ? next : ~next;
                }
            }
        }

        long pageCount = marked.Values.Sum(m => (long)m.Pages.Cast<bool>().Count(b => b));
        return (pageCount * page, needed);
    }

    private static long SequentialPrefix(string checkpoint, long bytes)
    {
        using var reader = CheckpointReader.Open(checkpoint);
        byte[] buffer = new byte[16 << 20];
        long total = 0;
        foreach (CheckpointShard shard in reader.Shards)
        {
            using var stream = new FileStream(shard.Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            int read;
            while (total < bytes && (read = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, bytes - total))) > 0)
            {
                total += read;
            }
        }

        return total;
    }
}
