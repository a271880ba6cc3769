using System.Text.Json;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Training.Data;

namespace ModelSurgery.Tests.Cli;

public sealed class TokenizeCommandTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("tokenize-cli").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task Tokenize_writes_the_token_file_and_its_description()
    {
        string text = Path.Combine(_dir, "a.txt");
        File.WriteAllText(text, "Once upon a time there was a cat.");
        string jsonl = Path.Combine(_dir, "b.jsonl");
        File.WriteAllLines(jsonl, ["{\"body\":\"The dog ran.\"}", "{\"body\":\"It sat down.\"}"]);
        string output = Path.Combine(_dir, "out", "tokens.bin");

        (int code, string stdout, string error) = await CliRunner.RunAsync(
            ["tokenize", "--tokenizer", "gpt2", "--in", text, jsonl, "--out", output, "--val-fraction", "0.2", "--field", "body"]);
        Assert.That(code, Is.Zero, error);
        Assert.That(stdout, Does.Contain("3 documents"));

        ModelTokenizer gpt2 = TokenizerFiles.Load("gpt2");
        int[] expected =
        [
            .. gpt2.Encode("Once upon a time there was a cat."), 50256,
            .. gpt2.Encode("The dog ran."), 50256,
            .. gpt2.Encode("It sat down."),
        ];
        using TokenFile file = TokenFile.Open(output);
        TokenFileInfo info = TokenFileInfo.TryLoad(output)!;
        Assert.Multiple(() =>
        {
            Assert.That(file.Read(0, (int)file.Count), Is.EqualTo(expected.Select(i => (long)i)));
            Assert.That(file.SeparatorId, Is.EqualTo(50256), "gpt2's <|endoftext|>");
            Assert.That(info.Tokens, Is.EqualTo(file.Count));
            Assert.That(info.Documents, Is.EqualTo(3));
            Assert.That(info.VocabSize, Is.EqualTo(50257));
            Assert.That(info.ValidationFraction, Is.EqualTo(0.2));
            Assert.That(JsonDocument.Parse(File.ReadAllText(output + ".json")).RootElement.GetProperty("split_seed").GetUInt64(), Is.EqualTo(TokenFileInfo.DefaultSplitSeed));
        });
    }

    [Test]
    public async Task Bad_tokenize_options_are_usage_errors()
    {
        string text = Path.Combine(_dir, "a.txt");
        File.WriteAllText(text, "hello");
        (int code, _, _) = await CliRunner.RunAsync(["tokenize", "--tokenizer", "gpt2", "--in", text, "--out", Path.Combine(_dir, "t.bin"), "--val-fraction", "1"]);
        Assert.That(code, Is.EqualTo(2));
        (code, _, _) = await CliRunner.RunAsync(["tokenize", "--tokenizer", "gpt2", "--out", Path.Combine(_dir, "t.bin")]);
        Assert.That(code, Is.EqualTo(2), "--in is required");
    }

    [Test]
    public async Task A_missing_input_fails_with_one_line()
    {
        (int code, _, string error) = await CliRunner.RunAsync(["tokenize", "--tokenizer", "gpt2", "--in", Path.Combine(_dir, "none.txt"), "--out", Path.Combine(_dir, "t.bin")]);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(error.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(error, Does.Contain("none.txt"));
    }

    [Test]
    public async Task Perplexity_reads_a_packed_token_file_like_the_same_ids_as_text()
    {
        string model = await TrainCliSupport.SaveModelAsync(Path.Combine(_dir, "model"), seed: 5);
        string packed = TrainCliSupport.WriteTokens(_dir);
        long[] ids;
        using (TokenFile file = TokenFile.Open(packed))
        {
            ids = file.Read(0, 100);
        }

        using (var writer = new TokenFileWriter(Path.Combine(_dir, "short.bin"), TrainCliSupport.Vocab, 63))
        {
            writer.AppendDocument([.. ids.Select(i => (int)i)]);
            writer.Complete();
        }

        string text = Path.Combine(_dir, "short.txt");
        File.WriteAllText(text, string.Join(' ', ids));
        string[] common = ["perplexity", "--model", model, "--context", "32", "--device", "cpu", "--tokens"];
        (int code, string fromPacked, string error) = await CliRunner.RunAsync([.. common, Path.Combine(_dir, "short.bin")]);
        Assert.That(code, Is.Zero, error);
        (code, string fromText, error) = await CliRunner.RunAsync([.. common, text]);
        Assert.That(code, Is.Zero, error);
        Assert.That(fromPacked, Does.StartWith("perplexity "));
        Assert.That(fromPacked, Is.EqualTo(fromText));
    }
}
