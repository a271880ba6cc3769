using System.Text;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery.Vocabulary;

namespace ModelSurgery.Tests.Tokenizers;

/// <summary>
/// Rules of <see cref="SentencePieceProcessor"/> on tiny models built here, with expectations worked out by hand from
/// SentencePiece's sources (the parity tests check the same rules against the real SentencePiece).
/// </summary>
public sealed class SentencePieceProcessorTests
{
    private static SentencePieceProcessor Processor(SentencePieceModelType type, IEnumerable<(string Piece, float Score)> normal,
        bool byteFallback = false, SentencePieceNormalizerSpec? normalizer = null, bool suffix = false, IEnumerable<SentencePiece>? extra = null)
    {
        var pieces = new List<SentencePiece>
        {
            new("<unk>", 0, SentencePieceType.Unknown), new("<s>", 0, SentencePieceType.Control), new("</s>", 0, SentencePieceType.Control),
        };
        if (byteFallback)
        {
            pieces.AddRange(Enumerable.Range(0, 256).Select(b => new SentencePiece($"<0x{b:X2}>", 0, SentencePieceType.Byte)));
        }

        pieces.AddRange(normal.Select(p => new SentencePiece(p.Piece, p.Score, SentencePieceType.Normal)));
        pieces.AddRange(extra ?? []);
        return new SentencePieceProcessor(SentencePieceModel.Create(pieces, type, byteFallback, normalizer: normalizer, treatWhitespaceAsSuffix: suffix));
    }

    private static string Pieces(SentencePieceProcessor processor, string text) => string.Join(" ", processor.EncodeToPieces(text));

    [TestCase(true, false, true, false, "  a  b ", "▁▁▁a▁▁b▁")]
    [TestCase(true, true, true, false, "  a   b  ", "▁a▁b")]
    [TestCase(true, true, true, false, "   ", "")]
    [TestCase(true, true, true, false, "", "")]
    [TestCase(false, false, true, false, "a b", "a▁b")]
    [TestCase(true, false, false, false, "a b", " a b")]
    [TestCase(true, true, false, false, " a  b ", " a b")]
    [TestCase(true, false, true, true, "a b", "a▁b▁")]
    [TestCase(true, true, true, true, "  a  b  ", "a▁b▁")]
    [TestCase(false, true, true, true, "  a  b  ", "a▁b")]
    public void Whitespace_options_normalize_as_SentencePiece(bool dummyPrefix, bool removeExtra, bool escape, bool suffix, string text, string expected)
    {
        var spec = new SentencePieceNormalizerSpec("identity", [], dummyPrefix, removeExtra, escape);
        Assert.That(new SentencePieceNormalizer(spec, suffix).Normalize(text), Is.EqualTo(expected));
    }

    [Test]
    public void Chars_map_output_goes_through_the_whitespace_rules_and_user_defined_symbols_skip_it()
    {
        byte[] map = PrecompiledCharsMap.Build(SentencePieceTestModels.CharsMapRules).ToBytes();
        var spec = new SentencePieceNormalizerSpec("custom", map, AddDummyPrefix: true, RemoveExtraWhitespaces: true);
        SentencePieceProcessor processor = Processor(SentencePieceModelType.Unigram, [("▁", -1), ("A", -1), ("!", -1)],
            normalizer: spec, extra: [new SentencePiece("Ａ!", 0, SentencePieceType.UserDefined)]);
        Assert.Multiple(() =>
        {
            // '!' becomes "  !": its spaces collapse with the one before it.
            Assert.That(processor.Normalize("a !"), Is.EqualTo("▁α▁!"));
            Assert.That(processor.Normalize("\tＡ\u3000\u3000Ａ\n"), Is.EqualTo("▁A▁A"));
            // The user-defined symbol is matched on the raw text, before the rule Ａ -> A could apply.
            Assert.That(processor.Normalize("ＡＡ!"), Is.EqualTo("▁AＡ!"));
            Assert.That(Pieces(processor, "ＡＡ!"), Is.EqualTo("▁ A Ａ!"));
        });
    }

    [Test]
    public void Malformed_utf8_input_becomes_replacement_characters()
    {
        SentencePieceProcessor processor = Processor(SentencePieceModelType.Bpe, [("▁", 0), ("a", 0), ("\uFFFD", 0)], byteFallback: true);
        int replacement = processor.PieceToId("\uFFFD");
        Assert.That(processor.EncodeUtf8([0x61, 0xFF, 0xC3]), Is.EqualTo(new[] { processor.PieceToId("▁"), processor.PieceToId("a"), replacement, replacement }));
    }

    /// <summary>
    /// "ab" and "ba" score the same. SentencePiece merges the leftmost pair first: ▁ a b a becomes ▁ ab a; resolving
    /// ties from the right (Microsoft.ML.Tokenizers' LlamaTokenizer) gives ▁ a ba. Whitespace runs show the same with
    /// one piece: ▁▁ pairs from the left.
    /// </summary>
    [Test]
    public void Bpe_merges_the_leftmost_pair_among_equal_scores()
    {
        SentencePieceProcessor processor = Processor(SentencePieceModelType.Bpe, [("▁", 0), ("a", 0), ("b", 0), ("ab", -1), ("ba", -1), ("▁▁", -2)]);
        Assert.Multiple(() =>
        {
            Assert.That(Pieces(processor, "aba"), Is.EqualTo("▁ ab a"));
            Assert.That(Pieces(processor, "babab"), Is.EqualTo("▁ ba ba b"));
            Assert.That(Pieces(processor, "    a"), Is.EqualTo("▁▁ ▁▁ ▁ a"));
        });
    }

    /// <summary>
    /// The BPE encoder merges stretches between word-initial U+2581 separately when no piece spans such a position;
    /// that must give exactly the ids of one agenda over the whole text, as SentencePiece runs it.
    /// </summary>
    [Test]
    public void Bpe_merging_word_stretches_separately_equals_one_agenda_over_the_text()
    {
        SentencePieceModel model = SentencePieceParityTests.Model("mistral-7b-derived");
        var vocabulary = new SentencePieceVocabulary(model);
        var stretches = new SentencePieceBpeEncoder(vocabulary);
        var whole = new SentencePieceBpeEncoder(vocabulary, allowStretches: false);
        Assert.That((stretches.SplitsIntoStretches, whole.SplitsIntoStretches), Is.EqualTo((true, false)));
        var normalizer = new SentencePieceNormalizer(model.NormalizerSpec);
        var scratch = new SentencePieceScratch();
        var a = new List<SentencePieceSegment>();
        var b = new List<SentencePieceSegment>();
        var normalized = new ByteBuffer(1024);
        foreach (string text in SentencePieceTestModels.CorpusDocuments().Take(3000).Concat(["  a  b  ", "x▁▁y ▁ z", "　 　 日本 😀"]))
        {
            normalizer.Normalize(Encoding.UTF8.GetBytes(text), ref normalized);
            stretches.Encode(normalized.Span, scratch, a);
            whole.Encode(normalized.Span, scratch, b);
            Assert.That(a, Is.EqualTo(b), text);
        }

        // A piece with U+2581 after another character, or an UNUSED piece, keeps the whole text in one agenda.
        SentencePieceModel Tiny(SentencePiece extra) => SentencePieceModel.Create(
            [new("<unk>", 0, SentencePieceType.Unknown), new("▁", 0, SentencePieceType.Normal), new("a", 0, SentencePieceType.Normal), extra],
            SentencePieceModelType.Bpe, false);
        Assert.That(new SentencePieceBpeEncoder(new SentencePieceVocabulary(Tiny(new("a▁", -1, SentencePieceType.Normal)))).SplitsIntoStretches, Is.False);
        Assert.That(new SentencePieceBpeEncoder(new SentencePieceVocabulary(Tiny(new("▁▁a", -1, SentencePieceType.Normal)))).SplitsIntoStretches, Is.True);
        Assert.That(new SentencePieceBpeEncoder(new SentencePieceVocabulary(Tiny(new("▁a", -1, SentencePieceType.Unused)))).SplitsIntoStretches, Is.False);
    }

    [Test]
    public void Bpe_merges_the_highest_score_first_and_splits_unused_pieces_back()
    {
        SentencePieceProcessor processor = Processor(SentencePieceModelType.Bpe, [("▁", 0), ("a", 0), ("b", 0), ("c", 0), ("ab", -2), ("bc", -1), ("abc", -3)],
            extra: [new SentencePiece("▁a", -0.5f, SentencePieceType.Unused)]);
        Assert.Multiple(() =>
        {
            // ▁a (-0.5, UNUSED) merges first and blocks ab; bc (-1) follows; ▁a is then split back into ▁ a.
            Assert.That(Pieces(processor, "abc"), Is.EqualTo("▁ a bc"));
            Assert.That(Pieces(processor, "ab"), Is.EqualTo("▁ a b"));
            Assert.That(Pieces(processor, "a"), Is.EqualTo("▁ a"));
            Assert.That(Pieces(processor, "cab"), Is.EqualTo("▁ c ab"));
        });
    }

    [Test]
    public void Unknown_characters_merge_into_one_unknown_id_or_become_bytes_with_byte_fallback()
    {
        SentencePieceProcessor plain = Processor(SentencePieceModelType.Bpe, [("▁", 0), ("a", 0)]);
        Assert.That(plain.Encode("axyza"), Is.EqualTo(new[] { 3, 4, 0, 4 }));
        Assert.That(Pieces(plain, "axyza"), Is.EqualTo("▁ a xyz a"));
        Assert.That(plain.Decode(plain.Encode("axyza")), Is.EqualTo("a \u2047 a"));

        SentencePieceProcessor bytes = Processor(SentencePieceModelType.Unigram, [("▁", -1), ("a", -1)], byteFallback: true);
        Assert.That(Pieces(bytes, "aé😀"), Is.EqualTo("▁ a <0xC3> <0xA9> <0xF0> <0x9F> <0x98> <0x80>"));
        Assert.That(bytes.Encode("é"), Is.EqualTo(new[] { 3 + 256, 3 + 0xC3, 3 + 0xA9 }));
        Assert.That(bytes.Decode(bytes.Encode("aé😀")), Is.EqualTo("aé😀"));
        // A byte run that is not UTF-8 decodes to U+FFFD per bad byte, as SentencePiece does.
        Assert.That(bytes.Decode([3 + 0xC3, 3 + 0x61, 3 + 0xFF]), Is.EqualTo("\uFFFDa\uFFFD"));
    }

    /// <summary>
    /// An unknown character scores (lowest normal score - 10) = -13 here. For "xa" the path through an unknown x
    /// (-13 + 10.25) beats the piece "xa" (-3); for "yb" it does not (-13 + 9.75). A penalty of 10.5 or 9.5 would flip
    /// one of them; an UNUSED piece's score must not count as the lowest.
    /// </summary>
    [Test]
    public void Unigram_scores_an_unknown_character_ten_below_the_worst_normal_piece()
    {
        SentencePieceProcessor processor = Processor(SentencePieceModelType.Unigram,
            [("▁", -2), ("a", 10.25f), ("b", 9.75f), ("xa", -3), ("yb", -3)], extra: [new SentencePiece("zz", -100, SentencePieceType.Unused)]);
        Assert.Multiple(() =>
        {
            Assert.That(Pieces(processor, "xa"), Is.EqualTo("▁ x a"));
            Assert.That(processor.Encode("xa"), Is.EqualTo(new[] { 3, 0, 4 }));
            Assert.That(Pieces(processor, "yb"), Is.EqualTo("▁ yb"));
        });
    }

    [Test]
    public void Unigram_prefers_user_defined_pieces_and_never_uses_unused_ones()
    {
        SentencePieceProcessor processor = Processor(SentencePieceModelType.Unigram, [("▁", -1), ("a", -1), ("b", -1), ("@", -0.1f)],
            extra: [new SentencePiece("@@", 0, SentencePieceType.UserDefined), new SentencePiece("ab", 50, SentencePieceType.Unused)]);
        Assert.Multiple(() =>
        {
            Assert.That(Pieces(processor, "a@@b"), Is.EqualTo("▁ a @@ b"));
            Assert.That(Pieces(processor, "ab"), Is.EqualTo("▁ a b"));
        });
    }

    [Test]
    public void Decoding_drops_control_pieces_and_one_leading_space()
    {
        SentencePieceProcessor processor = Processor(SentencePieceModelType.Bpe, [("▁", 0), ("a", 0), ("▁a", -1)]);
        int space = processor.PieceToId("▁"), a = processor.PieceToId("a"), spaceA = processor.PieceToId("▁a");
        Assert.Multiple(() =>
        {
            Assert.That(processor.Decode([1, spaceA, 2, spaceA]), Is.EqualTo("a a"));
            Assert.That(processor.Decode([space, spaceA]), Is.EqualTo(" a"), "only the first piece loses its space");
            Assert.That(processor.Decode([a, spaceA]), Is.EqualTo("a a"));
            Assert.That(processor.Decode([]), Is.Empty);
            Assert.That(processor.Decode(processor.Encode("  a  ")), Is.EqualTo("  a  "));
            Assert.That(() => processor.Decode([99]), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("99"));
        });

        var removing = new SentencePieceNormalizerSpec("identity", [], AddDummyPrefix: false, RemoveExtraWhitespaces: true);
        SentencePieceProcessor collapsing = Processor(SentencePieceModelType.Bpe, [("▁", 0), ("a", 0), ("▁a", -1)], normalizer: removing);
        Assert.That(collapsing.Decode([space, space, spaceA]), Is.EqualTo("a"), "with remove_extra_whitespaces every leading space goes");
    }

    [Test]
    public void Special_ids_come_from_the_piece_names_and_types()
    {
        var albert = SentencePieceProcessor.Load(SentencePieceTestModels.AlbertPath);
        Assert.That((albert.VocabularySize, albert.UnknownId, albert.BosId, albert.EosId, albert.PadId), Is.EqualTo((30000, 1, -1, -1, 0)));
        Assert.That((albert.IdToPiece(2), albert.GetPieceType(2), albert.PieceToId("[SEP]")), Is.EqualTo(("[CLS]", SentencePieceType.Control, 3)));
        Assert.That(albert.PieceToId("no such piece"), Is.EqualTo(1));

        var mistral = new SentencePieceProcessor(SentencePieceParityTests.Model("mistral-7b-derived"));
        Assert.That((mistral.VocabularySize, mistral.UnknownId, mistral.BosId, mistral.EosId, mistral.PadId), Is.EqualTo((32000, 0, 1, 2, -1)));
        Assert.That(mistral.Encode("Hello world"), Is.EqualTo(new[] { 22557, 1526 }), "Mistral 7B's ids for 'Hello world' (no BOS)");
    }

    [Test]
    public void Albert_pieces_concatenate_to_the_normalized_text()
    {
        var albert = SentencePieceProcessor.Load(SentencePieceTestModels.AlbertPath);
        foreach (string text in SentencePieceTestModels.CorpusDocuments().Take(300).Concat(["ＦＵＬＬ　ｗｉｄｔｈ", "  Tabs\tand\nnewlines  ", "日本語 😀"]))
        {
            Assert.That(string.Concat(albert.EncodeToPieces(text)), Is.EqualTo(albert.Normalize(text)), text);
        }
    }

    /// <summary>With byte fallback and the identity normalizer (Llama 2 / Mistral), decoding gives back any text.</summary>
    [Test]
    public void Byte_fallback_bpe_round_trips_random_text()
    {
        var processor = new SentencePieceProcessor(SentencePieceParityTests.Model("mistral-7b-derived"));
        var random = new Random(11);
        string[] atoms = ["a", "Z", " ", "  ", "\t", "\n", "é", "e\u0301", "日", "本", "😀", "👩‍👩‍👧", "\u00a0", "\u3000", "\u200b", "1", "99", ".", "<s>", "\uFFFD", "𠀀", "ﬁ", "\0"];
        for (int n = 0; n < 2000; n++)
        {
            var text = new StringBuilder();
            int length = random.Next(0, 30);
            for (int i = 0; i < length; i++)
            {
                text.Append(atoms[random.Next(atoms.Length)]);
            }

            string s = text.ToString();
            int[] ids = processor.Encode(s);
            Assert.That(processor.Decode(ids), Is.EqualTo(s), s);
            Assert.That(ids, Has.None.EqualTo(processor.UnknownId), s);
        }
    }

    [Test]
    public void Concurrent_encoding_gives_the_same_ids()
    {
        var processor = SentencePieceProcessor.Load(SentencePieceTestModels.AlbertPath);
        var bpe = new SentencePieceProcessor(SentencePieceParityTests.Model("mistral-7b-derived"));
        string[] documents = [.. SentencePieceTestModels.CorpusDocuments().Take(2000)];
        int[][] expected = [.. documents.Select(processor.Encode)];
        int[][] expectedBpe = [.. documents.Select(bpe.Encode)];
        var actual = new int[documents.Length][];
        var actualBpe = new int[documents.Length][];
        Parallel.For(0, documents.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            actual[i] = processor.Encode(documents[i]);
            actualBpe[i] = bpe.Encode(documents[i]);
        });
        Assert.That(actual, Is.EqualTo(expected));
        Assert.That(actualBpe, Is.EqualTo(expectedBpe));
    }

    [Test]
    public void Invalid_models_are_rejected_naming_the_file_and_piece()
    {
        static SentencePieceModel Parsed(IReadOnlyList<SentencePiece> pieces, bool byteFallback = false) =>
            SentencePieceModel.Parse(SentencePieceModel.Create(pieces, SentencePieceModelType.Bpe, byteFallback).ToBytes(), "bad.model");
        SentencePiece unk = new("<unk>", 0, SentencePieceType.Unknown);
        Assert.Multiple(() =>
        {
            Assert.That(() => new SentencePieceProcessor(Parsed([new("a", 0, SentencePieceType.Normal)])),
                Throws.InstanceOf<InvalidDataException>().With.Message.Contains("bad.model").And.Message.Contains("UNKNOWN"));
            Assert.That(() => new SentencePieceProcessor(Parsed([unk, new("a", 0, SentencePieceType.Normal), new("a", -1, SentencePieceType.Normal)])),
                Throws.InstanceOf<InvalidDataException>().With.Message.Contains("bad.model: piece 2 ('a') is already defined as piece 1"));
            Assert.That(() => new SentencePieceProcessor(Parsed([unk, new("<0x41>", 0, SentencePieceType.Byte)])),
                Throws.InstanceOf<InvalidDataException>().With.Message.Contains("byte_fallback is false"));
            Assert.That(() => new SentencePieceProcessor(Parsed([unk, new("<0x41>", 0, SentencePieceType.Byte)], byteFallback: true)),
                Throws.InstanceOf<InvalidDataException>().With.Message.Contains("<0x00>"));
            Assert.That(() => new SentencePieceProcessor(Parsed([unk, new("", 0, SentencePieceType.Normal)])),
                Throws.InstanceOf<InvalidDataException>().With.Message.Contains("piece 1 is empty"));
        });

        var badMap = new SentencePieceNormalizerSpec("broken", [9, 0, 0, 0, 1], true, true, true);
        Assert.That(() => new SentencePieceProcessor(SentencePieceModel.Create([unk], SentencePieceModelType.Unigram, false, normalizer: badMap)),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("normalizer_spec.precompiled_charsmap"));
    }

    [Test]
    public void Malformed_protobuf_bytes_are_refused_naming_the_file()
    {
        byte[] good = SentencePieceModel.Create([new("<unk>", 0, SentencePieceType.Unknown), new("a", -1, SentencePieceType.Normal)], SentencePieceModelType.Bpe, false).ToBytes();
        string path = Path.Combine(Path.GetTempPath(), $"malformed-{Guid.NewGuid():N}.model");
        try
        {
            Assert.Multiple(() =>
            {
                // Cut inside the last field, a length-delimited field claiming more bytes than follow, a group (wire type 3), field number 0.
                foreach (byte[] bytes in new[] { good[..^1], [0x0A, 0x7F, 0x01], [0x0B], [0x00, 0x01] })
                {
                    File.WriteAllBytes(path, bytes);
                    Assert.That(() => SentencePieceModel.Load(path), Throws.InstanceOf<InvalidDataException>().With.Message.StartsWith(path + ": "), Convert.ToHexString(bytes));
                }

                // Well-formed bytes round-trip unchanged through the parser and writer.
                Assert.That(SentencePieceModel.Parse(good, "good.model").ToBytes(), Is.EqualTo(good));
            });
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void Self_test_data_must_be_reproduced_for_the_model_to_load()
    {
        static byte[] Field(int number, byte[] payload) => [(byte)((number << 3) | 2), (byte)payload.Length, .. payload];
        static byte[] Sample(string input, string expected) =>
            Field(1, [.. Field(1, Encoding.UTF8.GetBytes(input)), .. Field(2, Encoding.UTF8.GetBytes(expected))]);
        SentencePieceModel Model(SentencePieceModelType type, string expected) => SentencePieceModel.Parse(
            [.. SentencePieceModel.Create([new("<unk>", 0, SentencePieceType.Unknown), new("▁", -1, SentencePieceType.Normal), new("a", -1, SentencePieceType.Normal),
                new("▁a", -2, SentencePieceType.Normal), new("b", -1, SentencePieceType.Normal)], type, false).ToBytes(),
              .. Field(4, [.. Sample("a", expected), .. Sample("b", "▁ b")])], "selftest.model");

        Assert.That(new SentencePieceProcessor(Model(SentencePieceModelType.Bpe, "▁a")).Encode("a"), Is.EqualTo(new[] { 3 }));
        Assert.That(() => new SentencePieceProcessor(Model(SentencePieceModelType.Bpe, "▁ a")),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("selftest.model: 1/2 self_test_data samples"));
        // Unigram accepts another segmentation with the same score: ▁ a (-1 + -1) for ▁a (-2).
        Assert.That(() => new SentencePieceProcessor(Model(SentencePieceModelType.Unigram, "▁ a")), Throws.Nothing);
        Assert.That(() => new SentencePieceProcessor(Model(SentencePieceModelType.Unigram, "▁ a b")), Throws.InstanceOf<InvalidDataException>());
    }

    [Test]
    public void Model_settings_round_trip_through_the_file()
    {
        var spec = new SentencePieceNormalizerSpec("custom", PrecompiledCharsMap.Build(SentencePieceTestModels.CharsMapRules).ToBytes(), false, true, false);
        SentencePieceModel model = SentencePieceModel.Create([new("<unk>", 0, SentencePieceType.Unknown)], SentencePieceModelType.Unigram, false,
            normalizer: spec, treatWhitespaceAsSuffix: true);
        SentencePieceModel reread = SentencePieceModel.Parse(model.ToBytes(), "x.model");
        SentencePieceNormalizerSpec n = reread.NormalizerSpec;
        Assert.That((n.Name, n.AddDummyPrefix, n.RemoveExtraWhitespaces, n.EscapeWhitespaces), Is.EqualTo(("custom", false, true, false)));
        Assert.That(reread.NormalizerSpec.PrecompiledCharsMap, Is.EqualTo(spec.PrecompiledCharsMap));
        Assert.That((reread.TreatWhitespaceAsSuffix, reread.UnknownPiece, reread.BosPiece, reread.UnknownSurface, reread.DenormalizerSpec),
            Is.EqualTo((true, "<unk>", "<s>", " \u2047 ", (SentencePieceNormalizerSpec?)null)));

        // A spec without fields gets SentencePiece's proto defaults.
        SentencePieceModel albert = SentencePieceModel.Load(SentencePieceTestModels.AlbertPath);
        Assert.That((albert.NormalizerSpec.AddDummyPrefix, albert.NormalizerSpec.RemoveExtraWhitespaces, albert.NormalizerSpec.EscapeWhitespaces), Is.EqualTo((true, true, true)));
    }

    /// <summary>
    /// After compression every kept piece that the original model encodes as itself still encodes as itself (its
    /// merge ancestors were kept); text whose original ids are all kept encodes to the same ids renumbered.
    /// </summary>
    [Test]
    public void Compressed_bpe_model_encodes_kept_pieces_as_themselves()
    {
        SentencePieceModel model = SentencePieceParityTests.Model("mistral-7b-derived");
        var original = new SentencePieceProcessor(model);
        long[] counts = new long[model.Pieces.Count];
        foreach (string document in SentencePieceTestModels.CorpusDocuments().Take(3000))
        {
            foreach (int id in original.Encode(document))
            {
                counts[id]++;
            }
        }

        CompressedTokenizer<SentencePieceModel> result = VocabularyCompressor.Compress(model, counts, CompressionTarget.Keep(3000));
        var compressed = new SentencePieceProcessor(SentencePieceModel.Parse(result.Tokenizer.ToBytes(), "compressed.model"));
        Assert.That(compressed.VocabularySize, Is.EqualTo(3000));
        int checkedPieces = 0;
        var failures = new List<string>();
        for (int newId = 0; newId < result.Tokenizer.Pieces.Count; newId++)
        {
            SentencePiece piece = result.Tokenizer.Pieces[newId];
            if (piece.Type != SentencePieceType.Normal || !piece.Piece.StartsWith('▁'))
            {
                continue;
            }

            // With the dummy prefix, "▁word" is what the text "word" normalizes to.
            string text = piece.Piece[1..].Replace('▁', ' ');
            if (original.Encode(text) is not [int oldId] || oldId != result.Map.KeptOldIds[newId])
            {
                continue;
            }

            checkedPieces++;
            if (compressed.Encode(text) is not [int id] || id != newId)
            {
                failures.Add($"{piece.Piece}: {string.Join(" ", compressed.EncodeToPieces(text))}");
            }
        }

        Assert.That(checkedPieces, Is.GreaterThan(1000));
        Assert.That(failures, Is.Empty, string.Join("\n", failures.Take(20)));
    }
}
