using System.Text;
using System.Text.Json;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Samples;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Tests.Checkpoints;
using ModelSurgery.Tests.Vocabulary;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Tests.Training;

public sealed class PreparedCorpusTests
{
    private static string WriteCorpus(string directory, int documents)
    {
        string path = Path.Combine(directory, "corpus.jsonl");
        string[] texts = [.. VocabularyTestText.Documents()];
        File.WriteAllLines(path, Enumerable.Range(0, documents).Select(i => JsonSerializer.Serialize(new Dictionary<string, string> { ["id"] = $"d{i}", ["text"] = texts[i % texts.Length] })));
        return path;
    }

    [Test]
    public void Split_holds_out_the_last_document_of_every_group_and_counts_training_bytes()
    {
        using var directory = new TempDirectory();
        string corpus = WriteCorpus(directory.Path, 25);
        File.AppendAllText(corpus, "\n   \n");

        var split = CorpusSplit.Create(corpus, Path.Combine(directory.Path, "out"), holdOutEvery: 5);

        string[] heldOutIds = [.. File.ReadLines(split.HeldOutPath).Where(l => l.Length > 0).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("id").GetString()!)];
        string[] trainLines = [.. File.ReadLines(split.TrainPath).Where(l => l.Length > 0)];
        Assert.That(heldOutIds, Is.EqualTo(new[] { "d4", "d9", "d14", "d19", "d24" }));
        Assert.That(trainLines, Has.Length.EqualTo(20));
        Assert.That((split.TrainDocuments, split.HeldOutDocuments), Is.EqualTo((20, 5)));
        long expectedBytes = trainLines.Sum(l => (long)Encoding.UTF8.GetByteCount(JsonDocument.Parse(l).RootElement.GetProperty("text").GetString()!));
        Assert.That(split.TrainTextBytes, Is.EqualTo(expectedBytes));

        var limited = CorpusSplit.Create(corpus, Path.Combine(directory.Path, "limited"), holdOutEvery: 5, maxDocuments: 10);
        Assert.That((limited.TrainDocuments, limited.HeldOutDocuments), Is.EqualTo((8, 2)));
    }

    [Test]
    public void Split_names_the_line_at_fault_and_refuses_an_empty_part()
    {
        using var directory = new TempDirectory();
        string corpus = WriteCorpus(directory.Path, 3);
        File.AppendAllText(corpus, "{\"body\": \"no text field\"}\n");
        Assert.That(() => CorpusSplit.Create(corpus, directory.Path), Throws.InstanceOf<InvalidDataException>().With.Message.Contains(":4:").And.Message.Contains("'text'"));

        string small = WriteCorpus(Path.Combine(directory.Path), 3);
        Assert.That(() => CorpusSplit.Create(small, directory.Path, holdOutEvery: 10), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("0 held out"));
        Assert.That(() => CorpusSplit.Create(Path.Combine(directory.Path, "missing.jsonl"), directory.Path), Throws.InstanceOf<FileNotFoundException>());
    }

    [Test]
    public void First_documents_are_copied_without_blank_lines()
    {
        using var directory = new TempDirectory();
        string source = directory.File("source.jsonl");
        File.WriteAllLines(source, ["{\"text\":\"a\"}", "", "{\"text\":\"b\"}", "{\"text\":\"c\"}"]);
        string destination = directory.File("sub/first.jsonl");

        Assert.That(CorpusSplit.WriteFirstDocuments(source, destination, 2), Is.EqualTo(2));
        Assert.That(File.ReadAllLines(destination), Is.EqualTo(new[] { "{\"text\":\"a\"}", "{\"text\":\"b\"}" }));
        Assert.That(CorpusSplit.WriteFirstDocuments(source, destination, 10), Is.EqualTo(3));
    }

    [Test]
    public async Task Prepare_compresses_gpt2_tokenizes_both_parts_and_reports_tokens_per_byte()
    {
        using var directory = new TempDirectory();
        var split = CorpusSplit.Create(WriteCorpus(directory.Path, 36), Path.Combine(directory.Path, "data"), holdOutEvery: 6);
        VocabularyStatistics statistics = await PreparedCorpus.CountTokensAsync(split);
        Assert.That(statistics.VocabSize, Is.EqualTo(50257));

        using PreparedCorpus corpus = await PreparedCorpus.PrepareAsync(
            split, statistics, new CorpusPreparationOptions { VocabSize = 400, SeqLen = 16, SampleTokens = 64 }, Path.Combine(directory.Path, "data"));

        Assert.That(corpus.Map.NewVocabSize, Is.EqualTo(400));
        Assert.That(corpus.Map.OldId(corpus.SeparatorId), Is.EqualTo(50256), "the separator is GPT-2's <|endoftext|>");
        Assert.That(corpus.Tokens.Count, Is.GreaterThan(corpus.TrainTokens));
        Assert.That(corpus.TrainSample, Has.Count.EqualTo(64));
        Assert.That(corpus.TrainWindows.Max() * 16 + 17, Is.LessThanOrEqualTo(corpus.TrainTokens));
        Assert.That(corpus.ValidationWindows.Min() * 16, Is.GreaterThanOrEqualTo(corpus.TrainTokens));
        Assert.That(corpus.TokensPerByte, Is.EqualTo((double)corpus.TrainTokens / split.TrainTextBytes));
        Assert.That(corpus.TokensPerByte, Is.InRange(0.1, 1.0), "English in byte-level BPE: a few bytes per token");
        TrainingData data = corpus.TrainingData(shuffle: false);
        Assert.That((data.TrainWindows, data.ValidationWindows, data.ShuffleTrain), Is.EqualTo((corpus.TrainWindows, corpus.ValidationWindows, false)));

        // The token file's description records where the held-out part starts: a run on the file splits it the same way.
        Assert.That(TokenFileInfo.TryLoad(corpus.Tokens.Path)!.ValidationStartToken, Is.EqualTo(corpus.TrainTokens));
        TrainingData opened = CheckpointTraining.OpenData(corpus.Tokens, 16);
        Assert.That((opened.TrainWindows, opened.ValidationWindows), Is.EqualTo((corpus.TrainWindows, corpus.ValidationWindows)));

        LlamaConfig config = corpus.ModelConfig(layers: 2, hidden: 32, heads: 4, kvHeads: 2, ffn: 64);
        Assert.That((config.VocabSize, config.MaxPositionEmbeddings, config.BosTokenId, config.EosTokenIds.Single()),
            Is.EqualTo((400, 16, corpus.SeparatorId, corpus.SeparatorId)), "sized for the corpus, the separator as BOS and EOS");
        Assert.That((config.NumHiddenLayers, config.HiddenSize, config.NumAttentionHeads, config.NumKeyValueHeads, config.IntermediateSize, config.HeadDim),
            Is.EqualTo((2, 32, 4, 2, 64, 8)));
        Assert.That((config.TieWordEmbeddings, config.TorchDtype), Is.EqualTo((true, "float32")));

        // A smaller vocabulary needs more tokens for the same text.
        using PreparedCorpus smaller = await PreparedCorpus.PrepareAsync(
            split, statistics, new CorpusPreparationOptions { VocabSize = 300, SeqLen = 16 }, Path.Combine(directory.Path, "data-300"));
        Assert.That(smaller.TokensPerByte, Is.GreaterThan(corpus.TokensPerByte));
    }

    [Test]
    public void Preparation_options_name_the_bad_option()
    {
        Assert.That(() => new CorpusPreparationOptions { VocabSize = 1, SeqLen = 8 }.Validate(), Throws.ArgumentException.With.Message.Contains("VocabSize"));
        Assert.That(() => new CorpusPreparationOptions { VocabSize = 10, SeqLen = 0 }.Validate(), Throws.ArgumentException.With.Message.Contains("SeqLen"));
        Assert.That(() => new CorpusPreparationOptions { VocabSize = 10, SeqLen = 8, SampleTokens = 0 }.Validate(), Throws.ArgumentException.With.Message.Contains("SampleTokens"));
    }
}
