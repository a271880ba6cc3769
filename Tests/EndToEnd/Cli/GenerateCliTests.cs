using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Tests.Cli;

/// <summary><c>modelsurgery generate</c> with a tokenizer in the model folder, and the tool's usage errors.</summary>
public sealed class GenerateCliTests
{
    private string _dir = null!;
    private string _model = null!;

    [OneTimeSetUp]
    public async Task CreateModel()
    {
        _dir = Directory.CreateTempSubdirectory("cli-generate").FullName;
        _model = Path.Combine(_dir, "tiny");
        await CliFixtures.CreateTinyModelAsync(_dir, _model);
    }

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task A_text_prompt_is_encoded_after_bos_and_the_streamed_text_is_the_decoded_continuation()
    {
        CliRun ids = await CliFixtures.RunOkAsync("generate", "--model", _model, "--prompt", "The cat\nsat", "--max-new-tokens", "24", "--ids");
        CliRun text = await CliFixtures.RunOkAsync("generate", "--model", _model, "--prompt", "The cat\nsat", "--max-new-tokens", "24");
        CliRun explicitIds = await CliFixtures.RunOkAsync(
            "generate", "--model", _model, "--prompt-ids", string.Join(' ', EncodeWithBos("The cat\nsat")), "--max-new-tokens", "24", "--ids");

        int[] generated = [.. ids.Output.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse)];
        Assert.That(generated, Has.Length.EqualTo(24));
        Assert.That(explicitIds.Output, Is.EqualTo(ids.Output), "--prompt is BOS followed by the tokenizer's ids");
        var tokenizer = TokenizerFiles.Load(_model);
        Assert.That(text.Output, Is.EqualTo(tokenizer.Decode(generated) + Environment.NewLine));
    }

    [Test]
    public async Task Streamed_text_holds_back_characters_split_over_byte_tokens()
    {
        // Every byte is a token, so sampled continuations split multi-byte characters and emit stray high bytes.
        string model = Path.Combine(_dir, "bytes");
        string config = Path.Combine(_dir, "bytes-config.json");
        await File.WriteAllTextAsync(config, CliFixtures.TinyConfigJson.Replace("\"vocab_size\": 97", "\"vocab_size\": 257", StringComparison.Ordinal).Replace("\"bos_token_id\": 96", "\"bos_token_id\": 256", StringComparison.Ordinal));
        await CliFixtures.RunOkAsync("synth", "--like", config, "--dtype", "f32", "--seed", "4", "--out", model);
        CliFixtures.WriteByteTokenizer(model);
        string[] args = ["generate", "--model", model, "--prompt", "caf\u00e9 ", "--max-new-tokens", "64", "--temperature", "1.0", "--seed", "9"];

        CliRun ids = await CliFixtures.RunOkAsync([.. args, "--ids"]);
        CliRun text = await CliFixtures.RunOkAsync(args);

        int[] generated = [.. ids.Output.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse)];
        Assert.That(generated.Count(id => id is >= 0x80 and < 256), Is.GreaterThan(4), "the continuation has non-ASCII bytes");
        Assert.That(text.Output, Is.EqualTo(TokenizerFiles.Load(model).Decode(generated) + Environment.NewLine));
    }

    [Test]
    public async Task Stats_go_to_stderr_and_dtype_keeps_the_weights_in_bf16()
    {
        // The same thread count as now: the CLI runs in this process and the setting is process-wide.
        string threads = TorchSharp.torch.get_num_threads().ToString(System.Globalization.CultureInfo.InvariantCulture);
        CliRun run = await CliFixtures.RunOkAsync(
            "generate", "--model", _model, "--prompt-ids", "1 5 9", "--max-new-tokens", "6", "--ids", "--stats", "--dtype", "bf16", "--threads", threads);

        Assert.That(run.Output.Split(' ', StringSplitOptions.RemoveEmptyEntries), Has.Length.EqualTo(6), "stdout holds only the ids");
        Assert.That(run.Error, Does.Match(@"prompt: 3 tokens in [0-9.]+ ms, [0-9.]+ tokens/s"));
        Assert.That(run.Error, Does.Match(@"decode: 5 tokens in [0-9.]+ ms, [0-9.]+ tokens/s"));
        Assert.That(run.Error, Does.Contain($"BFloat16, {threads} threads"));
    }

    [TestCase("--dtype", "int8")]
    [TestCase("--threads", "0")]
    public async Task A_bad_dtype_or_thread_count_for_generation_is_a_usage_error(string option, string value)
    {
        CliRun run = await CliFixtures.RunAsync("generate", "--model", _model, "--prompt-ids", "1", option, value);

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.Error, Does.Contain(option).And.Contain(value));
    }

    [Test]
    public async Task Sampling_with_a_seed_is_reproducible()
    {
        string[] args = ["generate", "--model", _model, "--prompt", "ab", "--max-new-tokens", "16", "--temperature", "1.0", "--top-k", "20", "--seed", "5", "--ids"];
        CliRun first = await CliFixtures.RunOkAsync(args);
        CliRun second = await CliFixtures.RunOkAsync(args);

        Assert.That(second.Output, Is.EqualTo(first.Output));
    }

    [Test]
    public async Task Prompt_and_prompt_ids_together_are_a_usage_error()
    {
        CliRun run = await CliFixtures.RunAsync("generate", "--model", _model, "--prompt", "a", "--prompt-ids", "1 2");

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.ErrorLines, Has.Length.EqualTo(1));
    }

    [Test]
    public async Task An_unknown_option_is_a_usage_error()
    {
        CliRun run = await CliFixtures.RunAsync("generate", "--model", _model, "--no-such-option", "3");

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.Error, Does.Contain("--no-such-option"));
        Assert.That(run.Output, Is.Empty);
    }

    [Test]
    public async Task A_missing_required_option_is_a_usage_error()
    {
        CliRun run = await CliFixtures.RunAsync("generate", "--prompt-ids", "1 2");

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.Error, Does.Contain("--model"));
    }

    [Test]
    public async Task A_bad_option_value_is_a_usage_error()
    {
        CliRun run = await CliFixtures.RunAsync("generate", "--model", _model, "--max-new-tokens", "many");

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
    }

    [Test]
    public async Task A_bad_dtype_is_a_usage_error()
    {
        CliRun run = await CliFixtures.RunAsync("synth", "--like", "tinyllama-1.1b", "--dtype", "int3", "--out", Path.Combine(_dir, "never"));

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.Error, Does.Contain("--dtype").And.Contain("int3"));
        Assert.That(Directory.Exists(Path.Combine(_dir, "never")), Is.False);
    }

    [Test]
    public async Task A_missing_model_folder_fails_with_one_line_and_no_stack_trace()
    {
        string missing = Path.Combine(_dir, "no-such-model");
        CliRun run = await CliFixtures.RunAsync("generate", "--model", missing, "--prompt-ids", "1");

        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.ErrorLines, Has.Length.EqualTo(1));
        Assert.That(run.Error, Does.Contain("no-such-model").And.Not.Contain("   at "));
    }

    [Test]
    public async Task Inspect_of_a_missing_path_fails_with_one_line_and_verbose_adds_the_stack_trace()
    {
        string missing = Path.Combine(_dir, "nothing-here");
        CliRun quiet = await CliFixtures.RunAsync("inspect", missing);
        CliRun verbose = await CliFixtures.RunAsync("inspect", missing, "--verbose");

        Assert.That(quiet.ExitCode, Is.EqualTo(1), quiet.ToString());
        Assert.That(quiet.ErrorLines, Has.Length.EqualTo(1));
        Assert.That(quiet.Error, Does.Contain("nothing-here").And.Not.Contain("   at "));
        Assert.That(verbose.ExitCode, Is.EqualTo(1), verbose.ToString());
        Assert.That(verbose.Error, Does.Contain("   at "));
    }

    private int[] EncodeWithBos(string text) => [CliFixtures.AsciiBos, .. TokenizerFiles.Load(_model).Encode(text)];
}
