using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Cli;

public sealed class TrainCommandTests
{
    private string _dir = null!;
    private string _model = null!;
    private string _tokens = null!;

    [SetUp]
    public async Task SetUp()
    {
        _dir = Directory.CreateTempSubdirectory("train-cli").FullName;
        _model = await TrainCliSupport.SaveModelAsync(Path.Combine(_dir, "model"), seed: 7);
        File.WriteAllText(Path.Combine(_model, "tokenizer.json"), "{}");
        _tokens = TrainCliSupport.WriteTokens(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private string[] Train(string outName, int steps, params string[] extra) =>
        ["train", "--model", _model, "--data", _tokens, "--out", Path.Combine(_dir, outName), .. TrainCliSupport.FastOptions(steps), .. extra];

    private string[] TrainWithoutEvaluation(string outName, int steps, params string[] extra) =>
        ["train", "--model", _model, "--data", _tokens, "--out", Path.Combine(_dir, outName), .. TrainCliSupport.FastOptions(steps, evalEvery: 0), .. extra];

    [Test]
    public async Task Train_lowers_the_loss_and_writes_loadable_checkpoints_metrics_and_chart()
    {
        (int code, string output, string error) = await CliRunner.RunAsync(Train("run", 40));
        Assert.That(code, Is.Zero, error);
        string run = Path.Combine(_dir, "run");
        double[] losses = TrainCliSupport.Losses(Path.Combine(run, "metrics.jsonl"));
        Assert.Multiple(() =>
        {
            Assert.That(output, Does.Contain("final checkpoint"));
            Assert.That(losses, Has.Length.EqualTo(40));
            Assert.That(losses.TakeLast(5).Average(), Is.LessThan(losses[0] * 0.6), "the pattern data is learnable");
            Assert.That(File.Exists(Path.Combine(run, "metrics.csv")));
            Assert.That(new FileInfo(Path.Combine(run, "loss.png")).Length, Is.GreaterThan(0));
            Assert.That(File.Exists(Path.Combine(run, "checkpoints", "best", "model.safetensors")), "validation ran, so a best checkpoint exists");
            Assert.That(File.Exists(Path.Combine(run, "checkpoints", "final", "tokenizer.json")), "tokenizer files travel with the checkpoint");
        });

        using LlamaForCausalLM trained = ModelCheckpoint.Load(Path.Combine(run, "checkpoints", "final"), new ModelLoadOptions { Device = "cpu" });
        using LlamaForCausalLM original = ModelCheckpoint.Load(_model, new ModelLoadOptions { Device = "cpu" });
        using var ids = torch.tensor(new long[] { 1, 4, 13, 40 }, [1, 4]);
        using var noGrad = torch.no_grad();
        using Tensor a = trained.forward(ids);
        using Tensor b = original.forward(ids);
        Assert.That(a.allclose(b), Is.False, "the final checkpoint holds the trained weights");
    }

    [Test]
    public async Task Resume_after_cancellation_ends_where_an_uninterrupted_run_ends()
    {
        (int code, _, string error) = await CliRunner.RunAsync(TrainWithoutEvaluation("whole", 12));
        Assert.That(code, Is.Zero, error);

        // Cancel as soon as the first step is reported on the progress line; the trainer saves its state and stops.
        using var cancellation = new CancellationTokenSource();
        using var cancelOnProgress = new CancellingWriter(cancellation);
        (code, _, _) = await CliRunner.RunAsync(TrainWithoutEvaluation("resumed", 12), cancelOnProgress, cancellation.Token);
        Assert.That(code, Is.EqualTo(1), "a cancelled run exits with 1");
        double[] partial = TrainCliSupport.Losses(Path.Combine(_dir, "resumed", "metrics.jsonl"));
        Assert.That(partial.Length, Is.InRange(1, 11));

        (code, _, error) = await CliRunner.RunAsync(TrainWithoutEvaluation("resumed", 12, "--resume"));
        Assert.That(code, Is.Zero, error);
        double[] whole = TrainCliSupport.Losses(Path.Combine(_dir, "whole", "metrics.jsonl"));
        double[] resumed = TrainCliSupport.Losses(Path.Combine(_dir, "resumed", "metrics.jsonl"));
        Assert.That(resumed, Is.EqualTo(whole).Within(1e-5), "resuming continues the same run");
    }

    [Test]
    public async Task Multi_round_training_writes_each_round_and_a_final_checkpoint()
    {
        (int code, string output, string error) = await CliRunner.RunAsync(Train("rounds", 1, "--rounds", "2", "--round-ratio", "0.5"));
        Assert.That(code, Is.Zero, error);
        string run = Path.Combine(_dir, "rounds");
        Assert.Multiple(() =>
        {
            Assert.That(output, Does.Contain("2 round(s)"));
            Assert.That(File.Exists(Path.Combine(run, "round-1", "metrics.jsonl")));
            Assert.That(File.Exists(Path.Combine(run, "round-2", "metrics.jsonl")));
            Assert.That(File.ReadAllLines(Path.Combine(run, "round-sampling.jsonl")), Is.Not.Empty);
        });
        using LlamaForCausalLM final = ModelCheckpoint.Load(Path.Combine(run, "checkpoints", "final"), new ModelLoadOptions { Device = "cpu" });
        Assert.That(final.Config.NumHiddenLayers, Is.EqualTo(2));
    }

    [Test]
    public async Task Multi_round_training_with_one_schedule_writes_one_run_over_all_rounds()
    {
        (int code, string output, string error) = await CliRunner.RunAsync(Train("rounds-continue", 1, "--rounds", "2", "--round-ratio", "0.5", "--round-schedule", "continue"));
        Assert.That(code, Is.Zero, error);
        string run = Path.Combine(_dir, "rounds-continue");
        Assert.Multiple(() =>
        {
            Assert.That(output, Does.Contain("2 round(s)"));
            Assert.That(File.Exists(Path.Combine(run, "rounds", "metrics.jsonl")), "one run over all rounds");
            Assert.That(Directory.Exists(Path.Combine(run, "round-2")), Is.False, "no fresh run for round 2");
            Assert.That(File.ReadAllLines(Path.Combine(run, "round-sampling.jsonl")), Is.Not.Empty);
        });

        // Step numbers run on across both rounds in the one metrics file.
        double[] losses = TrainCliSupport.Losses(Path.Combine(run, "rounds", "metrics.jsonl"));
        Assert.That(losses.Length, Is.GreaterThan(1));
        using LlamaForCausalLM final = ModelCheckpoint.Load(Path.Combine(run, "checkpoints", "final"), new ModelLoadOptions { Device = "cpu" });
        Assert.That(final.Config.NumHiddenLayers, Is.EqualTo(2));
    }

    [Test]
    public async Task Bf16_training_saves_a_bfloat16_checkpoint()
    {
        (int code, _, string error) = await CliRunner.RunAsync(Train("bf16", 4, "--precision", "bf16"));
        Assert.That(code, Is.Zero, error);
        using LlamaForCausalLM final = ModelCheckpoint.Load(Path.Combine(_dir, "bf16", "checkpoints", "final"), new ModelLoadOptions { Device = "cpu", DType = ScalarType.BFloat16 });
        Assert.That(final.Config.TorchDtype, Is.EqualTo("bfloat16"));
    }

    [TestCase("--precision", "fp16")]
    [TestCase("--rounds", "2", "--resume")]
    [TestCase("--rounds", "2", "--round-schedule", "sometimes")]
    [TestCase("--batch-tokens", "100")]
    [TestCase("--lr", "-1")]
    [TestCase("--val-fraction", "1.5")]
    [TestCase("--no-such-option")]
    public async Task Bad_options_are_usage_errors(params string[] extra)
    {
        (int code, _, string error) = await CliRunner.RunAsync(Train("usage", 2, extra));
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error, Does.StartWith("error:"));
    }

    [Test]
    public async Task Steps_and_tokens_together_are_a_usage_error_naming_both()
    {
        (int code, _, string error) = await CliRunner.RunAsync(["train", "--model", _model, "--data", _tokens, "--out", Path.Combine(_dir, "x"), "--steps", "2", "--tokens", "1000"]);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("--steps").And.Contain("--tokens"));
        Assert.That(Directory.Exists(Path.Combine(_dir, "x")), Is.False, "refused before anything was written");
    }

    [Test]
    public async Task A_missing_token_file_fails_with_one_line()
    {
        string missing = Path.Combine(_dir, "missing.bin");
        (int code, _, string error) = await CliRunner.RunAsync(["train", "--model", _model, "--data", missing, "--out", Path.Combine(_dir, "x"), .. TrainCliSupport.FastOptions(2)]);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(error.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(error, Does.Contain("missing.bin"));
    }

    /// <summary>Cancels a token the first time the progress line mentions a step.</summary>
    private sealed class CancellingWriter(CancellationTokenSource cancellation) : StringWriter
    {
        public override void Write(string? value)
        {
            // The progress line counts in steps: "  8.3% 1/12 steps elapsed ...".
            if (value?.Contains(" steps elapsed ", StringComparison.Ordinal) == true)
            {
                cancellation.Cancel();
            }

            base.Write(value);
        }

        public override void WriteLine(string? value)
        {
            Write(value);
            base.WriteLine();
        }
    }
}
