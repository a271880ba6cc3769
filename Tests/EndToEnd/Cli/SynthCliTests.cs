namespace ModelSurgery.Tests.Cli;

/// <summary><c>modelsurgery synth</c>: reproducible random checkpoints.</summary>
public sealed class SynthCliTests
{
    private string _dir = null!;

    [SetUp]
    public void CreateFolder() => _dir = Directory.CreateTempSubdirectory("cli-synth").FullName;

    [TearDown]
    public void DeleteFolder() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task The_same_seed_writes_byte_identical_files_and_another_seed_does_not()
    {
        string config = CliFixtures.WriteTinyConfig(_dir);
        string first = Path.Combine(_dir, "a"), second = Path.Combine(_dir, "b"), other = Path.Combine(_dir, "c");
        await CliFixtures.RunOkAsync("synth", "--like", config, "--seed", "7", "--max-shard-size", "8KB", "--out", first);
        await CliFixtures.RunOkAsync("synth", "--like", config, "--seed", "7", "--max-shard-size", "8KB", "--out", second);
        await CliFixtures.RunOkAsync("synth", "--like", config, "--seed", "8", "--max-shard-size", "8KB", "--out", other);

        string[] files = [.. Directory.GetFiles(first).Select(Path.GetFileName).Order(StringComparer.Ordinal)!];
        Assert.That(Directory.GetFiles(second).Select(Path.GetFileName).Order(StringComparer.Ordinal), Is.EqualTo(files));
        foreach (string file in files)
        {
            Assert.That(File.ReadAllBytes(Path.Combine(second, file)), Is.EqualTo(File.ReadAllBytes(Path.Combine(first, file))), file);
        }

        string firstShard = Directory.GetFiles(first, "*.safetensors").Order(StringComparer.Ordinal).First();
        Assert.That(File.ReadAllBytes(Path.Combine(other, Path.GetFileName(firstShard))), Is.Not.EqualTo(File.ReadAllBytes(firstShard)));
    }

    [Test]
    public async Task A_preset_name_is_accepted_for_like_and_an_unknown_one_is_a_usage_error()
    {
        CliRun run = await CliFixtures.RunAsync("synth", "--like", "no-such-model", "--out", Path.Combine(_dir, "x"));

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.Error, Does.Contain("no-such-model").And.Contain("tinyllama-1.1b"));
        Assert.That(Directory.Exists(Path.Combine(_dir, "x")), Is.False);
    }
}
