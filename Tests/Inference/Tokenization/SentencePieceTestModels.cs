using System.IO.Compression;
using System.Text.Json;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Tests.Support;

namespace ModelSurgery.Tests.Tokenizers;

/// <summary>A model built in code and the texts its goldens cover.</summary>
/// <param name="Name">File stem of the model in the goldens.</param>
/// <param name="Model">The model.</param>
/// <param name="Texts">Texts encoded by the real SentencePiece for the goldens.</param>
internal sealed record TinySentencePieceCase(string Name, SentencePieceModel Model, string[] Texts);

/// <summary>
/// The models the SentencePiece parity tests run: the committed ALBERT Unigram model, a BPE model derived from the
/// committed Mistral tokenizer.json, and tiny hand-made models that each isolate one rule. The goldens record each
/// model's SHA-256, so a change here that alters a model's bytes fails loudly instead of comparing against outputs of
/// another model.
/// </summary>
internal static class SentencePieceTestModels
{
    public static string FixtureDirectory => Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "Tokenizers");

    public static string GoldenDirectory => Path.Combine(FixtureDirectory, "sentencepiece");

    public static string AlbertPath => Path.Combine(FixtureDirectory, "albert-30k-clean", "spiece.model");

    /// <summary>
    /// Every Brown Corpus paragraph (each document's text split on '\n'), then every held-out document, in file order
    /// (the order of generate-goldens.cjs).
    /// </summary>
    public static IReadOnlyList<string> CorpusDocuments()
    {
        string data = Path.Combine(DotnetCli.FindRepositoryRoot(Path.Combine("Samples", "Data", "brown.jsonl")), "Samples", "Data");
        var documents = new List<string>();
        foreach (string line in File.ReadLines(Path.Combine(data, "brown.jsonl")).Where(l => l.Length > 0))
        {
            documents.AddRange(Text(line).Split('\n'));
        }

        documents.AddRange(File.ReadLines(Path.Combine(data, "heldout.jsonl")).Where(l => l.Length > 0).Select(Text));
        return documents;

        static string Text(string line)
        {
            using var json = JsonDocument.Parse(line);
            return json.RootElement.GetProperty("text").GetString()!;
        }
    }

    /// <summary>
    /// A SentencePiece BPE model equivalent to Mistral 7B's tokenizer.json: pieces in id order; &lt;unk&gt; UNKNOWN,
    /// &lt;s&gt; and &lt;/s&gt; CONTROL, &lt;0xNN&gt; BYTE; every other piece NORMAL with score -(rank of the first
    /// merge that produces it), 0 for single characters no merge produces, -1e9 for longer pieces no merge produces
    /// (none in this file). SentencePiece merges by piece score, and the file lists merges in its model's score order,
    /// so this reproduces Mistral's segmentation; identity normalizer, dummy prefix, byte fallback, as Llama 2.
    /// </summary>
    public static SentencePieceModel MistralDerived()
    {
        using var file = File.OpenRead(Path.Combine(FixtureDirectory, "mistral-7b", "tokenizer.json.gz"));
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        using var json = JsonDocument.Parse(gzip);
        JsonElement model = json.RootElement.GetProperty("model");
        var byId = new SortedDictionary<int, string>();
        foreach (JsonProperty entry in model.GetProperty("vocab").EnumerateObject())
        {
            byId.Add(entry.Value.GetInt32(), entry.Name);
        }

        var firstMerge = new Dictionary<string, int>(StringComparer.Ordinal);
        int rank = 0;
        foreach (JsonElement merge in model.GetProperty("merges").EnumerateArray())
        {
            string result = merge.ValueKind == JsonValueKind.Array
                ? merge[0].GetString() + merge[1].GetString()
                : merge.GetString()!.Replace(" ", "", StringComparison.Ordinal);
            firstMerge.TryAdd(result, rank++);
        }

        var pieces = new List<SentencePiece>(byId.Count);
        foreach ((int id, string token) in byId)
        {
            Assert.That(id, Is.EqualTo(pieces.Count), "Mistral's ids are contiguous");
            SentencePieceType type = token switch
            {
                "<unk>" => SentencePieceType.Unknown,
                "<s>" or "</s>" => SentencePieceType.Control,
                _ when HuggingFaceTokenizerJson.IsByteFallbackToken(token) => SentencePieceType.Byte,
                _ => SentencePieceType.Normal,
            };
            float score = type != SentencePieceType.Normal ? 0
                : firstMerge.TryGetValue(token, out int r) ? -r
                : token.EnumerateRunes().Count() == 1 ? 0 : -1e9f;
            pieces.Add(new SentencePiece(token, score, type));
        }

        return SentencePieceModel.Create(pieces, SentencePieceModelType.Bpe, byteFallback: true, unknownId: 0, bosId: 1, eosId: 2, padId: -1);
    }

    /// <summary>The tiny hand-made models, each with the texts that exercise its rule.</summary>
    public static IReadOnlyList<TinySentencePieceCase> Tiny() =>
    [
        BpeTies(),
        BpeBytes(),
        BpeSuffix(),
        UnigramPenalty(),
        UnigramBytes(),
        Whitespace("ws-remove-extra", SentencePieceNormalizerSpec.Identity with { RemoveExtraWhitespaces = true }, suffix: false),
        Whitespace("ws-no-dummy-prefix", SentencePieceNormalizerSpec.Identity with { AddDummyPrefix = false }, suffix: false),
        Whitespace("ws-no-escape", SentencePieceNormalizerSpec.Identity with { EscapeWhitespaces = false, RemoveExtraWhitespaces = true }, suffix: false),
        Whitespace("ws-suffix", SentencePieceNormalizerSpec.Identity, suffix: true),
        Whitespace("ws-suffix-remove-extra", SentencePieceNormalizerSpec.Identity with { RemoveExtraWhitespaces = true }, suffix: true),
        CharsMap(),
        Denormalizer("denormalizer", new SentencePieceNormalizerSpec("denormalize", DenormalizerMap(), AddDummyPrefix: false, RemoveExtraWhitespaces: false, EscapeWhitespaces: false)),
        Denormalizer("denormalizer-proto-defaults", new SentencePieceNormalizerSpec(null, DenormalizerMap())),
        WordAndChar(SentencePieceModelType.Word),
        WordAndChar(SentencePieceModelType.Character),
    ];

    /// <summary>The rules of the hand-made chars map (compiled by <see cref="PrecompiledCharsMap.Build"/>).</summary>
    public static IReadOnlyDictionary<string, string> CharsMapRules { get; } = new Dictionary<string, string>
    {
        ["Ａ"] = "A",
        ["ﬁ"] = "fi",
        ["e\u0301"] = "é",
        ["\t"] = " ",
        ["\n"] = " ",
        ["\u3000"] = " ",
        ["\u200b"] = "",
        ["a"] = "α",
        ["ab"] = "X",
        ["abc"] = "Y Z",
        ["Ω"] = "Ω",
        ["!"] = "  !",
    };

    private static readonly string[] SpecialsAndUnknowns = ["", " ", "x", "xyz", "axbyc", "<s>", "</s>", "<unk>", "a<s>b"];

    /// <summary>Standard first pieces: &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;.</summary>
    private static List<SentencePiece> Specials() =>
    [
        new("<unk>", 0, SentencePieceType.Unknown),
        new("<s>", 0, SentencePieceType.Control),
        new("</s>", 0, SentencePieceType.Control),
    ];

    private static IEnumerable<SentencePiece> BytePieces() =>
        Enumerable.Range(0, 256).Select(b => new SentencePiece($"<0x{b:X2}>", 0, SentencePieceType.Byte));

    private static IEnumerable<SentencePiece> Normal(params (string Piece, float Score)[] pieces) =>
        pieces.Select(p => new SentencePiece(p.Piece, p.Score, SentencePieceType.Normal));

    /// <summary>BPE: equal scores (leftmost pair first), an UNUSED intermediate piece, a user-defined symbol, unknown runs.</summary>
    private static TinySentencePieceCase BpeTies()
    {
        List<SentencePiece> pieces = Specials();
        pieces.AddRange(Normal(("▁", 0), ("a", 0), ("b", 0), ("c", 0), ("d", 0),
            ("ab", -1), ("ba", -1), ("bc", -1), ("▁a", -3), ("▁▁", -2), ("bcd", -0.5f), ("aba", -4)));
        pieces.Add(new SentencePiece("cd", -0.1f, SentencePieceType.Unused));
        pieces.Add(new SentencePiece("<sep>", 0, SentencePieceType.UserDefined));
        pieces.Add(new SentencePiece("▁b", 0, SentencePieceType.UserDefined));
        SentencePieceModel model = SentencePieceModel.Create(pieces, SentencePieceModelType.Bpe, byteFallback: false);
        return new("bpe-ties", model,
        [
            .. SpecialsAndUnknowns, "aba", "abab", "ababa", "bababab", "abcabc", "a b a", "aba aba", "cd", "bcd", "abcd", "cdcd",
            "    ", "a    b", "  a  ", "a<sep>b", "<sep><sep>", "<se", "b", "ab ba", "dcba", "aaaa bbbb", "\u00e9",
        ]);
    }

    /// <summary>BPE with byte fallback: unknown characters become their UTF-8 bytes.</summary>
    private static TinySentencePieceCase BpeBytes()
    {
        List<SentencePiece> pieces = Specials();
        pieces.AddRange(BytePieces());
        pieces.AddRange(Normal(("▁", 0), ("a", 0), ("b", 0), ("é", 0), ("日", 0), ("ab", -1), ("▁a", -2), ("▁日", -3)));
        SentencePieceModel model = SentencePieceModel.Create(pieces, SentencePieceModelType.Bpe, byteFallback: true);
        return new("bpe-bytes", model,
            [.. SpecialsAndUnknowns, "ab", "aZb", "ZZZ", "日本", "日本語", "😀", "a😀b", "é e\u0301", "\u0000", "\u00ff\u0100", "𠀀"]);
    }

    /// <summary>BPE with treat_whitespace_as_suffix: pieces end in U+2581, so a word's merges may reach the next space.</summary>
    private static TinySentencePieceCase BpeSuffix()
    {
        List<SentencePiece> pieces = Specials();
        pieces.AddRange(Normal(("▁", 0), ("a", 0), ("b", 0), ("a▁", -1), ("b▁", -1), ("ab", -2), ("ab▁", -3), ("▁▁", -4), ("▁a", -5)));
        SentencePieceModel model = SentencePieceModel.Create(pieces, SentencePieceModelType.Bpe, byteFallback: false, treatWhitespaceAsSuffix: true);
        return new("bpe-suffix", model, [.. SpecialsAndUnknowns, "a b", "ab ab", "a  b", "  ab  ", "ba ab", "b a▁b"]);
    }

    /// <summary>
    /// Unigram where the unknown penalty decides: "xa" is cheaper through an unknown x when an unknown scores
    /// (lowest normal score - 10) = -13 (-13 + 10.25 &gt; -3) and "yb" is not (-13 + 9.75 &lt; -3); a penalty of 10.5
    /// or 9.5 flips one of them. An UNUSED piece with score -100 must not lower the minimum, one with score 100 must
    /// never be chosen; a user-defined piece scores (bytes x highest normal score - 0.1).
    /// </summary>
    private static TinySentencePieceCase UnigramPenalty()
    {
        List<SentencePiece> pieces = Specials();
        pieces.AddRange(Normal(("▁", -2), ("a", 10.25f), ("b", 9.75f), ("xa", -3), ("yb", -3), ("c", -1), ("cc", -2.5f), ("ccc", -3),
            ("d", -1), ("dd", -2), ("▁d", -1.5f), ("▁dd", -2.5f)));
        pieces.Add(new SentencePiece("ac", 100, SentencePieceType.Unused));
        pieces.Add(new SentencePiece("bb", -100, SentencePieceType.Unused));
        pieces.Add(new SentencePiece("@@", 0, SentencePieceType.UserDefined));
        pieces.Add(new SentencePiece("@", -1, SentencePieceType.Normal));
        SentencePieceModel model = SentencePieceModel.Create(pieces, SentencePieceModelType.Unigram, byteFallback: false);
        return new("unigram-penalty", model,
        [
            .. SpecialsAndUnknowns, "xa", "yb", "xaxa", "ybyb", "xa yb", "ac", "bb", "ccc", "cccc", "ccccc", "dd", "ddd", "d dd",
            "@@", "@@@", "a@@b", "zzz", "zaz", "xyz abc",
        ]);
    }

    /// <summary>Unigram with byte fallback.</summary>
    private static TinySentencePieceCase UnigramBytes()
    {
        List<SentencePiece> pieces = Specials();
        pieces.AddRange(BytePieces());
        pieces.AddRange(Normal(("▁", -2), ("a", -1), ("b", -1), ("ab", -1.5f), ("日", -3), ("▁a", -1.2f)));
        SentencePieceModel model = SentencePieceModel.Create(pieces, SentencePieceModelType.Unigram, byteFallback: true);
        return new("unigram-bytes", model, [.. SpecialsAndUnknowns, "ab", "aZb", "日本", "😀😀", "a 日 b", "\u0000\u0001"]);
    }

    /// <summary>Whitespace options of the normalizer and their effect on decoding.</summary>
    private static TinySentencePieceCase Whitespace(string name, SentencePieceNormalizerSpec spec, bool suffix)
    {
        List<SentencePiece> pieces = Specials();
        string space = spec.EscapeWhitespaces ? "▁" : " ";
        pieces.AddRange(Normal((space, -2), ("a", -1), ("b", -1), ($"{space}a", -1.5f), ($"a{space}", -1.5f), ($"{space}{space}", -2.5f), ("ab", -1.8f)));
        SentencePieceModel model = SentencePieceModel.Create(pieces, SentencePieceModelType.Unigram, byteFallback: false,
            normalizer: spec, treatWhitespaceAsSuffix: suffix);
        return new(name, model,
        [
            .. SpecialsAndUnknowns, "a", "a b", " a", "a ", "  a  b  ", "a  b", "\ta\t", "ab ab", "   ", "a\u00a0b", "▁a", "a▁", " ▁ ",
        ]);
    }

    /// <summary>
    /// A hand-made chars map: longest match ("ab" over "a", "abc" over "ab"), deletion, expansion into spaces that
    /// the whitespace rules then see, and a user-defined symbol matched before normalization.
    /// </summary>
    private static TinySentencePieceCase CharsMap()
    {
        byte[] map = PrecompiledCharsMap.Build(CharsMapRules).ToBytes();
        var spec = new SentencePieceNormalizerSpec("custom", map, AddDummyPrefix: true, RemoveExtraWhitespaces: true, EscapeWhitespaces: true);
        List<SentencePiece> pieces = Specials();
        pieces.AddRange(Normal(("▁", -2), ("A", -1), ("f", -1), ("i", -1), ("fi", -1.5f), ("é", -1), ("α", -1), ("X", -1), ("Y", -1), ("Z", -1),
            ("Ω", -1), ("!", -1), ("b", -1), ("c", -1), ("▁A", -1.2f)));
        pieces.Add(new SentencePiece("Ａ!", 0, SentencePieceType.UserDefined));
        SentencePieceModel model = SentencePieceModel.Create(pieces, SentencePieceModelType.Unigram, byteFallback: false, normalizer: spec);
        return new("charsmap", model,
        [
            .. SpecialsAndUnknowns, "Ａ", "ＡＡ", "Ａ!", "Ａ !", "ﬁ", "e\u0301", "é", "a", "ab", "abc", "abcabc", "aab", "a\tb\nc", "\u3000a\u3000",
            "zero\u200bwidth", "\u200b", "Ω Ω", "!", "a!b", "  !  ",
        ]);
    }

    private static byte[] DenormalizerMap() =>
        PrecompiledCharsMap.Build(new Dictionary<string, string> { ["a"] = "A", ["bc"] = "<BC>", ["é"] = "e\u0301" }).ToBytes();

    /// <summary>
    /// A denormalizer_spec: decoded text goes through a second normalizer, whose whitespace options apply as well
    /// (with the proto defaults, it gains a leading space marker and escaped spaces).
    /// </summary>
    private static TinySentencePieceCase Denormalizer(string name, SentencePieceNormalizerSpec denormalizer)
    {
        List<SentencePiece> pieces = Specials();
        pieces.AddRange(Normal(("▁", -2), ("a", -1), ("b", -1), ("c", -1), ("é", -1), ("▁a", -1.5f), ("bc", -1.2f)));
        SentencePieceModel model = SentencePieceModel.Create(pieces, SentencePieceModelType.Unigram, byteFallback: false, denormalizer: denormalizer);
        return new(name, model, [.. SpecialsAndUnknowns, "abc", "a bc a", "  é  ", "cba"]);
    }

    /// <summary>The word and char model types.</summary>
    private static TinySentencePieceCase WordAndChar(SentencePieceModelType type)
    {
        List<SentencePiece> pieces = Specials();
        pieces.AddRange(Normal(("▁hello", -1), ("▁world", -2), ("▁", -3), ("h", -4), ("e", -4), ("l", -4), ("o", -4), ("w", -4)));
        pieces.Add(new SentencePiece("<sep>", 0, SentencePieceType.UserDefined));
        SentencePieceModel model = SentencePieceModel.Create(pieces, type, byteFallback: false);
        return new(type == SentencePieceModelType.Word ? "word" : "char", model,
            [.. SpecialsAndUnknowns, "hello world", "hello  world", "hello<sep>world", "helloworld", " hello"]);
    }
}
