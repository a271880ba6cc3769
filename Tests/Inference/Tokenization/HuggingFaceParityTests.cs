using System.IO.Compression;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;
using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Tests.Tokenizers;

/// <summary>
/// <see cref="HuggingFaceTokenizer"/> against Hugging Face's Rust tokenizers (through Tokenizers.DotNet) on the same
/// tokenizer.json: every Brown paragraph, every held-out document and a set of hard strings must give identical ids
/// (with the post-processor, as the reference applies it) and identical decoded text.
/// </summary>
[NonParallelizable]
public sealed class HuggingFaceParityTests
{
    private string _dir = "";

    [OneTimeSetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("hf-parity").FullName;

    [OneTimeTearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [TestCase("mistral-7b")]
    [TestCase("qwen3")]
    [TestCase("gpt-oss")]
    public void Fixture_tokenizer_json_encodes_every_document_as_Hugging_Face_does(string family) =>
        Compare(family, Unzip(family));

    [Test]
    public void Gpt2_from_tiktoken_encodes_every_document_as_Hugging_Face_and_tiktoken_do()
    {
        string path = Path.Combine(_dir, "gpt2.tokenizer.json");
        HuggingFaceTokenizerJson.FromTiktoken(TiktokenVocabulary.LoadGpt2()).Save(path);
        List<string> documents = Compare("gpt2", path);

        // The built-in gpt2 is the same engine; Microsoft.ML.Tokenizers' tiktoken gives the same ids too, except where
        // the text spells <|endoftext|>: tiktoken's ordinary encoding reads it as text, Hugging Face as the special token.
        ModelTokenizer builtIn = TokenizerFiles.Load("gpt2");
        Tokenizer tiktoken = TiktokenTokenizer.CreateForModel("gpt2");
        Assert.That(builtIn.Encode("a<|endoftext|>"), Is.EqualTo(new[] { 64, 50256 }));
        string[] different = [.. documents.Where(d => !d.Contains("<|endoftext|>", StringComparison.Ordinal)).Where(d => !builtIn.Encode(d).SequenceEqual(tiktoken.EncodeToIds(d))).Select(d => JsonSerializer.Serialize(d))];
        Assert.That(different, Is.Empty, "documents where TokenizerFiles.Load(\"gpt2\") differs from TiktokenTokenizer gpt2");
        // Byte-level BPE without a normalizer loses nothing: decoding gives the text back.
        Assert.That(documents.Where(d => builtIn.Decode(builtIn.Encode(d)) != d), Is.Empty);
    }

    [Test]
    public void Albert_unigram_model_loads_through_TokenizerFiles()
    {
        ModelTokenizer albert = TokenizerFiles.Load(SentencePieceTestModels.AlbertPath);
        var direct = SentencePieceProcessor.Load(SentencePieceTestModels.AlbertPath);
        Assert.That(albert, Is.TypeOf<SentencePieceModelTokenizer>());
        Assert.That(direct.Model.ModelType, Is.EqualTo(SentencePieceModelType.Unigram));
        Assert.That(albert.VocabularySize, Is.EqualTo(direct.VocabularySize));
        foreach (string text in SentencePieceTestModels.CorpusDocuments().Take(200))
        {
            int[] ids = albert.Encode(text);
            Assert.That(ids, Is.EqualTo(direct.Encode(text)));
            Assert.That(albert.Decode(ids), Is.EqualTo(direct.Decode(ids)));
        }

        // ALBERT's model has no <s> control piece, so nothing is added.
        Assert.That(albert.BosId, Is.Null);
        Assert.That(albert.Encode("hello", addSpecialTokens: true), Is.EqualTo(albert.Encode("hello")));
        Assert.That(albert.IdToToken(albert.TokenToId("▁hello")!.Value), Is.EqualTo("▁hello"));
    }

    [Test]
    public void Unknown_component_types_are_refused_with_the_file_and_type()
    {
        string path = Path.Combine(_dir, "odd.json");
        File.WriteAllText(path, """{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "UnicodeScripts"}}""");
        Assert.That(() => TokenizerFiles.Load(path), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains(path).And.Message.Contains("\"UnicodeScripts\""));
    }

    /// <summary>Ties between equal-rank merges go to the leftmost pair, and ignore_merges keeps whole vocabulary words.</summary>
    [Test]
    public void Equal_rank_merges_resolve_leftmost_and_ignore_merges_keeps_whole_words()
    {
        static string Json(bool ignoreMerges) =>
            """{"model": {"type": "BPE", "ignore_merges": """ + (ignoreMerges ? "true" : "false")
            + """, "vocab": {"a": 0, "b": 1, "aa": 2, "ab": 3, "aab": 4}, "merges": ["a a", "a b"]}}""";
        string plain = Path.Combine(_dir, "tie.json");
        File.WriteAllText(plain, Json(false));
        ModelTokenizer tokenizer = TokenizerFiles.Load(plain);
        // "aaa": both pairs are "a a" with rank 0; the left one merges first: aa a.
        Assert.That(tokenizer.Encode("aaa"), Is.EqualTo(new[] { 2, 0 }));
        // "aab" is in the vocabulary but no merge makes it: aa b.
        Assert.That(tokenizer.Encode("aab"), Is.EqualTo(new[] { 2, 1 }));
        string ignore = Path.Combine(_dir, "ignore.json");
        File.WriteAllText(ignore, Json(true));
        Assert.That(TokenizerFiles.Load(ignore).Encode("aab"), Is.EqualTo(new[] { 4 }));
    }

    /// <summary>The documents compared: corpus, committed hard strings, and strings aimed at the added tokens of the file.</summary>
    private static List<string> Documents(string path)
    {
        var documents = new List<string>(SentencePieceTestModels.CorpusDocuments());
        documents.AddRange(JsonSerializer.Deserialize<string[]>(File.ReadAllText(Path.Combine(SentencePieceTestModels.GoldenDirectory, "hard-strings.json")))!);
        documents.AddRange([
            "", " ", "  ", "\n", " \n ", "\t\t", "a  b   c    d", "end   ", "   start", "....", ".....", "==========", "----  ----", "!!!???", "''''",
            "It's 'quoted' they'RE we'Ve I'M it'LL he'D", "x\r\ny\r\n\r\nz", "1234567 89", "e\u0301te\u0301 cafe\u0301 n\u0303",
            "日本語 中文 한국어 🎉🎉 👩‍👩‍👧 𝟎𝟏𝟐 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0001F600x", "\u00A0\u2003\u3000 spaces",
        ]);
        using JsonDocument json = JsonDocument.Parse(File.ReadAllText(path));
        foreach (JsonElement token in json.RootElement.GetProperty("added_tokens").EnumerateArray().Take(8))
        {
            string t = token.GetProperty("content").GetString()!;
            documents.AddRange([t, $" {t} ", $"a{t}b", $"{t}{t}", $"Hello {t} world", $"{t}\n{t} x", $"  {t}  "]);
        }

        return documents;
    }

    private static List<string> Compare(string family, string path)
    {
        List<string> documents = Documents(path);
        using var reference = new global::Tokenizers.DotNet.Tokenizer(path);
        HuggingFaceTokenizer ours = HuggingFaceTokenizer.Load(path);
        int identical = 0, decodedIdentical = 0;
        var failures = new List<string>();
        foreach (string document in documents)
        {
            int[] expected = [.. reference.Encode(document).Select(i => (int)i)];
            int[] actual = ours.Encode(document, addSpecialTokens: true);
            if (expected.AsSpan().SequenceEqual(actual))
            {
                identical++;
            }
            else if (failures.Count < 5)
            {
                failures.Add($"{JsonSerializer.Serialize(document[..Math.Min(120, document.Length)])}: expected [{string.Join(' ', expected.Take(30))}] got [{string.Join(' ', actual.Take(30))}]");
            }

            string expectedText = reference.Decode([.. expected.Select(i => (uint)i)]);
            if (ours.Decode(expected, skipSpecialTokens: true) == expectedText)
            {
                decodedIdentical++;
            }
            else if (failures.Count < 5)
            {
                failures.Add($"decode of {JsonSerializer.Serialize(document[..Math.Min(120, document.Length)])}: expected {JsonSerializer.Serialize(expectedText)} got {JsonSerializer.Serialize(ours.Decode(expected, skipSpecialTokens: true))}");
            }
        }

        TestContext.Out.WriteLine($"{family}: {identical}/{documents.Count} documents encode identically, {decodedIdentical}/{documents.Count} decode identically");
        Assert.That(failures, Is.Empty, $"{family}: {identical}/{documents.Count} identical");
        return documents;
    }

    private string Unzip(string family)
    {
        string path = Path.Combine(_dir, family + ".tokenizer.json");
        using var input = new GZipStream(File.OpenRead(Path.Combine(SentencePieceTestModels.FixtureDirectory, family, "tokenizer.json.gz")), CompressionMode.Decompress);
        using (FileStream output = File.Create(path))
        {
            input.CopyTo(output);
        }

        return path;
    }
}
