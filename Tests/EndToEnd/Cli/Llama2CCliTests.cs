namespace ModelSurgery.Tests.Cli;

/// <summary>
/// <c>import-llama2c</c>, <c>generate</c>, <c>perplexity</c> and <c>export-llama2c</c> on llama2.c's trained stories260K
/// model, against the continuation llama2.c's run.c prints for it.
/// </summary>
public sealed class Llama2CCliTests
{
    // The first 20 ids of run.c's greedy continuation from BOS (the golden list in Tests/EndToEnd/Integration/Stories260KModelTests.cs).
    private static readonly int[] RunCGreedyFromBos =
        [461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264, 283, 452, 288, 13];

    private string _dir = null!;
    private string _model = null!;
    private string _bin = null!;

    [OneTimeSetUp]
    public async Task ImportOnce()
    {
        _dir = Directory.CreateTempSubdirectory("cli-llama2c").FullName;
        _bin = Path.Combine(_dir, "stories260K.bin");
        File.Copy(CliFixtures.Stories260KPath, _bin);
        _model = Path.Combine(_dir, "model");
        CliRun run = await CliFixtures.RunOkAsync("import-llama2c", _bin, _model);
        Assert.That(run.Output, Does.Contain("5 layers").And.Contain("vocab 512"));
    }

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task Generate_ids_from_bos_prints_run_c_greedy_continuation()
    {
        CliRun run = await CliFixtures.RunOkAsync("generate", "--model", _model, "--ids", "--max-new-tokens", "20", "--device", "cpu");

        Assert.That(run.Output, Is.EqualTo(string.Join(' ', RunCGreedyFromBos) + Environment.NewLine));
    }

    [Test]
    public async Task Generate_from_prompt_ids_continues_where_the_prompt_leaves_off()
    {
        // The prompt is BOS plus the first two greedy tokens, so greedy decoding must go on with the rest of run.c's list.
        CliRun run = await CliFixtures.RunOkAsync("generate", "--model", _model, "--prompt-ids", "1 461 461", "--max-new-tokens", "18", "--ids");

        Assert.That(run.Output.Trim(), Is.EqualTo(string.Join(' ', RunCGreedyFromBos[2..])));
    }

    [Test]
    public async Task Generate_with_a_text_prompt_and_no_tokenizer_is_a_one_line_usage_error()
    {
        CliRun run = await CliFixtures.RunAsync("generate", "--model", _model, "--prompt", "Once upon a time");

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.ErrorLines, Has.Length.EqualTo(1));
        Assert.That(run.Error, Does.Contain("tokenizer").And.Contain("--prompt-ids"));
        Assert.That(run.Output, Is.Empty);
    }

    [Test]
    public async Task Export_writes_the_file_run_c_reads_by_default_byte_for_byte()
    {
        // The original stories260K.bin is in the legacy layout, the only one llama2.c's run.c reads.
        string exported = Path.Combine(_dir, "exported.bin");
        await CliFixtures.RunOkAsync("export-llama2c", _model, exported);

        Assert.That(File.ReadAllBytes(exported), Is.EqualTo(File.ReadAllBytes(_bin)));
    }

    [Test]
    public async Task Export_version1_writes_the_ak42_header_and_imports_back_to_the_same_weights()
    {
        string exported = Path.Combine(_dir, "exported-v1.bin");
        await CliFixtures.RunOkAsync("export-llama2c", _model, exported, "--format", "version1");
        byte[] bytes = File.ReadAllBytes(exported);
        string reimported = Path.Combine(_dir, "reimported-v1");
        await CliFixtures.RunOkAsync("import-llama2c", exported, reimported);

        Assert.Multiple(() =>
        {
            Assert.That(BitConverter.ToUInt32(bytes, 0), Is.EqualTo(0x616b3432u), "the 'ak42' magic");
            Assert.That(BitConverter.ToInt32(bytes, 4), Is.EqualTo(1), "version 1");
            Assert.That(File.ReadAllBytes(Path.Combine(reimported, "model.safetensors")), Is.EqualTo(File.ReadAllBytes(Path.Combine(_model, "model.safetensors"))));
        });
    }

    [Test]
    public async Task Export_with_an_unknown_format_is_a_usage_error_naming_the_option()
    {
        CliRun run = await CliFixtures.RunAsync("export-llama2c", _model, Path.Combine(_dir, "never.bin"), "--format", "gguf");

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.Error, Does.Contain("--format").And.Contain("gguf"));
        Assert.That(File.Exists(Path.Combine(_dir, "never.bin")), Is.False);
    }

    [Test]
    public async Task Import_with_a_bad_dtype_is_a_usage_error()
    {
        CliRun run = await CliFixtures.RunAsync("import-llama2c", _bin, Path.Combine(_dir, "bad"), "--dtype", "q4");

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.Error, Does.Contain("--dtype").And.Contain("q4"));
    }

    [Test]
    public async Task Import_of_a_missing_file_fails_with_one_line_and_no_stack_trace()
    {
        string missing = Path.Combine(_dir, "missing.bin");
        CliRun run = await CliFixtures.RunAsync("import-llama2c", missing, Path.Combine(_dir, "none"));

        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.ErrorLines, Has.Length.EqualTo(1));
        Assert.That(run.Error, Does.Contain(missing).And.Not.Contain("   at "));
    }

    [Test]
    public async Task Verbose_failure_prints_the_stack_trace()
    {
        string missing = Path.Combine(_dir, "missing.bin");
        CliRun run = await CliFixtures.RunAsync("import-llama2c", missing, Path.Combine(_dir, "none"), "--verbose");

        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.Error, Does.Contain(missing).And.Contain("   at "));
        Assert.That(run.ErrorLines, Has.Length.GreaterThan(1));
    }
}
