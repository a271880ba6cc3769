using System.Globalization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Tests.Cli;
using ModelSurgery.Training;

namespace ModelSurgery.Tests.Reliability;

/// <summary>
/// The memory checks of the commands use the library's estimates for exactly the run asked for: a <c>--max-memory</c>
/// of the estimate runs, one byte less is refused before anything is read. And <c>inspect</c> reports damaged weights as
/// warnings instead of failing.
/// </summary>
[Parallelizable(ParallelScope.None)]
public sealed class PreflightLimitTests
{
    private string _d = null!;

    [SetUp]
    public async Task Copy() => _d = await ReliabilityFixture.CopyAsync("preflight-limit");

    [TearDown]
    public void Cleanup() => Directory.Delete(_d, recursive: true);

    private string P(string name) => Path.Combine(_d, name);

    [Test]
    public async Task Train_runs_at_its_estimate_and_is_refused_one_byte_below()
    {
        LlamaConfig student = LlamaConfig.Load(Path.Combine(P("student"), "config.json"));
        long needed = TrainingMemory.Estimate(student, new TrainingOptions { BatchSize = 2, SeqLen = 16 }).Total;
        string[] run = ["train", "--model", P("student"), "--data", P("tokens.bin"), .. ReliabilityFixture.QuickTrain];

        CliRun refused = await CliFixtures.RunAsync([.. run, "--out", P("r1"), "--max-memory", (needed - 1).ToString(CultureInfo.InvariantCulture)]);
        Assert.That(refused.ExitCode, Is.Not.Zero, refused.ToString());
        Assert.That(refused.Error, Does.Contain("needs about").And.Contain("optimizer").And.Contain("logits"), refused.ToString());
        Assert.That(Directory.Exists(Path.Combine(P("r1"), "checkpoints")), Is.False, "refused before training");

        await CliFixtures.RunOkAsync([.. run, "--out", P("r2"), "--max-memory", needed.ToString(CultureInfo.InvariantCulture)]);
    }

    [Test]
    public async Task Score_runs_at_its_estimate_and_is_refused_one_byte_below()
    {
        LlamaConfig teacher = LlamaConfig.Load(Path.Combine(P("m"), "config.json"));
        long needed = ScoringMemory.Estimate(teacher, new ScoringOptions { BatchSize = 2 }, sequences: 4, length: 16).Total;
        string[] run = ["score", "--model", P("m"), "--tokens", P("tokens.bin"), "--sequences", "4", "--length", "16", "--batch-size", "2", "--device", "cpu"];

        CliRun refused = await CliFixtures.RunAsync([.. run, "--out", P("s1"), "--max-memory", (needed - 1).ToString(CultureInfo.InvariantCulture)]);
        Assert.That(refused.ExitCode, Is.Not.Zero, refused.ToString());
        Assert.That(refused.Error, Does.Contain("needs about").And.Contain("--batch-size").And.Contain("--length"), refused.ToString());
        Assert.That(Directory.Exists(P("s1")) && Directory.EnumerateFiles(P("s1")).Any(), Is.False, "refused before scoring");

        await CliFixtures.RunOkAsync([.. run, "--out", P("s2"), "--max-memory", needed.ToString(CultureInfo.InvariantCulture)]);
        Assert.That(File.Exists(Path.Combine(P("s2"), "l2.json")), Is.True);
    }

    [TestCase("model.layers.0.mlp.down_proj.weight", float.NaN)]
    [TestCase("model.embed_tokens.weight", float.PositiveInfinity)]
    public async Task Inspect_warns_about_non_finite_weights_and_still_reports(string tensor, float value)
    {
        ReliabilityFixture.PoisonFirstElement(P("m"), tensor, value);
        Dictionary<string, string> before = ReliabilityFixture.Hashes(_d);

        CliRun run = await CliFixtures.RunOkAsync("inspect", P("m"));

        Assert.That(run.Error, Does.Contain("warning:").And.Contain("NaN or infinite").And.Contain(tensor), run.ToString());
        Assert.That(run.Output, Does.Contain("hidden 16"), "the report itself is still printed");
        Assert.That(ReliabilityFixture.Hashes(_d), Is.EqualTo(before));
    }
}
