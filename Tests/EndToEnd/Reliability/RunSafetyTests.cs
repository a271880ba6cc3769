using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using ModelSurgery.Tests.Cli;
using ModelSurgery.Training;

namespace ModelSurgery.Tests.Reliability;

/// <summary>
/// Runs that share a folder, resumes that do not match, damaged training state, orphaned temp files and deliberate
/// replacement with --force.
/// </summary>
[Parallelizable(ParallelScope.None)]
public sealed class RunSafetyTests
{
    // The advisory lock file a run holds in its output folder (OutputGuard.LockFileName in the tool).
    private const string LockFileName = ".modelsurgery.lock";

    private string _d = null!;

    [SetUp]
    public async Task Copy() => _d = await ReliabilityFixture.CopyAsync("run-safety");

    [TearDown]
    public void Cleanup() => Directory.Delete(_d, recursive: true);

    private string P(string name) => Path.Combine(_d, name);

    private string[] Train(string output, params string[] extra) =>
        ["train", "--model", P("student"), "--data", P("tokens.bin"), "--out", output, .. ReliabilityFixture.QuickTrain, .. extra];

    [Test]
    public async Task A_second_run_into_a_folder_in_use_is_refused_and_the_first_finishes()
    {
        string output = P("shared-run");
        string lockFile = Path.Combine(output, LockFileName);
        using var stopFirst = new CancellationTokenSource();
        using var firstOut = new StringWriter(CultureInfo.InvariantCulture);
        using var firstErr = new StringWriter(CultureInfo.InvariantCulture);
        string[] longRun = ["train", "--model", P("student"), "--data", P("tokens.bin"), "--out", output, "--steps", "100000", "--batch-size", "2", "--seq-len", "16", "--eval-every", "0", "--checkpoint-every", "0", "--device", "cpu"];
        Task<int> first = Task.Run(() => ModelSurgery.Cli.Program.RunAsync(longRun, firstOut, firstErr, stopFirst.Token));
        while (!File.Exists(lockFile) && !first.IsCompleted)
        {
            await Task.Delay(20);
        }

        Assert.That(File.Exists(lockFile), Is.True, firstErr.ToString());
        string owner = ReadShared(lockFile);
        CliRun second = await CliFixtures.RunAsync(Train(output, "--force"));

        Assert.That(second.ExitCode, Is.Not.Zero, second.ToString());
        Assert.That(second.Error, Does.Contain("in use by another run").And.Contain("--out").And.Contain($"process {Environment.ProcessId}"));
        Assert.That(ReadShared(lockFile), Is.EqualTo(owner), "the first run's lock is untouched");

        await stopFirst.CancelAsync();
        int firstCode = await first;
        Assert.That(firstErr.ToString(), Does.Contain("cancelled"), $"exit {firstCode}: {firstErr}");
        Assert.That(File.Exists(lockFile), Is.False, "the lock is released when the run ends");

        // The folder is free again: the interrupted run can be resumed.
        string[] resumeArgs = [.. longRun.Select(a => a == "100000" ? "3" : a)];
        CliRun fresh = await CliFixtures.RunAsync([.. resumeArgs, "--force"]);
        Assert.That(fresh.ExitCode, Is.Zero, fresh.ToString());
    }

    [Test]
    public async Task A_lock_left_by_a_dead_process_is_taken_over()
    {
        using var process = Process.Start(new ProcessStartInfo("dotnet", "--version") { RedirectStandardOutput = true })!;
        await process.WaitForExitAsync();
        string output = P("stale-lock");
        Directory.CreateDirectory(output);
        await File.WriteAllTextAsync(Path.Combine(output, LockFileName), $"{process.Id} 2000-01-01T00:00:00.0000000Z\n");

        CliRun run = await CliFixtures.RunAsync(Train(output));

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        Assert.That(File.Exists(Path.Combine(output, LockFileName)), Is.False);
    }

    [TestCase("--lr", "0.01", "--lr")]
    [TestCase("--batch-size", "1", "--batch-size")]
    [TestCase("--seq-len", "8", "--seq-len")]
    [TestCase("--precision", "bf16", "--precision")]
    [TestCase("--seed", "7", "--seed")]
    [TestCase("--steps", "5", "--steps")]
    [TestCase("--data", "other", "--data")]
    public async Task Resume_with_another_option_is_refused_naming_it(string option, string value, string named)
    {
        // Stop a run part way with a checkpoint, then resume it with one option changed.
        string output = P("resumable");
        string[] baseArgs = ["train", "--model", P("student"), "--data", P("tokens.bin"), "--out", output, "--steps", "4", "--batch-size", "2", "--seq-len", "16", "--eval-every", "0", "--checkpoint-every", "2", "--device", "cpu"];
        await CliFixtures.RunOkAsync(baseArgs);
        string state = Trainer.StatePath(output);
        Assert.That(File.Exists(state), Is.True);
        if (option == "--data")
        {
            File.Copy(P("tokens.bin"), P("other.bin"));
            File.Copy(P("tokens.bin.json"), P("other.bin.json"));
            value = P("other.bin");
        }

        string[] changed = [.. Replace(baseArgs, option, value), "--resume"];
        Dictionary<string, string> before = ReliabilityFixture.Hashes(_d);

        CliRun run = await CliFixtures.RunAsync(changed);

        Assert.That(run.ExitCode, Is.Not.Zero, run.ToString());
        Assert.That(run.Error, Does.Contain(named).And.Contain("resumed run needs the same options"), run.ToString());
        Assert.That(run.Error, Does.Not.Contain("Training option"), "the message names the command-line option");
        Assert.That(ReliabilityFixture.Hashes(_d).Where(h => before.ContainsKey(h.Key)), Is.EquivalentTo(before), "nothing that existed was changed");

        // The same options resume fine.
        CliRun same = await CliFixtures.RunAsync([.. baseArgs, "--resume"]);
        Assert.That(same.ExitCode, Is.Zero, same.ToString());
    }

    [TestCase("flip")]
    [TestCase("truncate")]
    public async Task A_damaged_training_state_is_refused(string damage)
    {
        string output = P("damaged");
        string[] args = ["train", "--model", P("student"), "--data", P("tokens.bin"), "--out", output, "--steps", "4", "--batch-size", "2", "--seq-len", "16", "--eval-every", "0", "--checkpoint-every", "2", "--device", "cpu"];
        await CliFixtures.RunOkAsync(args);
        string state = Trainer.StatePath(output);
        byte[] bytes = await File.ReadAllBytesAsync(state);
        if (damage == "flip")
        {
            bytes[bytes.Length / 2] ^= 0x10; // one bit somewhere in the optimizer state
        }
        else
        {
            Array.Resize(ref bytes, bytes.Length - 100);
        }

        await File.WriteAllBytesAsync(state, bytes);
        Dictionary<string, string> before = ReliabilityFixture.Hashes(_d);

        CliRun run = await CliFixtures.RunAsync([.. args, "--resume"]);

        Assert.That(run.ExitCode, Is.Not.Zero, run.ToString());
        Assert.That(run.Error, Does.Contain(Trainer.StateFileName).And.Contain("damaged").And.Contain("cannot be resumed"), run.ToString());
        Assert.That(run.Error, Does.Not.Contain("   at "));
        Assert.That(ReliabilityFixture.Hashes(_d).Where(h => before.ContainsKey(h.Key)), Is.EquivalentTo(before));
    }

    [Test]
    public async Task Orphaned_temp_files_are_removed_on_the_next_run_and_fresh_ones_kept()
    {
        string last = Path.Combine(P("run"), "checkpoints", "last");
        string orphan = Path.Combine(last, $".model.safetensors.{Guid.NewGuid():N}.tmp");
        string fresh = Path.Combine(P("run"), $".metrics.jsonl.{Guid.NewGuid():N}.tmp");
        string unrelated = Path.Combine(last, "notes.tmp");
        foreach (string file in new[] { orphan, fresh, unrelated })
        {
            await File.WriteAllTextAsync(file, "partial");
        }

        File.SetLastWriteTimeUtc(orphan, DateTime.UtcNow.AddHours(-1));
        File.SetLastWriteTimeUtc(unrelated, DateTime.UtcNow.AddHours(-1));

        CliRun run = await CliFixtures.RunAsync(Train(P("run"), "--force"));

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        Assert.That(File.Exists(orphan), Is.False, "an old temp file of a killed write is removed");
        Assert.That(File.Exists(fresh), Is.True, "a recent temp file may belong to a live writer");
        Assert.That(File.Exists(unrelated), Is.True, "only the writers' own temp names are touched");
    }

    [Test]
    public async Task Force_replaces_a_model_without_keeping_its_stale_files()
    {
        // The tiny teacher has a tokenizer.json; the llama2.c import has none, so none may survive the replacement.
        string target = P("m");
        Assert.That(File.Exists(Path.Combine(target, "tokenizer.json")), Is.True);

        CliRun refused = await CliFixtures.RunAsync("import-llama2c", P("stories.bin"), target);
        Assert.That(refused.ExitCode, Is.Not.Zero);
        Assert.That(File.Exists(Path.Combine(target, "tokenizer.json")), Is.True, "nothing is removed without --force");

        await CliFixtures.RunOkAsync("import-llama2c", P("stories.bin"), target, "--force");

        Assert.That(File.Exists(Path.Combine(target, "tokenizer.json")), Is.False);
        var config = JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(target, "config.json")))!;
        Assert.That(config["vocab_size"]!.GetValue<int>(), Is.EqualTo(512), "the stories260K model replaced the tiny one");
        await CliFixtures.RunOkAsync("perplexity", "--model", target, "--tokens", P("ids.txt"), "--device", "cpu");
    }

    [Test]
    public async Task A_diverging_run_stops_at_its_first_non_finite_step()
    {
        CliRun run = await CliFixtures.RunAsync("train", "--model", P("student"), "--data", P("tokens.bin"), "--out", P("diverged"), "--lr", "1e30", "--min-lr", "0", "--grad-clip", "0", "--steps", "20", "--batch-size", "2", "--seq-len", "16", "--eval-every", "0", "--device", "cpu");

        Assert.That(run.ExitCode, Is.Not.Zero, run.ToString());
        Assert.That(run.Error, Does.Contain("--lr"));
        string metrics = Path.Combine(P("diverged"), "metrics.jsonl");
        double[] losses = TrainCliSupport.Losses(metrics);
        Assert.That(losses.Count(l => !double.IsFinite(l)), Is.LessThanOrEqualTo(1), "no step runs after the first non-finite one");
        Assert.That(Directory.Exists(Path.Combine(P("diverged"), "checkpoints", "final")), Is.False, "no final model is written");
    }

    private static string ReadShared(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    private static IEnumerable<string> Replace(string[] args, string option, string value)
    {
        int at = Array.IndexOf(args, option);
        return at < 0 ? [.. args, option, value] : [.. args[..(at + 1)], value, .. args[(at + 2)..]];
    }
}
