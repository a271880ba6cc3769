using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Tests.Cli;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Distillation;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Tests.Reliability;

/// <summary>
/// The free-disk checks of <c>train</c>, <c>export-job</c> and <c>cache-teacher</c>, run against an assumed free-disk
/// figure: a run at its estimate goes ahead, one byte less is refused before anything is written, with a message naming
/// <c>--out</c>.
/// </summary>
[Parallelizable(ParallelScope.None)]
public sealed class DiskPreflightTests
{
    private string _d = null!;

    [SetUp]
    public async Task Copy() => _d = await ReliabilityFixture.CopyAsync("disk-preflight");

    [TearDown]
    public void Cleanup()
    {
        MemoryPreflight.FreeDiskOverride = null;
        Directory.Delete(_d, recursive: true);
    }

    private string P(string name) => Path.Combine(_d, name);

    [Test]
    public async Task Train_runs_at_its_disk_estimate_and_is_refused_one_byte_below()
    {
        LlamaConfig student = LlamaConfig.Load(Path.Combine(P("student"), "config.json"));
        long companions = SafetensorsModelCheckpointer.CompanionFiles.Select(n => new FileInfo(Path.Combine(P("student"), n))).Where(f => f.Exists).Sum(f => f.Length);
        long needed = TrainingDisk.Estimate(student, new TrainingOptions { OutputDir = P("r2") }, companionBytes: companions).Total;
        string[] run = ["train", "--model", P("student"), "--data", P("tokens.bin"), "--val-fraction", "0", .. ReliabilityFixture.QuickTrain];

        MemoryPreflight.FreeDiskOverride = needed - 1;
        CliRun refused = await CliFixtures.RunAsync([.. run, "--out", P("r1")]);
        Assert.That(refused.ExitCode, Is.Not.Zero, refused.ToString());
        Assert.That(refused.Error, Does.Contain("--out").And.Contain(P("r1")).And.Contain("training state").And.Contain("free"), refused.ToString());
        Assert.That(Directory.Exists(Path.Combine(P("r1"), "checkpoints")), Is.False, "refused before training");

        MemoryPreflight.FreeDiskOverride = needed;
        await CliFixtures.RunOkAsync([.. run, "--out", P("r2")]);
        long written = Directory.EnumerateFiles(Path.Combine(P("r2"), "checkpoints"), "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        Assert.That(written, Is.LessThanOrEqualTo(needed), "the estimate covers the checkpoints the run leaves");
    }

    [Test]
    public async Task Export_job_is_refused_before_writing_when_its_copies_do_not_fit()
    {
        MemoryPreflight.FreeDiskOverride = 1;
        CliRun refused = await CliFixtures.RunAsync(
            "export-job", "hf-accelerate", "--student", P("student"), "--data", P("tokens.bin"), "--out", P("job"), "--steps", "10",
            "--batch-size", "2", "--seq-len", "16", "--nodes", "1", "--gpus-per-node", "2", "--copy");

        Assert.That(refused.ExitCode, Is.Not.Zero, refused.ToString());
        Assert.That(refused.Error, Does.Contain("--out:").And.Contain("free").And.Contain("--copy"), refused.ToString());
        Assert.That(Directory.EnumerateFileSystemEntries(_d).Where(e => Path.GetFileName(e).Contains("job", StringComparison.Ordinal)), Is.Empty, "nothing is written");
        Assert.That(refused.Error, Does.Not.Contain("   at "), "no stack trace");
    }

    [Test]
    public async Task Cache_teacher_is_refused_when_its_file_does_not_fit_writes_at_its_estimate_and_replaces_only_with_force()
    {
        const int seqLen = 16;
        const int topK = 4;
        string cache = P("teacher.cache");
        string[] run = ["cache-teacher", "--teacher", P("student"), "--data", P("tokens.bin"), "--out", cache, "--seq-len", "16", "--top-k", "4", "--val-fraction", "0", "--device", "cpu"];
        int windows;
        using (TokenFile file = TokenFile.Open(P("tokens.bin")))
        {
            windows = CheckpointTraining.OpenData(file, seqLen, new CheckpointTrainingSettings { ValidationFraction = 0 }).TrainWindows.Count;
        }

        long needed = TeacherLogitCache.FileBytes(windows, seqLen, topK);
        // The layout by hand: a 32-byte header, an int64 id per window, and per position k float32 logits and k int32 ids.
        Assert.That(needed, Is.EqualTo(32 + (windows * 8L) + (windows * seqLen * topK * 8L)));

        MemoryPreflight.FreeDiskOverride = needed - 1;
        CliRun refused = await CliFixtures.RunAsync(run);
        Assert.That(refused.ExitCode, Is.Not.Zero, refused.ToString());
        Assert.That(refused.Error, Does.Contain("--out").And.Contain(cache).And.Contain(ByteSize.Format(needed)).And.Contain(ByteSize.Format(needed - 1))
            .And.Contain("free").And.Contain("--force").And.Contain($"{windows:N0} windows x 16 positions x top-4"), refused.ToString());
        Assert.That(refused.Error, Does.Not.Contain("   at "), "no stack trace");
        Assert.That(File.Exists(cache), Is.False, "refused before writing");

        MemoryPreflight.FreeDiskOverride = needed;
        await CliFixtures.RunOkAsync(run);
        Assert.That(new FileInfo(cache).Length, Is.EqualTo(needed), "the estimate is the file's exact size");
        using (TeacherLogitCache written = TeacherLogitCache.Open(cache))
        {
            Assert.That(written.Count, Is.EqualTo(windows));
        }

        byte[] before = File.ReadAllBytes(cache);
        CliRun again = await CliFixtures.RunAsync(run);
        Assert.That(again.ExitCode, Is.Not.Zero, again.ToString());
        Assert.That(again.Error, Does.Contain("--out").And.Contain("already exists").And.Contain("--force"), again.ToString());
        Assert.That(File.ReadAllBytes(cache), Is.EqualTo(before), "the existing cache is kept");

        // --force replaces it and writes even where the estimate says it does not fit.
        MemoryPreflight.FreeDiskOverride = 1;
        await CliFixtures.RunOkAsync([.. run, "--force"]);
        Assert.That(new FileInfo(cache).Length, Is.EqualTo(needed));
    }
}
