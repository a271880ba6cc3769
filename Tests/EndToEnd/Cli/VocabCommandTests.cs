using System.Globalization;
using ModelSurgery.Cli;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Tests.Modeling;
using ModelSurgery.Tests.Vocabulary;

namespace ModelSurgery.Tests.Cli;

public sealed class VocabCommandTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("cli-vocab").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static async Task<(int Code, string Output, string Error)> RunAsync(params string[] args)
    {
        using var output = new StringWriter(CultureInfo.InvariantCulture);
        using var error = new StringWriter(CultureInfo.InvariantCulture);
        int code = await Program.RunAsync(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public async Task Stats_prints_the_size_for_each_coverage_and_writes_json_and_chart()
    {
        string modelDir = Path.Combine(_dir, "model");
        using LlamaForCausalLM model = await TinyTokenizedModel.SaveAsync(modelDir);
        string corpus = TinyTokenizedModel.WriteCorpus(_dir, field: "body");
        string stats = Path.Combine(_dir, "stats.json"), chart = Path.Combine(_dir, "coverage.png");

        var (code, output, error) = await RunAsync("vocab", "stats", "--tokenizer", modelDir, "--corpus", corpus, "--field", "body", "--model", modelDir, "--out", stats, "--plot", chart);

        Assert.That(code, Is.EqualTo(ExitCodes.Success), error);
        VocabularyStatistics statistics = VocabularyStatistics.Load(stats);
        Assert.That(statistics.VocabSize, Is.EqualTo(TinyTokenizedModel.VocabSize));
        Assert.That(File.Exists(chart), Is.True);
        Assert.That(output, Does.Contain(string.Create(CultureInfo.InvariantCulture, $"tokens {statistics.TotalTokens:N0} in")));
        Assert.That(output, Does.Contain("MB/s"));
        LlamaConfig config = TinyTokenizedModel.Config(tied: false);
        foreach (double coverage in new[] { 0.90, 0.95, 0.9786, 0.98, 0.99 })
        {
            int size = statistics.SizeForCoverage(coverage);
            double share = LlamaTensorLayout.CountParameters(config with { VocabSize = size }).EmbeddingShare;
            Assert.That(output, Does.Contain(string.Create(CultureInfo.InvariantCulture, $"coverage {coverage * 100:0.##}%: {size:N0} tokens, embedding + head share {share * 100:F2}%")));
        }
    }

    [Test]
    public async Task Compress_writes_a_loadable_model_whose_tokenizer_and_logits_agree_with_the_teacher()
    {
        string teacherDir = Path.Combine(_dir, "teacher"), outDir = Path.Combine(_dir, "out");
        using LlamaForCausalLM teacher = await TinyTokenizedModel.SaveAsync(teacherDir);
        string corpus = TinyTokenizedModel.WriteCorpus(_dir);

        var (code, output, error) = await RunAsync("vocab", "compress", "--model", teacherDir, "--corpus", corpus, "--coverage", "0.98", "--pad-to-multiple", "8", "--out", outDir);

        Assert.That(code, Is.EqualTo(ExitCodes.Success), error);
        VocabularyMap map = VocabularyMap.Load(Path.Combine(outDir, VocabularyCompressor.MapFileName));
        Assert.That(output, Does.Contain(string.Create(CultureInfo.InvariantCulture, $"vocabulary {TinyTokenizedModel.VocabSize:N0} -> {map.NewVocabSize:N0} tokens")));
        Assert.That(output, Does.Contain("coverage 9").And.Contain("embedding + head share"));
        using LlamaForCausalLM student = ModelCheckpoint.Load(outDir, new ModelLoadOptions { Device = "cpu" });
        Assert.That(student.Config.VocabSize % 8, Is.Zero);
        Assert.That(student.Config.VocabSize, Is.InRange(map.NewVocabSize, map.NewVocabSize + 7));

        // The compressed tokenizer round-trips held-out text with new ids only, and each maps back to the same text.
        ModelTokenizer compressed = TokenizerFiles.Load(outDir), original = TokenizerFiles.Load(teacherDir);
        foreach (string text in VocabularyTestText.HeldOut)
        {
            int[] ids = compressed.Encode(text);
            Assert.That(ids, Has.All.InRange(0, map.NewVocabSize - 1));
            Assert.That(compressed.Decode(ids), Is.EqualTo(text));
            Assert.That(original.Decode(ids.Select(map.OldId)), Is.EqualTo(text));
        }

        // vocab_map.json says which teacher token each new id is.
        foreach (int newId in new[] { 0, 100, map.NewVocabSize - 1 })
        {
            Assert.That(compressed.Decode([newId]), Is.EqualTo(original.Decode([map.OldId(newId)])));
        }

        int[] corpusIds = [.. compressed.Encode(VocabularyTestText.Corpus()).Take(64)];
        Assert.That(TinyTokenizedModel.MaxKeptLogitDifference(teacher, student, map, corpusIds), Is.LessThan(1e-5));
    }

    [Test]
    public async Task Compress_takes_the_tokenizer_from_tokenizer_option_when_the_model_folder_has_none()
    {
        string teacherDir = Path.Combine(_dir, "teacher"), outDir = Path.Combine(_dir, "out");
        using LlamaForCausalLM teacher = await TinyTokenizedModel.SaveAsync(teacherDir);
        string tokenizerFile = Path.Combine(_dir, "tokenizer.json");
        File.Move(Path.Combine(teacherDir, "tokenizer.json"), tokenizerFile);
        string corpus = TinyTokenizedModel.WriteCorpus(_dir);

        var (code, output, error) = await RunAsync("vocab", "compress", "--model", teacherDir, "--tokenizer", tokenizerFile, "--corpus", corpus, "--keep", "400", "--out", outDir);

        Assert.That(code, Is.EqualTo(ExitCodes.Success), error);
        Assert.That(output, Does.Contain("-> 400 tokens"));
        Assert.That(LlamaConfig.Load(Path.Combine(outDir, "config.json")).VocabSize, Is.EqualTo(400));
        Assert.That(TokenizerFiles.Load(outDir).Encode(VocabularyTestText.HeldOut[0]), Has.All.LessThan(400));
    }

    [Test]
    public async Task Compress_with_the_built_in_gpt2_writes_a_folder_that_tokenize_and_generate_read()
    {
        string teacherDir = Path.Combine(_dir, "teacher"), outDir = Path.Combine(_dir, "out");
        LlamaConfig config = TinyModels.Config(tied: false) with { VocabSize = 50257, BosTokenId = 50256, EosTokenIds = [50256] };
        using (LlamaForCausalLM teacher = TinyModels.Create(config, seed: 3))
        {
            await ModelCheckpoint.SaveAsync(teacher, teacherDir);
        }

        string corpus = TinyTokenizedModel.WriteCorpus(_dir);
        var (code, _, error) = await RunAsync("vocab", "compress", "--model", teacherDir, "--tokenizer", "gpt2", "--corpus", corpus, "--keep", "600", "--out", outDir);
        Assert.That(code, Is.EqualTo(ExitCodes.Success), error);
        Assert.That(File.Exists(Path.Combine(outDir, "tokenizer.json")), Is.True);
        Assert.That(File.Exists(Path.Combine(outDir, "tokenizer_config.json")), Is.True);

        // tokenize reads the folder: ids are the compressed ones, and <|endoftext|> (new id 599) separates documents.
        string text = Path.Combine(_dir, "in.txt"), tokens = Path.Combine(_dir, "tokens.bin");
        await File.WriteAllTextAsync(text, VocabularyTestText.HeldOut[0]);
        (code, _, error) = await RunAsync("tokenize", "--tokenizer", outDir, "--in", text, "--out", tokens, "--val-fraction", "0");
        Assert.That(code, Is.EqualTo(ExitCodes.Success), error);
        Assert.That(File.Exists(tokens), Is.True);

        // generate encodes the prompt with the folder's tokenizer; the continuation uses the compressed vocabulary.
        (code, string output, error) = await RunAsync("generate", "--model", outDir, "--prompt", "The river", "--max-new-tokens", "4", "--ids");
        Assert.That(code, Is.EqualTo(ExitCodes.Success), error);
        int[] generated = [.. output.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse)];
        Assert.That(generated, Has.Length.EqualTo(4).And.All.InRange(0, 599));
    }

    [TestCase("--keep", "300", "--coverage", "0.9")]
    [TestCase]
    public async Task Compress_needs_exactly_one_of_keep_and_coverage(params string[] target)
    {
        string corpus = Path.Combine(_dir, "corpus.txt");
        await File.WriteAllTextAsync(corpus, "text");
        var (code, _, error) = await RunAsync(["vocab", "compress", "--model", _dir, "--corpus", corpus, .. target, "--out", Path.Combine(_dir, "out")]);

        Assert.That(code, Is.EqualTo(ExitCodes.Usage));
        Assert.That(error, Does.Contain("--keep").And.Contain("--coverage"));
        Assert.That(Directory.Exists(Path.Combine(_dir, "out")), Is.False);
    }
}
