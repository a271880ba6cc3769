// Expected values read best inline next to the assertion.
#pragma warning disable CA1861

using System.Text;
using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery.Vocabulary;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Vocabulary;

public sealed class VocabularyCompressorTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("vocab-compress").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static long[] Count(ModelTokenizer tokenizer, int vocabSize, IEnumerable<string> documents)
    {
        VocabularyStatistics statistics = TokenFrequencyCounter.ComputeAsync(tokenizer, documents.ToAsyncEnumerable(),
            new CountingOptions { VocabSize = vocabSize }).GetAwaiter().GetResult();
        return [.. statistics.Counts];
    }

    /// <summary>Round trip with the compressed tokenizer, and the same text from the original tokenizer through the map.</summary>
    private static void AssertRoundTrips(ModelTokenizer compressed, ModelTokenizer original, VocabularyMap map, IEnumerable<string> texts)
    {
        foreach (string text in texts)
        {
            int[] ids = compressed.Encode(text);
            Assert.That(ids.All(id => id >= 0 && id < map.NewVocabSize), Is.True, "an id outside the compressed vocabulary");
            Assert.That(compressed.Decode(ids), Is.EqualTo(text));
            // Mapped back, every id names the same text in the original vocabulary: kept ids only, rows still line up.
            int[] oldIds = [.. ids.Select(map.OldId)];
            Assert.That(oldIds.All(id => map.NewId(id) is not null), Is.True);
            Assert.That(original.Decode(oldIds), Is.EqualTo(text));
        }
    }

    [Test]
    public void Gpt2_compressed_by_frequency_round_trips_held_out_text_and_keeps_every_merge_reachable()
    {
        ModelTokenizer gpt2 = TokenizerFiles.Load("gpt2");
        TiktokenVocabulary vocabulary = TiktokenVocabulary.LoadGpt2();
        long[] counts = Count(gpt2, 50257, VocabularyTestText.Documents());

        CompressedTokenizer<TiktokenVocabulary> result = VocabularyCompressor.Compress(vocabulary, counts, CompressionTarget.Keep(600));
        VocabularyMap map = result.Map;
        Assert.That(map.NewVocabSize, Is.EqualTo(600));
        Assert.That(map.KeptOldIds, Is.Ordered.Ascending);
        Assert.That(map.NewId(50256), Is.EqualTo(599), "<|endoftext|> is kept, last as before");
        Assert.That(result.Selection.Required, Is.EqualTo(257));
        Assert.That(result.Selection.AddedForClosure, Is.GreaterThan(0));
        Assert.That(result.Tokenizer.SpecialTokens["<|endoftext|>"], Is.EqualTo(599));

        // Closure: each kept multi-byte token is the BPE merge of two kept tokens of lower rank.
        var ranks = result.Tokenizer.Tokens.ToDictionary(t => Encoding.Latin1.GetString(t.Bytes), t => (long)t.Rank);
        TokenPriority priority = BpeMerging.FromDictionary(ranks);
        foreach (TiktokenToken token in result.Tokenizer.Tokens.Where(t => t.Bytes.Length > 1))
        {
            Assert.That(BpeMerging.Parents(Encoding.Latin1.GetString(token.Bytes), priority, token.Rank), Is.Not.Null, $"rank {token.Rank} unreachable");
        }

        ModelTokenizer compressed = result.Tokenizer.CreateTokenizer();
        AssertRoundTrips(compressed, gpt2, map, VocabularyTestText.HeldOut);
        // 600 = 257 required + frequent tokens + their merge parents; the frequent ones still cover most of the corpus.
        Assert.That(result.Selection.Coverage, Is.GreaterThan(0.8));
    }

    [Test]
    public void Coverage_target_keeps_the_fewest_frequent_tokens_that_reach_it()
    {
        ModelTokenizer gpt2 = TokenizerFiles.Load("gpt2");
        long[] counts = Count(gpt2, 50257, VocabularyTestText.Documents());
        CompressedTokenizer<TiktokenVocabulary> result = VocabularyCompressor.Compress(TiktokenVocabulary.LoadGpt2(), counts, CompressionTarget.Cover(0.9));
        double covered = (double)result.Map.KeptOldIds.Sum(id => counts[id]) / counts.Sum();
        Assert.That(result.Selection.Coverage, Is.EqualTo(covered).Within(1e-12));
        Assert.That(covered, Is.GreaterThanOrEqualTo(0.9));
        Assert.That(result.Map.NewVocabSize, Is.LessThan(1000));
        AssertRoundTrips(result.Tokenizer.CreateTokenizer(), gpt2, result.Map, VocabularyTestText.HeldOut);

        // Full coverage keeps every token the corpus uses (with its parents): the corpus tokenizes exactly as before.
        CompressedTokenizer<TiktokenVocabulary> full = VocabularyCompressor.Compress(TiktokenVocabulary.LoadGpt2(), counts, CompressionTarget.Cover(1.0));
        ModelTokenizer fullTokenizer = full.Tokenizer.CreateTokenizer();
        foreach (string document in VocabularyTestText.Documents())
        {
            Assert.That(fullTokenizer.Encode(document).Select(full.Map.OldId).ToArray(), Is.EqualTo(gpt2.Encode(document)));
        }

        Assert.That(full.Selection.Coverage, Is.EqualTo(1.0));
    }

    [Test]
    public void Closure_keeps_the_intermediate_merge_that_naive_deletion_would_lose()
    {
        // Byte-level vocabulary: 256 bytes, then "ab" (merge a b) and "abc" (merge ab c); "abc" is frequent, "ab" never seen alone.
        HuggingFaceTokenizerJson json = TinyByteLevel();
        int ab = json.Vocabulary["ab"], abc = json.Vocabulary["abc"], special = json.AddedTokens[0].Id;
        long[] counts = new long[json.IdCount];
        counts[abc] = 100;
        counts[json.Vocabulary["x"]] = 50;

        CompressedTokenizer<HuggingFaceTokenizerJson> result = VocabularyCompressor.Compress(json, counts, CompressionTarget.Keep(259));
        Assert.That(result.Map.NewId(abc), Is.Not.Null);
        Assert.That(result.Map.NewId(ab), Is.Not.Null, "ab is the parent of kept abc");
        Assert.That(result.Map.NewId(special), Is.EqualTo(258));
        Assert.That(result.Selection.AddedForClosure, Is.EqualTo(1));
        Assert.That(result.Tokenizer.Merges, Has.Count.EqualTo(2));

        ModelTokenizer compressed = result.Tokenizer.CreateTokenizer();
        Assert.That(compressed.Encode("abc"), Is.EqualTo(new[] { result.Map.NewId(abc)!.Value }));
        AssertRoundTrips(compressed, json.CreateTokenizer(), result.Map, ["abc abcd xyz", .. VocabularyTestText.HeldOut]);

        // Deleting "ab" the naive way leaves "abc" unreachable: the text falls apart into single bytes.
        int[] naive = [.. result.Map.KeptOldIds.Where(id => id != ab)];
        ModelTokenizer broken = json.WithVocabulary(naive, [.. json.Merges.Where(m => m.Result != "ab" && m.Left != "ab")]).CreateTokenizer();
        Assert.That(broken.Encode("abc"), Has.Length.EqualTo(3));
    }

    [Test]
    public void Keeping_everything_gives_identical_tokenization_and_identical_rows()
    {
        TiktokenVocabulary vocabulary = TokenizerLoadingTests.Gpt2Subset(3000);
        HuggingFaceTokenizerJson json = HuggingFaceTokenizerJson.FromTiktoken(vocabulary);
        ModelTokenizer original = json.CreateTokenizer();
        long[] counts = Count(original, json.IdCount, VocabularyTestText.Documents());

        CompressedTokenizer<HuggingFaceTokenizerJson> result = VocabularyCompressor.Compress(json, counts, CompressionTarget.Keep(json.IdCount));
        Assert.That(result.Map.KeptOldIds, Is.EqualTo(Enumerable.Range(0, json.IdCount)));
        Assert.That(result.Tokenizer.ToJson(), Is.EqualTo(json.ToJson()));
        ModelTokenizer same = result.Tokenizer.CreateTokenizer();
        foreach (string text in VocabularyTestText.HeldOut)
        {
            Assert.That(same.Encode(text), Is.EqualTo(original.Encode(text)));
        }

        using Tensor weight = randn(json.IdCount, 4);
        using Tensor rows = result.Map.SelectRows(weight);
        Assert.That(rows.eq(weight).all().item<bool>(), Is.True);
    }

    [Test]
    public void Compressed_tokenizer_json_round_trips_and_renumbers_added_tokens_and_post_processor()
    {
        TiktokenVocabulary vocabulary = TokenizerLoadingTests.Gpt2Subset(3000);
        var root = JsonNode.Parse(HuggingFaceTokenizerJson.FromTiktoken(vocabulary).ToJson())!.AsObject();
        root["post_processor"] = new JsonObject
        {
            ["type"] = "TemplateProcessing",
            ["special_tokens"] = new JsonObject { ["<|endoftext|>"] = new JsonObject { ["id"] = "<|endoftext|>", ["ids"] = new JsonArray(3000), ["tokens"] = new JsonArray("<|endoftext|>") } },
        };
        root["padding"] = new JsonObject { ["pad_id"] = 3000, ["pad_token"] = "<|endoftext|>" };
        HuggingFaceTokenizerJson json = HuggingFaceTokenizerJson.Parse(root.ToJsonString());
        ModelTokenizer original = json.CreateTokenizer();
        long[] counts = Count(original, json.IdCount, VocabularyTestText.Documents());

        CompressedTokenizer<HuggingFaceTokenizerJson> result = VocabularyCompressor.Compress(json, counts, CompressionTarget.Keep(500));
        int newSpecial = result.Map.NewId(3000)!.Value;
        Assert.That(newSpecial, Is.EqualTo(499));
        var written = JsonNode.Parse(result.Tokenizer.ToJson())!;
        Assert.That(written["post_processor"]!["special_tokens"]!["<|endoftext|>"]!["ids"]![0]!.GetValue<int>(), Is.EqualTo(newSpecial));
        Assert.That(written["padding"]!["pad_id"]!.GetValue<int>(), Is.EqualTo(newSpecial));
        Assert.That(written["added_tokens"]![0]!["id"]!.GetValue<int>(), Is.EqualTo(newSpecial));
        Assert.That(written["model"]!["vocab"]!.AsObject(), Has.Count.EqualTo(499));

        ModelTokenizer compressed = result.Tokenizer.CreateTokenizer();
        AssertRoundTrips(compressed, original, result.Map, VocabularyTestText.HeldOut);
        Assert.That(compressed.Encode("<|endoftext|>"), Is.EqualTo(new[] { newSpecial }));
    }

    [Test]
    public void Kept_tokens_keep_their_exact_rows_and_the_config_is_renumbered()
    {
        var map = new VocabularyMap([0, 2, 5, 7], 8);
        using Tensor weight = arange(8 * 3, dtype: ScalarType.Float32).reshape(8, 3); // [8, 3]
        using Tensor rows = map.SelectRows(weight);
        Assert.That(rows.shape, Is.EqualTo(new long[] { 4, 3 }));
        for (int newId = 0; newId < 4; newId++)
        {
            Assert.That(rows[newId].eq(weight[map.OldId(newId)]).all().item<bool>(), Is.True);
        }

        using Tensor padded = map.SelectRows(weight, padToMultiple: 8);
        Assert.That(padded.shape, Is.EqualTo(new long[] { 8, 3 }));
        Assert.That(padded[4..].abs().sum().item<float>(), Is.Zero);
        Assert.That(() => map.SelectRows(arange(6 * 3).reshape(6, 3)), Throws.ArgumentException.With.Message.Contains("kept id 7"));

        var config = new LlamaConfig
        {
            VocabSize = 8, HiddenSize = 8, IntermediateSize = 16, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 1,
            BosTokenId = 5, EosTokenIds = [7], PadTokenId = 0,
        };
        LlamaConfig updated = map.UpdateConfig(config, padToMultiple: 8);
        Assert.That((updated.VocabSize, updated.BosTokenId, updated.EosTokenIds[0], updated.PadTokenId), Is.EqualTo((8, 2, 3, 0)));
        Assert.That(map.UpdateConfig(config).VocabSize, Is.EqualTo(4));
        Assert.That(() => map.UpdateConfig(config with { BosTokenId = 1 }), Throws.ArgumentException.With.Message.Contains("bos_token_id 1"));

        string path = Path.Combine(_dir, VocabularyCompressor.MapFileName);
        map.Save(path);
        VocabularyMap reloaded = VocabularyMap.Load(path);
        Assert.That((reloaded.KeptOldIds, reloaded.OldVocabSize, reloaded.NewVocabSize), Is.EqualTo((map.KeptOldIds, 8, 4)));
        Assert.That(JsonNode.Parse(File.ReadAllText(path))!["new_vocab_size"]!.GetValue<int>(), Is.EqualTo(4));
    }

    [Test]
    public void SentencePiece_bpe_compression_keeps_parents_and_other_tools_read_the_result()
    {
        SentencePieceModel model = TinySentencePiece.Build();
        string path = Path.Combine(_dir, "tokenizer.model");
        model.Save(path);
        ModelTokenizer original = TokenizerFiles.Load(path);
        int hello = model.Pieces.Select(p => p.Piece).ToList().IndexOf("▁hello");
        long[] counts = new long[model.Pieces.Count];
        counts[hello] = 10;

        // 259 required (unk, bos, eos, 256 bytes) + ▁hello and its 9 ancestors down to characters.
        var result = VocabularyCompressor.Compress(model, counts, CompressionTarget.Keep(259 + 10));
        string[] kept = [.. result.Tokenizer.Pieces.Select(p => p.Piece)];
        Assert.That(kept[259..], Is.EquivalentTo(new[] { "▁hello", "▁hel", "lo", "▁h", "el", "▁", "h", "e", "l", "o" }));
        Assert.That(result.Selection.AddedForClosure, Is.EqualTo(9));
        Assert.That(kept, Does.Not.Contain("▁world"));
        Assert.That(result.Tokenizer.UnknownId, Is.EqualTo(0));

        string output = Path.Combine(_dir, "out", "tokenizer.model");
        result.Tokenizer.Save(output);
        ModelTokenizer compressed = TokenizerFiles.Load(output);
        Assert.That(compressed.Encode("hello").Select(compressed.IdToToken), Is.EqualTo(new[] { "▁hello" }));
        AssertRoundTrips(compressed, original, result.Map, ["hello world", "Zebra hello", .. VocabularyTestText.HeldOut]);
    }

    [Test]
    public void SentencePiece_style_tokenizer_json_compression_keeps_bytes_and_merge_parents()
    {
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), TinySentencePiece.TokenizerJson());
        HuggingFaceTokenizerJson json = HuggingFaceTokenizerJson.Load(Path.Combine(_dir, "tokenizer.json"));
        ModelTokenizer original = json.CreateTokenizer();
        long[] counts = Count(original, json.IdCount, ["hello hello hello world"]);
        counts[json.Vocabulary["▁world"]] = 0;

        var result = VocabularyCompressor.Compress(json, counts, CompressionTarget.Keep(259 + 10));
        Assert.That(result.Selection.Required, Is.EqualTo(259), "unk, <s>, </s> and 256 byte tokens");
        Assert.That(result.Tokenizer.Vocabulary.Keys, Is.SupersetOf(new[] { "▁hello", "▁hel", "lo", "▁h", "el", "▁", "h", "e", "l", "o" }));
        Assert.That(result.Tokenizer.Vocabulary.Keys, Does.Not.Contain("▁world"));
        Assert.That(result.Tokenizer.Merges.Select(m => m.Result), Is.EquivalentTo(new[] { "▁h", "el", "▁hel", "lo", "▁hello" }));
        // <s> keeps id 1, so the post-processor still points at it.
        Assert.That(JsonNode.Parse(result.Tokenizer.ToJson())!["post_processor"]!["special_tokens"]!["<s>"]!["ids"]![0]!.GetValue<int>(), Is.EqualTo(1));

        ModelTokenizer compressed = result.Tokenizer.CreateTokenizer();
        Assert.That(compressed.Encode("hello").Select(compressed.IdToToken), Is.EqualTo(new[] { "▁hello" }));
        AssertRoundTrips(compressed, original, result.Map, ["hello world", .. VocabularyTestText.HeldOut]);
    }

    [Test]
    public void Commands_write_statistics_chart_and_compressed_folder()
    {
        TiktokenVocabulary vocabulary = TokenizerLoadingTests.Gpt2Subset(1000);
        string source = Directory.CreateDirectory(Path.Combine(_dir, "source")).FullName;
        HuggingFaceTokenizerJson.FromTiktoken(vocabulary).Save(Path.Combine(source, "tokenizer.json"));
        File.WriteAllText(Path.Combine(source, "tokenizer_config.json"), """{"added_tokens_decoder": {"1000": {"content": "<|endoftext|>", "special": true}}, "model_max_length": 1024}""");
        string corpus = Path.Combine(_dir, "corpus.txt");
        File.WriteAllText(corpus, VocabularyTestText.Corpus());

        string stats = Path.Combine(_dir, "stats.json"), chart = Path.Combine(_dir, "coverage.png");
        VocabularyStatistics statistics = VocabularyCommands.StatsAsync(source, [corpus], stats, chartPath: chart).GetAwaiter().GetResult();
        Assert.That(statistics.VocabSize, Is.EqualTo(1001));
        Assert.That(File.Exists(stats) && File.Exists(chart), Is.True);

        string output = Path.Combine(_dir, "compressed");
        CompressionResult result = VocabularyCommands.CompressAsync(source, stats, CompressionTarget.Cover(0.95), output).GetAwaiter().GetResult();
        Assert.That(result.Selection.Coverage, Is.GreaterThanOrEqualTo(0.95));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "tokenizer_config.json")))!;
        Assert.That(config["added_tokens_decoder"]!.AsObject().Single().Key, Is.EqualTo((result.Map.NewVocabSize - 1).ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.That(config["model_max_length"]!.GetValue<int>(), Is.EqualTo(1024));
        AssertRoundTrips(TokenizerFiles.Load(output), TokenizerFiles.Load(source), VocabularyMap.Load(result.MapPath), VocabularyTestText.HeldOut);
    }

    [Test]
    public void SentencePiece_unigram_pieces_are_independent()
    {
        List<SentencePiece> pieces = TinySentencePiece.Pieces();
        SentencePieceModel unigram = SentencePieceModel.Create(pieces, SentencePieceModelType.Unigram, byteFallback: true);
        long[] counts = new long[pieces.Count];
        counts[pieces.FindIndex(p => p.Piece == "▁hello")] = 10;
        var result = VocabularyCompressor.Compress(unigram, counts, CompressionTarget.Keep(260));
        Assert.That(result.Tokenizer.Pieces[^1].Piece, Is.EqualTo("▁hello"));
        Assert.That(result.Selection.AddedForClosure, Is.Zero);
        SentencePieceModel reread = SentencePieceModel.Parse(result.Tokenizer.ToBytes());
        Assert.That(reread.Pieces.Select(p => p.Piece), Is.EqualTo(result.Tokenizer.Pieces.Select(p => p.Piece)));
        Assert.That(reread.ModelType, Is.EqualTo(SentencePieceModelType.Unigram));
    }

    [Test]
    public void CompressAsync_writes_gpt2_as_a_tokenizer_json_folder_with_its_special_tokens()
    {
        ModelTokenizer gpt2 = TokenizerFiles.Load("gpt2");
        string corpus = Path.Combine(_dir, "corpus.txt");
        File.WriteAllText(corpus, VocabularyTestText.Corpus());
        VocabularyStatistics statistics = TokenFrequencyCounter.ComputeAsync(gpt2, [corpus]).GetAwaiter().GetResult();

        string outDir = Path.Combine(_dir, "out");
        CompressionResult result = VocabularyCompressor.CompressAsync("gpt2", statistics, CompressionTarget.Keep(700), outDir).GetAwaiter().GetResult();
        Assert.That(result.TokenizerPath, Is.EqualTo(Path.Combine(outDir, "tokenizer.json")));
        VocabularyMap map = VocabularyMap.Load(result.MapPath);
        Assert.That(map.KeptOldIds, Is.EqualTo(result.Map.KeptOldIds));
        Assert.That(map.NewVocabSize, Is.EqualTo(700));

        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "tokenizer_config.json")))!;
        Assert.That(config["eos_token"]!.GetValue<string>(), Is.EqualTo("<|endoftext|>"));
        Assert.That(config["added_tokens_decoder"]!["699"]!["content"]!.GetValue<string>(), Is.EqualTo("<|endoftext|>"));

        // The folder is what every command reads.
        ModelTokenizer reloaded = TokenizerFiles.Load(outDir);
        AssertRoundTrips(reloaded, gpt2, map, VocabularyTestText.HeldOut);
        Assert.That(reloaded.Encode("<|endoftext|>"), Is.EqualTo(new[] { 699 }));
    }

    [Test]
    public void Bad_targets_and_foreign_statistics_are_rejected()
    {
        TiktokenVocabulary vocabulary = TokenizerLoadingTests.Gpt2Subset(300);
        Assert.That(() => VocabularyCompressor.Compress(vocabulary, new long[301], CompressionTarget.Keep(100)),
            Throws.ArgumentException.With.Message.Contains("257 tokens that must be kept"));
        long[] foreign = new long[400];
        foreign[350] = 1;
        Assert.That(() => VocabularyCompressor.Compress(vocabulary, foreign, CompressionTarget.Keep(280)), Throws.ArgumentException.With.Message.Contains("id 350"));
        Assert.That(() => CompressionTarget.Cover(1.5), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    /// <summary>256 byte symbols, "ab" = a+b, "abc" = ab+c, and a special token.</summary>
    private static HuggingFaceTokenizerJson TinyByteLevel()
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++)
        {
            vocab[ByteLevelAlphabet.ToChar((byte)b).ToString()] = b;
        }

        vocab["ab"] = 256;
        vocab["abc"] = 257;
        var root = new JsonObject
        {
            ["added_tokens"] = new JsonArray(new JsonObject { ["id"] = 258, ["content"] = "<|end|>", ["special"] = true }),
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = new JsonArray("a b", "ab c") },
        };
        return HuggingFaceTokenizerJson.Parse(root.ToJsonString());
    }
}
