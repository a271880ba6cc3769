using ModelSurgery.Tests.Support;
using ModelSurgery.Tests.Training;

namespace ModelSurgery.Tests.Cli;

/// <summary>
/// The tool starts itself again with <c>MALLOC_ARENA_MAX=1</c> unless the environment sets a limit: without it, training
/// steps on pool threads map their logits afresh every step (measured twice as slow). Run as a child process, since the
/// restart replaces the process image.
/// </summary>
public sealed class OneArenaRestartTests
{
    private string _dir = null!;
    private string _model = null!;
    private string _tokens = null!;

    [SetUp]
    public async Task SetUp()
    {
        Assume.That(OperatingSystem.IsLinux(), "glibc's arenas exist on Linux only");
        _dir = Directory.CreateTempSubdirectory("one-arena").FullName;
        _model = await TrainCliSupport.SaveModelAsync(Path.Combine(_dir, "model"), seed: 7);
        _tokens = TrainCliSupport.WriteTokens(_dir);
    }

    [TearDown]
    public void TearDown()
    {
        if (_dir is not null)
        {
            Directory.Delete(_dir, recursive: true);
        }
    }

    [TestCase(null, "every thread allocates from glibc's main arena", Description = "no limit set: the tool restarts with one arena")]
    [TestCase("1", "every thread allocates from glibc's main arena", Description = "already one arena: nothing to do")]
    [TestCase("2", "arenas of their own", Description = "the user's limit is kept")]
    [TestCase("0", "arenas of their own", Description = "0 (glibc's default) is how a user keeps per-thread arenas")]
    public void Training_runs_on_one_arena_unless_the_user_set_a_limit(string? arenaMax, string expected)
    {
        string output = Path.Combine(_dir, "run");
        (int exitCode, int processId, string text) = RunTool(arenaMax, ["train", "--model", _model, "--data", _tokens, "--out", output, .. TrainCliSupport.FastOptions(2, evalEvery: 0), "--verbose"]);

        string folder = Environment.GetEnvironmentVariable("TMPDIR") is { Length: > 0 } tmp ? tmp : Path.GetTempPath();
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.Zero, text);
            Assert.That(text, Does.Contain(expected));
            Assert.That(text, Does.Contain("final checkpoint"), "the restarted tool ran the command it was given, with its arguments");
            Assert.That(File.Exists(Path.Combine(output, "checkpoints", "final", "model.safetensors")), text);
            Assert.That(Directory.GetFiles(folder, $"dotnet-diagnostic-{processId}-*"), Is.Empty, "a restart leaves no diagnostics socket of the replaced image behind");
        });
    }

    private (int ExitCode, int ProcessId, string Output) RunTool(string? arenaMax, string[] arguments) =>
        DotnetCli.ExecuteProgramWithId(
            Path.Combine(TestContext.CurrentContext.TestDirectory, "modelsurgery"),
            _dir,
            new Dictionary<string, string?> { ["GLIBC_TUNABLES"] = null, ["MALLOC_ARENA_MAX"] = arenaMax },
            arguments);
}
