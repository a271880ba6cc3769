using System.Globalization;
using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Tests.Vocabulary;

namespace ModelSurgery.Tests.Cli;

/// <summary>
/// Every model folder a command writes carries a tokenizer, so the commands that take a model and text (tokenize,
/// generate --prompt, eval, perplexity on a tokenized file) accept it straight away.
/// </summary>
public sealed class TokenizerTravelsTests
{
    private const string ChatTemplate = "{% for m in messages %}{{ m['content'] }}{% endfor %}";

    private string _dir = null!;

    [OneTimeSetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("tokenizer-travels").FullName;

    [OneTimeTearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task Every_written_model_folder_carries_the_tokenizer_and_works_with_text()
    {
        // The teacher's tokenizer: tokenizer.json plus a config with its special tokens and a chat template.
        string tokenizer = Path.Combine(_dir, "tokenizer");
        Directory.CreateDirectory(tokenizer);
        CliFixtures.WriteAsciiTokenizer(tokenizer);
        var tokenizerConfig = new JsonObject { ["bos_token"] = "<s>", ["chat_template"] = ChatTemplate, ["tokenizer_class"] = "PreTrainedTokenizerFast" };
        File.WriteAllText(Path.Combine(tokenizer, "tokenizer_config.json"), tokenizerConfig.ToJsonString());

        string config = CliFixtures.WriteTinyConfig(_dir);
        string teacher = Path.Combine(_dir, "teacher");
        await CliFixtures.RunOkAsync("synth", "--like", config, "--dtype", "f32", "--seed", "3", "--tokenizer", tokenizer, "--out", teacher);

        string corpus = Path.Combine(_dir, "corpus.jsonl");
        File.WriteAllLines(corpus, Enumerable.Range(0, 40).Select(i => new JsonObject { ["text"] = string.Create(CultureInfo.InvariantCulture, $"The cat {i} sat on the mat; the dog ran after it {i % 7} times.") }.ToJsonString()));
        string tokens = Path.Combine(_dir, "corpus.tokens");
        await CliFixtures.RunOkAsync("tokenize", "--tokenizer", teacher, "--in", corpus, "--out", tokens, "--separator-id", CliFixtures.AsciiBos.ToString(CultureInfo.InvariantCulture), "--val-fraction", "0.2");

        string pruned = Path.Combine(_dir, "pruned");
        await CliFixtures.RunOkAsync("prune", "--model", teacher, "--tokens", tokens, "--sequences", "4", "--length", "16", "--layers", "1", "--heads-per-group", "1", "--neuron-fraction", "0.5", "--out", pruned);

        string[] fast = ["--steps", "2", "--batch-size", "2", "--seq-len", "16", "--eval-every", "0", "--device", "cpu"];
        string trained = Path.Combine(_dir, "trained");
        await CliFixtures.RunOkAsync(["train", "--model", pruned, "--data", tokens, "--out", trained, "--checkpoint-every", "1", .. fast]);
        string distilled = Path.Combine(_dir, "distilled");
        await CliFixtures.RunOkAsync(["distill", "--student", pruned, "--teacher", teacher, "--data", tokens, "--out", distilled, .. fast]);

        string imported = Path.Combine(_dir, "imported");
        await CliFixtures.RunOkAsync("import-llama2c", CliFixtures.Stories260KPath, imported, "--tokenizer", tokenizer);

        // Vocabulary compression needs a tokenizer with merges to shrink: a GPT-2 subset.
        string gpt2Teacher = Path.Combine(_dir, "gpt2-teacher");
        using (await TinyTokenizedModel.SaveAsync(gpt2Teacher))
        {
            File.WriteAllText(Path.Combine(gpt2Teacher, "tokenizer_config.json"), new JsonObject { ["bos_token"] = "<|endoftext|>", ["chat_template"] = ChatTemplate }.ToJsonString());
        }

        string compressed = Path.Combine(_dir, "compressed");
        await CliFixtures.RunOkAsync("vocab", "compress", "--model", gpt2Teacher, "--corpus", TinyTokenizedModel.WriteCorpus(_dir), "--coverage", "0.9", "--out", compressed);

        (string Folder, string Bos)[] folders =
        [
            (teacher, "<s>"), (pruned, "<s>"), (Path.Combine(trained, "checkpoints", "final"), "<s>"), (Path.Combine(trained, "checkpoints", "last"), "<s>"),
            (Path.Combine(distilled, "checkpoints", "final"), "<s>"), (imported, "<s>"), (compressed, "<|endoftext|>"),
        ];
        string text = Path.Combine(_dir, "heldout.txt");
        File.WriteAllText(text, "The dog sat on the cat.");
        foreach ((string folder, string bos) in folders)
        {
            string name = Path.GetRelativePath(_dir, folder);
            Assert.That(File.Exists(Path.Combine(folder, "tokenizer.json")), $"{name}: tokenizer.json");
            var written = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "tokenizer_config.json")))!.AsObject();
            Assert.That((string?)written["chat_template"], Is.EqualTo(ChatTemplate), $"{name}: the chat template travels");
            Assert.That((string?)written["bos_token"], Is.EqualTo(bos), $"{name}: special tokens travel");

            CliRun tokenized = await CliFixtures.RunOkAsync("tokenize", "--tokenizer", folder, "--in", text, "--out", Path.Combine(_dir, name.Replace('/', '-') + ".tokens"), "--separator-id", "0");
            Assert.That(tokenized.ExitCode, Is.Zero);
            CliRun generated = await CliFixtures.RunOkAsync("generate", "--model", folder, "--prompt", "The cat", "--max-new-tokens", "3", "--ids", "--device", "cpu");
            Assert.That(generated.Output.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), Has.Length.EqualTo(3), name);
            CliRun evaluated = await CliFixtures.RunOkAsync("eval", "--model", folder, "--perplexity", text, "--device", "cpu");
            Assert.That(evaluated.Output, Does.Contain("heldout"), name);
        }

        // The compressed folder's tokenizer is the compressed one: its ids fit the compressed model.
        int size = TokenizerFiles.Load(compressed).VocabularySize;
        Assert.That(size, Is.LessThan(TinyTokenizedModel.VocabSize));
    }

    [Test]
    public void A_tiktoken_vocabulary_is_written_as_tokenizer_json_with_a_config_naming_the_special_tokens()
    {
        string model = Path.Combine(_dir, "from-gpt2");
        var config = new LlamaConfig { VocabSize = 50257, BosTokenId = 50256, EosTokenIds = [50256], MaxPositionEmbeddings = 128 };

        Assert.That(ModelFolderTokenizer.CopyInto("gpt2", model, config), Is.True);

        var written = JsonNode.Parse(File.ReadAllText(Path.Combine(model, "tokenizer_config.json")))!.AsObject();
        Assert.That((string?)written["eos_token"], Is.EqualTo("<|endoftext|>"));
        Assert.That((string?)written["added_tokens_decoder"]!["50256"]!["content"], Is.EqualTo("<|endoftext|>"));
        Assert.That((int?)written["model_max_length"], Is.EqualTo(128));
        int[] ids = [.. TokenizerFiles.Load(model).Encode("Hello world")];
        Assert.That(ids, Is.EqualTo(TokenizerFiles.Load("gpt2").Encode("Hello world")));
    }

    [Test]
    public void A_folder_without_a_tokenizer_copies_nothing_and_says_so()
    {
        string empty = Path.Combine(_dir, "empty");
        Directory.CreateDirectory(empty);
        Assert.That(ModelFolderTokenizer.CopyInto(empty, Path.Combine(_dir, "nothing")), Is.False);
        Assert.That(Directory.GetFiles(Path.Combine(_dir, "nothing")), Is.Empty);
    }
}
