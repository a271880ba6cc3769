using System.Globalization;
using System.Text.RegularExpressions;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Modeling;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Cli;

/// <summary><c>modelsurgery perplexity</c> on a text file of token ids.</summary>
public sealed partial class PerplexityCliTests
{
    // Greedy tokens of stories260K (the run.c list in Tests/EndToEnd/Integration/Stories260KModelTests.cs), a natural text for it.
    private static readonly int[] Tokens =
        [1, 461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264, 283, 452, 288, 13, 431, 431, 431, 431];

    private string _dir = null!;
    private string _model = null!;

    [OneTimeSetUp]
    public async Task ImportOnce()
    {
        _dir = Directory.CreateTempSubdirectory("cli-perplexity").FullName;
        _model = Path.Combine(_dir, "model");
        await CliFixtures.RunOkAsync("import-llama2c", CliFixtures.Stories260KPath, _model);
    }

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task Perplexity_of_one_window_equals_the_exponent_of_the_mean_next_token_nll()
    {
        string ids = Path.Combine(_dir, "ids.txt");
        await File.WriteAllTextAsync(ids, string.Join(", ", Tokens[..12]) + "\n" + string.Join(' ', Tokens[12..]) + "\n");

        CliRun run = await CliFixtures.RunOkAsync("perplexity", "--model", _model, "--tokens", ids, "--context", "64");

        Match printed = PerplexityLine().Match(run.Output);
        Assert.That(printed.Success, Is.True, run.Output);
        double perplexity = double.Parse(printed.Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.That(int.Parse(printed.Groups[2].Value, CultureInfo.InvariantCulture), Is.EqualTo(Tokens.Length - 1));

        using var model = ModelCheckpoint.Load(_model, new ModelLoadOptions { Device = "cpu" });
        using var scope = NewDisposeScope();
        double meanNll;
        using (no_grad())
        {
            Tensor logits = model.forward(tensor(Tokens.Select(t => (long)t).ToArray()).unsqueeze(0)).squeeze(0); // [T, V]
            Tensor logProbs = nn.functional.log_softmax(logits[..^1].to_type(ScalarType.Float64), dim: -1); // [T-1, V]
            Tensor targets = tensor(Tokens[1..].Select(t => (long)t).ToArray()).unsqueeze(1); // [T-1, 1]
            meanNll = -logProbs.gather(1, targets).mean().item<double>();
        }

        // The CLI prints 4 decimals (half a unit of the last digit), and computes the log-softmax in float32: each
        // token's NLL carries a few ulps of the log-sum-exp, |lse| <= |nll| + |max logit|, bounded here by 64 (1 + nll).
        double expected = Math.Exp(meanNll);
        double printedHalfUnit = 0.5e-4;
        double float32Error = expected * 64 * (1 + meanNll) * Math.Pow(2, -23);
        Assert.That(perplexity, Is.EqualTo(expected).Within(printedHalfUnit + float32Error));
    }

    [Test]
    public async Task Sliding_windows_give_the_library_result()
    {
        string ids = Path.Combine(_dir, "ids-window.txt");
        await File.WriteAllTextAsync(ids, string.Join(' ', Tokens));

        CliRun run = await CliFixtures.RunOkAsync("perplexity", "--model", _model, "--tokens", ids, "--context", "8", "--stride", "3");

        using var model = ModelCheckpoint.Load(_model, new ModelLoadOptions { Device = "cpu" });
        PerplexityResult expected = await PerplexityEvaluator.EvaluateAsync(model, Tokens, 8, 3);
        Assert.That(run.Output, Does.StartWith(string.Create(CultureInfo.InvariantCulture, $"perplexity {expected.Perplexity:F4} ")));
        Assert.That(run.Output, Does.Contain("context 8, stride 3"));
    }

    [Test]
    public async Task Limit_scores_only_the_first_tokens()
    {
        string ids = Path.Combine(_dir, "ids-limit.txt");
        await File.WriteAllTextAsync(ids, string.Join(' ', Tokens));

        CliRun run = await CliFixtures.RunOkAsync("perplexity", "--model", _model, "--tokens", ids, "--context", "8", "--stride", "3", "--limit", "12");

        using var model = ModelCheckpoint.Load(_model, new ModelLoadOptions { Device = "cpu" });
        PerplexityResult expected = await PerplexityEvaluator.EvaluateAsync(model, Tokens[..12], 8, 3);
        Assert.That(run.Output, Does.StartWith(string.Create(CultureInfo.InvariantCulture, $"perplexity {expected.Perplexity:F4} ")));
        Assert.That(run.Output, Does.Contain("over 11 tokens"));
        CliRun bad = await CliFixtures.RunAsync("perplexity", "--model", _model, "--tokens", ids, "--limit", "1");
        Assert.That(bad.ExitCode, Is.EqualTo(2));
        Assert.That(bad.Error, Does.Contain("--limit"));
    }

    [Test]
    public async Task A_missing_token_file_fails_with_one_line()
    {
        string missing = Path.Combine(_dir, "no-such-ids.txt");
        CliRun run = await CliFixtures.RunAsync("perplexity", "--model", _model, "--tokens", missing);

        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.ErrorLines, Has.Length.EqualTo(1));
        Assert.That(run.Error, Does.Contain(missing).And.Not.Contain("   at "));
    }

    [Test]
    public async Task A_context_longer_than_the_model_allows_is_a_usage_error()
    {
        string ids = Path.Combine(_dir, "ids-long.txt");
        await File.WriteAllTextAsync(ids, string.Join(' ', Tokens));

        CliRun run = await CliFixtures.RunAsync("perplexity", "--model", _model, "--tokens", ids, "--context", "100000");

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.Error, Does.Contain("--context"));
    }

    [GeneratedRegex(@"^perplexity (\d+\.\d{4}) \(mean NLL [\d.]+ nats over (\d+) tokens")]
    private static partial Regex PerplexityLine();
}
