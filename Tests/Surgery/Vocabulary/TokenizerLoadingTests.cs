using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Tests.Vocabulary;

public sealed class TokenizerLoadingTests
{
    // "Hello world" is [15496, 995] in GPT-2 (tiktoken / Hugging Face reference ids).
    private static readonly int[] HelloWorldGpt2 = [15496, 995];
    private static readonly string[] HelloWorldPieces = ["▁hello", "▁world"];

    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("tokenizers").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void Gpt2_built_in_loads_and_round_trips()
    {
        ModelTokenizer gpt2 = TokenizerFiles.Load("gpt2");
        foreach (string text in VocabularyTestText.HeldOut)
        {
            Assert.That(gpt2.Decode(gpt2.Encode(text)), Is.EqualTo(text));
        }

        Assert.That(gpt2.Encode("Hello world"), Is.EqualTo(HelloWorldGpt2));
    }

    [Test]
    public void Byte_level_tokenizer_json_made_from_gpt2_ranks_tokenizes_exactly_like_tiktoken()
    {
        // The 4000 lowest GPT-2 ranks plus <|endoftext|> form a complete BPE vocabulary (parents rank lower), small enough to be quick.
        TiktokenVocabulary vocabulary = Gpt2Subset(4000);
        HuggingFaceTokenizerJson json = HuggingFaceTokenizerJson.FromTiktoken(vocabulary);
        Assert.That(json.IsByteLevel, Is.True);
        // Every token longer than one byte got its merge back from the ranks.
        Assert.That(json.Merges, Has.Count.EqualTo(4000 - 256));
        json.Save(Path.Combine(_dir, "tokenizer.json"));

        ModelTokenizer fromFolder = TokenizerFiles.Load(_dir);
        // The reference: Microsoft.ML.Tokenizers' tiktoken implementation over the same ranks.
        string ranks = Path.Combine(_dir, "subset.tiktoken");
        vocabulary.Save(ranks);
        Tokenizer tiktoken = TiktokenTokenizer.Create(ranks, new RegexPreTokenizer(new Regex(vocabulary.Pattern), vocabulary.SpecialTokens.ToDictionary()), normalizer: null, specialTokens: vocabulary.SpecialTokens.ToDictionary());
        foreach (string text in VocabularyTestText.HeldOut.Append(VocabularyTestText.Corpus()))
        {
            int[] ids = fromFolder.Encode(text);
            Assert.That(ids, Is.EqualTo(tiktoken.EncodeToIds(text)), text);
            Assert.That(fromFolder.Decode(ids), Is.EqualTo(text));
        }

        Assert.That(fromFolder.Encode("end<|endoftext|>")[^1], Is.EqualTo(4000));
    }

    /// <summary>GPT-2's <paramref name="count"/> lowest ranks plus &lt;|endoftext|&gt; (renumbered to <paramref name="count"/>).</summary>
    internal static TiktokenVocabulary Gpt2Subset(int count) => TiktokenVocabulary.LoadGpt2().WithTokens([.. Enumerable.Range(0, count), 50256]);

    [Test]
    public void Tiktoken_file_round_trips_through_save_and_load()
    {
        string path = Path.Combine(_dir, "gpt2.tiktoken");
        TiktokenVocabulary.LoadGpt2().Save(path);
        TiktokenVocabulary reloaded = TiktokenVocabulary.Load(path);
        Assert.That(reloaded.Tokens, Has.Count.EqualTo(50256));
        Assert.That(reloaded.SpecialTokens["<|endoftext|>"], Is.EqualTo(50256));
        Assert.That(reloaded.Pattern, Is.EqualTo(TiktokenVocabulary.Gpt2Pattern));

        ModelTokenizer loaded = TokenizerFiles.Load(path);
        ModelTokenizer gpt2 = TokenizerFiles.Load("gpt2");
        foreach (string text in VocabularyTestText.HeldOut)
        {
            Assert.That(loaded.Encode(text), Is.EqualTo(gpt2.Encode(text)));
        }
    }

    [Test]
    public void SentencePiece_model_written_here_is_read_by_LlamaTokenizer_and_round_trips_bytes()
    {
        SentencePieceModel model = TinySentencePiece.Build();
        string path = Path.Combine(_dir, "tokenizer.model");
        model.Save(path);

        Tokenizer llama = LlamaTokenizer.Create(File.OpenRead(path), addBeginOfSentence: false, addEndOfSentence: false);
        IReadOnlyList<EncodedToken> tokens = llama.EncodeToTokens("hello world", out _);
        Assert.That(tokens.Select(t => t.Value), Is.EqualTo(HelloWorldPieces));
        // 'Z' is not a piece: byte fallback gives <0x5A>.
        Assert.That(llama.EncodeToTokens("Z", out _).Select(t => t.Value), Does.Contain("<0x5A>"));
        Assert.That(llama.Decode(llama.EncodeToIds("hello Zoe world")), Is.EqualTo("hello Zoe world"));

        // Parse then write is byte-identical, including a field this library does not know (number 99).
        byte[] bytes = [.. File.ReadAllBytes(path), 99 << 3 & 0xFF | 0x80, 99 >> 4, 7];
        SentencePieceModel parsed = SentencePieceModel.Parse(bytes, "x.model");
        Assert.That(parsed.ToBytes(), Is.EqualTo(bytes));
        Assert.That(parsed.Pieces, Is.EqualTo(model.Pieces).Using<SentencePiece>((a, b) => a.Piece == b.Piece && a.Score == b.Score && a.Type == b.Type));
        Assert.That((parsed.ModelType, parsed.ByteFallback, parsed.UnknownId, parsed.BosId, parsed.EosId), Is.EqualTo((SentencePieceModelType.Bpe, true, 0, 1, 2)));
    }

    [Test]
    public void SentencePiece_style_tokenizer_json_loads_with_byte_fallback()
    {
        string json = TinySentencePiece.TokenizerJson();
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), json);
        HuggingFaceTokenizerJson parsed = HuggingFaceTokenizerJson.Load(Path.Combine(_dir, "tokenizer.json"));
        Assert.That((parsed.IsByteLevel, parsed.IsSentencePieceStyle, parsed.ByteFallback), Is.EqualTo((false, true, true)));

        ModelTokenizer tokenizer = TokenizerFiles.Load(Path.Combine(_dir, "tokenizer.json"));
        Assert.That(tokenizer.Encode("hello world").Select(tokenizer.IdToToken), Is.EqualTo(HelloWorldPieces));
        Assert.That(tokenizer.Decode(tokenizer.Encode("hello Zoe world")), Is.EqualTo("hello Zoe world"));
    }

    [Test]
    public void Unsupported_files_name_the_file()
    {
        string text = Path.Combine(_dir, "vocab.txt");
        File.WriteAllText(text, "a\nb\n");
        Assert.That(() => TokenizerFiles.Load(text), Throws.ArgumentException.With.Message.Contains(text));
        Assert.That(() => TokenizerFiles.Load(Path.Combine(_dir, "missing.json")), Throws.ArgumentException.With.Message.Contains("missing.json"));

        string wordPiece = Path.Combine(_dir, "bert.json");
        File.WriteAllText(wordPiece, """{"model": {"type": "WordPiece", "vocab": {}}}""");
        Assert.That(() => TokenizerFiles.Load(wordPiece), Throws.InstanceOf<InvalidDataException>().With.Message.Contains(wordPiece).And.Message.Contains("WordPiece"));

        string badModel = Path.Combine(_dir, "bad.model");
        File.WriteAllBytes(badModel, [0x0A, 0x05, 0x01]);
        Assert.That(() => TokenizerFiles.Load(badModel), Throws.InstanceOf<InvalidDataException>().With.Message.Contains(badModel));
    }
}

/// <summary>A tiny SentencePiece BPE vocabulary with byte fallback, as a .model and as a Llama-2-style tokenizer.json.</summary>
internal static class TinySentencePiece
{
    /// <summary>Merges in priority order; every merged piece is the concatenation of earlier pieces or characters.</summary>
    public static readonly (string Left, string Right)[] Merges =
    [
        ("▁", "h"), ("e", "l"), ("▁h", "el"), ("l", "o"), ("▁hel", "lo"), ("▁", "w"), ("o", "r"), ("▁w", "or"), ("l", "d"), ("▁wor", "ld"),
    ];

    public static readonly string[] Characters = ["▁", "h", "e", "l", "o", "w", "r", "d"];

    /// <summary>Pieces: &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;, 256 bytes, characters, merged pieces.</summary>
    public static List<SentencePiece> Pieces()
    {
        var pieces = new List<SentencePiece>
        {
            new("<unk>", 0, SentencePieceType.Unknown), new("<s>", 0, SentencePieceType.Control), new("</s>", 0, SentencePieceType.Control),
        };
        pieces.AddRange(Enumerable.Range(0, 256).Select(b => new SentencePiece($"<0x{b:X2}>", 0, SentencePieceType.Byte)));
        for (int i = 0; i < Merges.Length; i++)
        {
            pieces.Add(new SentencePiece(Merges[i].Left + Merges[i].Right, -i, SentencePieceType.Normal));
        }

        pieces.AddRange(Characters.Select((c, i) => new SentencePiece(c, -Merges.Length - i, SentencePieceType.Normal)));
        return pieces;
    }

    public static SentencePieceModel Build() => SentencePieceModel.Create(Pieces(), SentencePieceModelType.Bpe, byteFallback: true);

    /// <summary>The same vocabulary as a Llama-2-style tokenizer.json (Prepend/Replace normalizer, byte fallback).</summary>
    public static string TokenizerJson()
    {
        List<SentencePiece> pieces = Pieces();
        var vocab = new JsonObject();
        for (int i = 0; i < pieces.Count; i++)
        {
            vocab[pieces[i].Piece] = i;
        }

        var merges = new JsonArray([.. Merges.Select(m => (JsonNode)$"{m.Left} {m.Right}")]);
        JsonObject Added(int id, string content) => new() { ["id"] = id, ["content"] = content, ["special"] = true };
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(Added(0, "<unk>"), Added(1, "<s>"), Added(2, "</s>")),
            ["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁" }),
            },
            ["pre_tokenizer"] = null,
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["special_tokens"] = new JsonObject { ["<s>"] = new JsonObject { ["id"] = "<s>", ["ids"] = new JsonArray(1), ["tokens"] = new JsonArray("<s>") } },
            },
            // Llama 2's decoder: spaces back, bytes to text, one string, the prepended space off.
            ["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "\u2581" }, ["content"] = " " },
                    new JsonObject { ["type"] = "ByteFallback" },
                    new JsonObject { ["type"] = "Fuse" },
                    new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["unk_token"] = "<unk>", ["fuse_unk"] = true, ["byte_fallback"] = true, ["vocab"] = vocab, ["merges"] = merges,
            },
        };
        return root.ToJsonString();
    }

    public static byte[] Utf8(string text) => Encoding.UTF8.GetBytes(text);
}
