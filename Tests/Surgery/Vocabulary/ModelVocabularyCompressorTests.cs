using System.Text.Json.Nodes;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery.Vocabulary;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Vocabulary;

public sealed class ModelVocabularyCompressorTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("model-vocab").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [TestCase(false)]
    [TestCase(true)]
    public async Task Keeping_every_token_reproduces_the_model_byte_for_byte(bool tied)
    {
        string teacherDir = Path.Combine(_dir, "teacher"), outDir = Path.Combine(_dir, "out");
        using LlamaForCausalLM teacher = await TinyTokenizedModel.SaveAsync(teacherDir, tied);
        string corpus = TinyTokenizedModel.WriteCorpus(_dir);

        ModelCompressionResult result = await ModelVocabularyCompressor.CompressAsync(teacherDir, [corpus], CompressionTarget.Keep(TinyTokenizedModel.VocabSize), outDir);

        Assert.That(result.Map.KeptOldIds, Is.EqualTo(Enumerable.Range(0, TinyTokenizedModel.VocabSize)));
        using CheckpointReader original = CheckpointReader.Open(teacherDir), compressed = CheckpointReader.Open(outDir);
        Assert.That(compressed.TensorNames, Is.EquivalentTo(original.TensorNames));
        foreach (string name in original.TensorNames)
        {
            SafetensorsTensorInfo a = original.GetInfo(name), b = compressed.GetInfo(name);
            Assert.That((b.DType, b.Shape), Is.EqualTo((a.DType, a.Shape)), name);
            byte[] x = new byte[a.ByteLength], y = new byte[b.ByteLength];
            original.ReadBytes(name, 0, x);
            compressed.ReadBytes(name, 0, y);
            Assert.That(y, Is.EqualTo(x), name);
        }

        LlamaConfig config = LlamaConfig.Load(Path.Combine(outDir, "config.json"));
        Assert.That((config.VocabSize, config.BosTokenId, config.EosTokenIds.Single()), Is.EqualTo((TinyTokenizedModel.VocabSize, TinyTokenizedModel.EndOfText, TinyTokenizedModel.EndOfText)));
        string text = string.Join("\n", VocabularyTestText.HeldOut);
        Assert.That(TokenizerFiles.Load(outDir).Encode(text), Is.EqualTo(TokenizerFiles.Load(teacherDir).Encode(text)));
        Assert.That(result.After, Is.EqualTo(result.Before));
    }

    [TestCase(false, 1)]
    [TestCase(true, 64)]
    public async Task Compressed_model_gives_the_teacher_logits_on_kept_ids_and_renumbers_special_tokens(bool tied, int padMultiple)
    {
        string teacherDir = Path.Combine(_dir, "teacher"), outDir = Path.Combine(_dir, "out");
        using LlamaForCausalLM teacher = await TinyTokenizedModel.SaveAsync(teacherDir, tied);
        string corpus = TinyTokenizedModel.WriteCorpus(_dir, field: "body");

        ModelCompressionResult result = await ModelVocabularyCompressor.CompressAsync(teacherDir, [corpus], CompressionTarget.Cover(0.95), outDir,
            new ModelCompressionOptions { JsonlField = "body", PadVocabToMultiple = padMultiple });
        VocabularyMap map = result.Map;
        Assert.That(map.NewVocabSize, Is.LessThan(TinyTokenizedModel.VocabSize / 2), "the small corpus needs far fewer tokens");
        Assert.That(result.Selection.Coverage, Is.GreaterThanOrEqualTo(0.95));
        Assert.That(VocabularyMap.Load(Path.Combine(outDir, "vocab_map.json")).KeptOldIds, Is.EqualTo(map.KeptOldIds));
        Assert.That(File.Exists(result.StatisticsPath) && File.Exists(result.ChartPath), Is.True);

        // Special tokens: <|endoftext|> is kept (last, as before) and config.json / generation_config.json say so.
        int newEnd = map.NewVocabSize - 1;
        Assert.That(map.OldId(newEnd), Is.EqualTo(TinyTokenizedModel.EndOfText));
        LlamaConfig config = LlamaConfig.Load(Path.Combine(outDir, "config.json"));
        int expectedVocab = (map.NewVocabSize + padMultiple - 1) / padMultiple * padMultiple;
        Assert.That((config.VocabSize, config.BosTokenId, config.EosTokenIds.Single()), Is.EqualTo((expectedVocab, newEnd, newEnd)));
        var generation = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, GenerationConfigFile.FileName)))!;
        Assert.That((generation["bos_token_id"]!.GetValue<int>(), generation["eos_token_id"]!.GetValue<int>()), Is.EqualTo((newEnd, newEnd)));
        Assert.That(result.After.EmbeddingShare, Is.LessThan(result.Before.EmbeddingShare));
        Assert.That(result.After.Total, Is.EqualTo(LlamaTensorLayout.CountParameters(config).Total));

        // Text made of kept tokens (the corpus) gives the same logits over kept ids; padding rows are zero.
        using LlamaForCausalLM student = ModelCheckpoint.Load(outDir, new ModelLoadOptions { Device = "cpu" });
        ModelTokenizer tokenizer = TokenizerFiles.Load(outDir);
        int[] ids = [.. tokenizer.Encode(VocabularyTestText.Documents().First()).Take(48)];
        Assert.That(ids.Distinct().Count(), Is.GreaterThan(20));
        Assert.That(TinyTokenizedModel.MaxKeptLogitDifference(teacher, student, map, ids), Is.LessThan(1e-5));
        using (no_grad())
        {
            Tensor padding = student.HeadWeight.narrow(0, map.NewVocabSize, expectedVocab - map.NewVocabSize); // [P, D]
            Assert.That(padding.count_nonzero().item<long>(), Is.Zero);
        }
    }

    [Test]
    public async Task Target_below_the_required_tokens_fails_and_leaves_no_model()
    {
        string teacherDir = Path.Combine(_dir, "teacher"), outDir = Path.Combine(_dir, "out");
        using LlamaForCausalLM teacher = await TinyTokenizedModel.SaveAsync(teacherDir);
        string corpus = TinyTokenizedModel.WriteCorpus(_dir);

        // 256 byte tokens and <|endoftext|> must stay.
        Assert.That(async () => await ModelVocabularyCompressor.CompressAsync(teacherDir, [corpus], CompressionTarget.Keep(100), outDir),
            Throws.ArgumentException.With.Message.Contains("257"));
        Assert.That(Directory.EnumerateFileSystemEntries(outDir), Is.Empty);
    }

    [Test]
    public async Task Bad_padding_or_writing_over_the_model_is_refused_before_anything_is_written()
    {
        string teacherDir = Path.Combine(_dir, "teacher");
        using LlamaForCausalLM teacher = await TinyTokenizedModel.SaveAsync(teacherDir);
        string corpus = TinyTokenizedModel.WriteCorpus(_dir);
        string[] before = [.. Directory.EnumerateFiles(teacherDir)];

        Assert.That(async () => await ModelVocabularyCompressor.CompressAsync(teacherDir, [corpus], CompressionTarget.Keep(500), Path.Combine(_dir, "out"),
            new ModelCompressionOptions { PadVocabToMultiple = 0 }), Throws.ArgumentException.With.Message.Contains("PadVocabToMultiple"));
        Assert.That(async () => await ModelVocabularyCompressor.CompressAsync(teacherDir, [corpus], CompressionTarget.Keep(500), teacherDir + Path.DirectorySeparatorChar),
            Throws.ArgumentException.With.Message.Contains("must differ from the model folder"));
        Assert.That(Directory.Exists(Path.Combine(_dir, "out")), Is.False);
        Assert.That(Directory.EnumerateFiles(teacherDir), Is.EquivalentTo(before));
    }
}
