using System.Text.Json.Nodes;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Tests.Vocabulary;

namespace ModelSurgery.Tests.Cli;

/// <summary><c>modelsurgery export-job</c>: the distill command line with an engine and a cluster shape, and its one-line errors.</summary>
public sealed class ExportJobCommandTests
{
    private string _dir = null!;
    private string _teacher = null!;
    private string _student = null!;
    private string _tokens = null!;

    [OneTimeSetUp]
    public async Task OneTimeSetUp()
    {
        _dir = Directory.CreateTempSubdirectory("export-job-cli").FullName;
        _teacher = Path.Combine(_dir, "teacher");
        using (await TinyTokenizedModel.SaveAsync(_teacher))
        {
        }

        _student = Path.Combine(_dir, "student");
        ModelCompressionResult compressed = await ModelVocabularyCompressor.CompressAsync(_teacher, [TinyTokenizedModel.WriteCorpus(_dir)], CompressionTarget.Keep(400), _student);
        Directory.CreateDirectory(Path.Combine(_dir, "tokens"));
        _tokens = TrainCliSupport.WriteTokens(Path.Combine(_dir, "tokens"), vocab: compressed.Map.NewVocabSize);
    }

    [OneTimeTearDown]
    public void OneTimeTearDown() => Directory.Delete(_dir, recursive: true);

    private string[] Export(string engine, string outName, params string[] extra) =>
    [
        "export-job", engine, "--student", _student, "--teacher", _teacher, "--data", _tokens, "--out", Path.Combine(_dir, outName),
        "--steps", "1000", "--batch-size", "4", "--grad-accum", "4", "--seq-len", "16", "--lr", "3e-4", "--precision", "bf16",
        "--kd-loss", "rkl", "--temperature", "1.5", "--alpha", "0.8", "--nodes", "2", "--gpus-per-node", "8", .. extra,
    ];

    [Test]
    public async Task Export_job_writes_the_job_and_prints_the_launch_line()
    {
        (int code, string output, string error) = await CliRunner.RunAsync(Export("hf-accelerate", "job"));
        Assert.That(code, Is.Zero, error);
        Assert.That(output, Does.Contain("2 node(s) x 8 GPU(s) = 16 processes").And.Contain("1000 steps of 16 windows").And.Contain("NODES=2 GPUS_PER_NODE=8"));
        var job = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "job", "job.json")))!;
        Assert.That(job["optimizer"]!["lr"]!.GetValue<double>(), Is.EqualTo(3e-4));
        Assert.That(job["distillation"]!["divergence"]!.GetValue<string>(), Is.EqualTo("reverse_kl"));
        Assert.That(job["distillation"]!["alpha"]!.GetValue<double>(), Is.EqualTo(0.8));
        Assert.That(job["distillation"]!["vocab_map"]!.GetValue<string>(), Is.EqualTo("student/vocab_map.json"));
        Assert.That(job["precision"]!.GetValue<string>(), Is.EqualTo("bf16"));
    }

    [Test]
    public async Task An_unknown_engine_is_a_usage_error_naming_the_engines()
    {
        (int code, _, string error) = await CliRunner.RunAsync(Export("torchtune", "unknown-engine"));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error.Trim(), Does.StartWith("error: engine: unknown engine 'torchtune'").And.Contain("hf-accelerate"));
    }

    [Test]
    public async Task An_existing_output_needs_force()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "taken"));
        (int code, _, string error) = await CliRunner.RunAsync(Export("hf-accelerate", "taken"));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("--out:").And.Contain("--force"));
        (code, _, error) = await CliRunner.RunAsync(Export("hf-accelerate", "taken", "--force"));
        Assert.That(code, Is.Zero, error);
    }

    [Test]
    public async Task A_missing_student_and_an_unmapped_teacher_are_named()
    {
        string[] args = Export("hf-accelerate", "missing");
        args[Array.IndexOf(args, "--student") + 1] = Path.Combine(_dir, "no-student");
        (int code, _, string error) = await CliRunner.RunAsync(args);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("--student: ").And.Contain("no-student"));

        // The teacher as student: same vocabulary as itself, but the token file is fine; a 64-id model is not.
        string other = await TrainCliSupport.SaveModelAsync(Path.Combine(_dir, "other-teacher"), seed: 5);
        args = Export("hf-accelerate", "unmapped");
        args[Array.IndexOf(args, "--student") + 1] = _teacher;
        args[Array.IndexOf(args, "--teacher") + 1] = other;
        (code, _, error) = await CliRunner.RunAsync(args);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(error, Does.Contain("--teacher: ").And.Contain("vocab_map.json").And.Contain("other-teacher"));
        Assert.That(error.Split('\n').Where(l => l.StartsWith("error:", StringComparison.Ordinal)).ToList(), Has.Count.EqualTo(1), "one line");
    }

    [TestCase("--temperature: must be positive", "--temperature", "0")]
    [TestCase("--alpha: must be in [0, 1]", "--alpha", "2")]
    [TestCase("--steps: give --steps or --tokens, not both", "--tokens", "100000")]
    [TestCase("--grad-clip: must not be negative", "--grad-clip", "-1")]
    public async Task The_distillation_record_checks_the_values_and_names_the_flag(string expected, params string[] extra)
    {
        // A flag the shared line already gives takes the case's value (a flag given twice is a parse error).
        string[] args = Export("hf-accelerate", "bad-value");
        int at = Array.IndexOf(args, extra[0]);
        args = at < 0 ? [.. args, .. extra] : [.. args[..(at + 1)], extra[1], .. args[(at + 2)..]];
        (int code, _, string error) = await CliRunner.RunAsync(args);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error.Trim(), Does.StartWith("error: " + expected));
        Assert.That(Directory.Exists(Path.Combine(_dir, "bad-value")), Is.False);
    }

    [Test]
    public async Task Options_that_only_a_local_run_has_are_not_offered()
    {
        (int code, _, string error) = await CliRunner.RunAsync(Export("hf-accelerate", "rounds", "--rounds", "2"));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("--rounds"));
    }
}
