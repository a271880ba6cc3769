// Expected values read best inline next to the assertion.
#pragma warning disable CA1861

using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.IO;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery.Vocabulary;

namespace ModelSurgery.Tests.Vocabulary;

public sealed class TokenFrequencyCounterTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("vocab-stats").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static readonly LlamaConfig TinyConfig = new()
    {
        VocabSize = 4, HiddenSize = 8, IntermediateSize = 16, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 1,
    };

    [Test]
    public void Parallel_counts_over_text_and_jsonl_files_equal_a_sequential_count()
    {
        ModelTokenizer gpt2 = TokenizerFiles.Load("gpt2");
        string texts = Directory.CreateDirectory(Path.Combine(_dir, "corpus")).FullName;
        File.WriteAllText(Path.Combine(texts, "a.txt"), VocabularyTestText.Corpus());
        string[] records = [.. VocabularyTestText.Documents()];
        File.WriteAllLines(Path.Combine(texts, "b.jsonl"), records.Select(r => new JsonObject { ["id"] = 1, ["body"] = r }.ToJsonString()));

        var expected = new long[50257];
        long expectedBytes = 0;
        // Small chunks force many work items across 4 workers; the text file is cut at blank lines.
        var options = new CountingOptions { MaxDegreeOfParallelism = 4, ChunkChars = 500, VocabSize = 50257, Config = TinyConfig with { VocabSize = 50257 } };
        List<string> documents = [];
        foreach (string file in CorpusReader.ExpandPaths([texts]))
        {
            documents.AddRange(CorpusReader.ReadDocumentsAsync([file], "body", options.ChunkChars).ToBlockingEnumerable());
        }

        foreach (string document in documents)
        {
            foreach (int id in gpt2.Encode(document))
            {
                expected[id]++;
            }

            expectedBytes += System.Text.Encoding.UTF8.GetByteCount(document);
        }

        var reports = new List<CountingProgress>();
        VocabularyStatistics statistics = TokenFrequencyCounter.ComputeAsync(gpt2, [texts], "body", options, new SynchronousProgress(reports)).GetAwaiter().GetResult();

        Assert.That(documents, Has.Count.GreaterThan(records.Length + 5));
        Assert.That(statistics.Counts, Is.EqualTo(expected));
        Assert.That(statistics.TotalTokens, Is.EqualTo(expected.Sum()));
        Assert.That(statistics.TotalBytes, Is.EqualTo(expectedBytes));
        Assert.That(statistics.Documents, Is.EqualTo(documents.Count));
        Assert.That(statistics.MegabytesPerSecond, Is.GreaterThan(0));
        Assert.That(statistics.ElapsedSeconds, Is.GreaterThan(0));
        Assert.That(reports, Is.Not.Empty);
        Assert.That(reports[^1].Tokens, Is.EqualTo(statistics.TotalTokens));
        Assert.That(statistics.CoverageCurve[^1].Coverage, Is.EqualTo(1.0));
        Assert.That(statistics.CoverageCurve.Where(p => p.VocabSize > 0).All(p => p.EmbeddingShare is > 0 and < 1), Is.True);

        string json = Path.Combine(_dir, "stats.json");
        statistics.Save(json);
        VocabularyStatistics reloaded = VocabularyStatistics.Load(json);
        Assert.That(reloaded.Counts, Is.EqualTo(statistics.Counts));
        Assert.That(reloaded.MegabytesPerSecond, Is.EqualTo(statistics.MegabytesPerSecond));
        Assert.That(JsonNode.Parse(File.ReadAllText(json))!["MegabytesPerSecond"], Is.Not.Null);

        string png = Path.Combine(_dir, "coverage.png");
        statistics.SaveCoverageChart(png);
        Assert.That(new FileInfo(png).Length, Is.GreaterThan(1000));
    }

    [Test]
    public void Coverage_curve_on_hand_made_counts()
    {
        // 10 tokens: id 0 five times, id 2 three times, id 3 twice, id 1 never.
        var statistics = new VocabularyStatistics { Counts = [5, 0, 3, 2], TotalTokens = 10 };
        Assert.That(statistics.Coverage(0), Is.EqualTo(0));
        Assert.That(statistics.Coverage(1), Is.EqualTo(0.5));
        Assert.That(statistics.Coverage(2), Is.EqualTo(0.8));
        Assert.That(statistics.Coverage(3), Is.EqualTo(1.0));
        Assert.That(statistics.Coverage(4), Is.EqualTo(1.0));
        Assert.That(statistics.SizeForCoverage(0.5), Is.EqualTo(1));
        Assert.That(statistics.SizeForCoverage(0.75), Is.EqualTo(2));
        Assert.That(statistics.SizeForCoverage(1.0), Is.EqualTo(3));
        Assert.That(statistics.DistinctTokensSeen, Is.EqualTo(3));

        IReadOnlyList<CoveragePoint> curve = VocabularyStatistics.BuildCoverageCurve(statistics.Counts, TinyConfig, [1, 2, 4]);
        Assert.That(curve.Select(p => p.Coverage), Is.EqualTo(new[] { 0.5, 0.8, 1.0 }));
        // Untied embeddings: embedding k*8 + head k*8 over the total at vocab_size k.
        ParameterCount at2 = LlamaTensorLayout.CountParameters(TinyConfig with { VocabSize = 2 });
        Assert.That(curve[1].EmbeddingShare, Is.EqualTo((double)(2 * 8 + 2 * 8) / at2.Total).Within(1e-12));
        Assert.That(curve[2].EmbeddingShare, Is.GreaterThan(curve[1].EmbeddingShare));
    }

    [Test]
    public void Jsonl_field_extraction_reads_nested_fields_and_names_the_file_and_line_on_errors()
    {
        string file = Path.Combine(_dir, "docs.jsonl");
        File.WriteAllLines(file, ["""{"meta": {"text": "first"}}""", "", """{"meta": {"text": "second\nline"}}""", """{"meta": {"other": 1}}"""]);
        var documents = new List<string>();
        Assert.That(async () =>
        {
            await foreach (string document in CorpusReader.ReadDocumentsAsync([file], "meta.text"))
            {
                documents.Add(document);
            }
        }, Throws.InstanceOf<InvalidDataException>().With.Message.Contains(file).And.Message.Contains("line 4").And.Message.Contains("meta.text"));
        Assert.That(documents, Is.EqualTo(new[] { "first", "second\nline" }));

        Assert.That(() => CorpusReader.ExtractField("{\"text\": 3}", ["text"], "x.jsonl", 7),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("x.jsonl: line 7").And.Message.Contains("Number"));
        Assert.That(() => CorpusReader.ExtractField("not json", ["text"], "x.jsonl", 2),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("x.jsonl: line 2"));
    }

    [Test]
    public void Paths_expand_folders_and_globs()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "a", "b"));
        File.WriteAllText(Path.Combine(_dir, "a", "one.txt"), "1");
        File.WriteAllText(Path.Combine(_dir, "a", "b", "two.txt"), "2");
        File.WriteAllText(Path.Combine(_dir, "a", "b", "three.jsonl"), "{}");

        Assert.That(CorpusReader.ExpandPaths([Path.Combine(_dir, "a")]).Select(Path.GetFileName), Is.EquivalentTo(new[] { "one.txt", "two.txt", "three.jsonl" }));
        Assert.That(CorpusReader.ExpandPaths([Path.Combine(_dir, "a", "**", "*.txt")]).Select(Path.GetFileName), Is.EquivalentTo(new[] { "one.txt", "two.txt" }));
        Assert.That(CorpusReader.ExpandPaths([Path.Combine(_dir, "a", "*.txt")]).Select(Path.GetFileName), Is.EqualTo(new[] { "one.txt" }));
        Assert.That(() => CorpusReader.ExpandPaths([Path.Combine(_dir, "nothing*.txt")]), Throws.ArgumentException.With.Message.Contains("nothing*.txt"));
    }

    [Test]
    public void A_malformed_record_fails_the_count_with_its_file_and_line()
    {
        string file = Path.Combine(_dir, "bad.jsonl");
        File.WriteAllLines(file, [.. Enumerable.Repeat("""{"text": "fine words here"}""", 2000), "{broken"]);
        Assert.That(() => TokenFrequencyCounter.ComputeAsync(TokenizerFiles.Load("gpt2"), [file], options: new CountingOptions { MaxDegreeOfParallelism = 2 }),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("line 2001"));
    }

    /// <summary>Collects progress reports on the reporting thread (Progress&lt;T&gt; would post them later).</summary>
    private sealed class SynchronousProgress(List<CountingProgress> reports) : IProgress<CountingProgress>
    {
        public void Report(CountingProgress value)
        {
            lock (reports)
            {
                reports.Add(value);
            }
        }
    }
}
