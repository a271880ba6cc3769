using System.Buffers.Binary;
using System.Text;
using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Tests.Tokenizers;

/// <summary>The darts-clone double array and the precompiled chars map read and built by this library.</summary>
public sealed class SentencePieceCharsMapTests
{
    [Test]
    public void Albert_nmt_nfkc_chars_map_applies_NFKC_rules_by_longest_match()
    {
        SentencePieceModel model = SentencePieceModel.Load(SentencePieceTestModels.AlbertPath);
        Assert.That(model.NormalizerSpec.Name, Is.EqualTo("nmt_nfkc"));
        PrecompiledCharsMap map = PrecompiledCharsMap.Parse(model.NormalizerSpec.PrecompiledCharsMap, "spiece.model");
        Assert.That(map.TrieUnitCount, Is.GreaterThan(10_000));

        Assert.Multiple(() =>
        {
            Assert.That(map.Normalize("ﬁ ﬂ"), Is.EqualTo("fi fl"));
            Assert.That(map.Normalize("ＡＢＣ１２３"), Is.EqualTo("ABC123"));
            Assert.That(map.Normalize("①²½"), Is.EqualTo("121⁄2"));
            Assert.That(map.Normalize("ｶﾀｶﾅ"), Is.EqualTo("カタカナ"));
            Assert.That(map.Normalize("e\u0301"), Is.EqualTo("é"), "NFD to NFC is a two-character rule");
            Assert.That(map.Normalize("\u2126 \u212A \u212B"), Is.EqualTo("\u03A9 K \u00C5"), "ohm, kelvin and angstrom signs");
            Assert.That(map.Normalize("plain ascii"), Is.EqualTo("plain ascii"), "characters without a rule are copied");
            Assert.That(map.Normalize("\u3000"), Is.EqualTo(" "));
        });

        // Shortest first; SentencePiece takes the last (longest) one.
        IReadOnlyList<PrecompiledCharsMapMatch> matches = map.FindPrefixMatches(Encoding.UTF8.GetBytes("e\u0301x"));
        Assert.That(matches.Select(m => m.Length), Is.Ordered.Ascending);
        Assert.That(matches[^1].Length, Is.EqualTo(3));
        Assert.That(matches[^1].Replacement, Is.EqualTo("é"));
        Assert.That(map.TryMatchLongestPrefix(Encoding.UTF8.GetBytes("xyz"), out int length, out _), Is.False);
        Assert.That(length, Is.Zero);
    }

    [Test]
    public void Built_chars_map_round_trips_and_matches_longest_rule()
    {
        PrecompiledCharsMap map = PrecompiledCharsMap.Build(SentencePieceTestModels.CharsMapRules);
        PrecompiledCharsMap reread = PrecompiledCharsMap.Parse(map.ToBytes());
        Assert.That(reread.ToBytes(), Is.EqualTo(map.ToBytes()));
        foreach ((string from, string to) in SentencePieceTestModels.CharsMapRules)
        {
            Assert.That(reread.TryMatchLongestPrefix(Encoding.UTF8.GetBytes(from), out int length, out ReadOnlySpan<byte> replacement), Is.True, from);
            Assert.That((length, Encoding.UTF8.GetString(replacement)), Is.EqualTo((Encoding.UTF8.GetByteCount(from), to)), from);
        }

        Assert.Multiple(() =>
        {
            Assert.That(reread.Normalize("abcab a"), Is.EqualTo("Y ZX α"), "abc beats ab beats a");
            Assert.That(reread.Normalize("zero\u200bwidth"), Is.EqualTo("zerowidth"), "a rule may delete");
            Assert.That(reread.FindPrefixMatches(Encoding.UTF8.GetBytes("abcd")).Select(m => m.Replacement), Is.EqualTo(new[] { "α", "X", "Y Z" }));
        });
    }

    [Test]
    public void Malformed_utf8_without_a_rule_becomes_one_replacement_character_per_byte()
    {
        PrecompiledCharsMap map = PrecompiledCharsMap.Build(new Dictionary<string, string> { ["a"] = "b" });
        byte[] input = [0x61, 0xFF, 0xE3, 0x81, 0x62, 0xC0, 0xAF, 0xED, 0xA0, 0x80, 0xEF, 0xBF, 0xBD];
        // a -> b; 0xFF; truncated E3 81; b; overlong C0 AF (two bytes); a UTF-16 surrogate ED A0 80 (three bytes); a real U+FFFD.
        string expected = "b\uFFFD\uFFFD\uFFFDb\uFFFD\uFFFD\uFFFD\uFFFD\uFFFD\uFFFD";
        Assert.That(Encoding.UTF8.GetString(map.Normalize(input)), Is.EqualTo(expected));
    }

    [Test]
    public void Broken_blobs_are_rejected_with_their_source()
    {
        Assert.That(() => PrecompiledCharsMap.Parse([1, 0, 0], "x.model: normalizer_spec.precompiled_charsmap"),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("x.model: normalizer_spec.precompiled_charsmap"));
        byte[] tooBig = new byte[12];
        BinaryPrimitives.WriteUInt32LittleEndian(tooBig, 100);
        Assert.That(() => PrecompiledCharsMap.Parse(tooBig, "m"), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("trie size 100"));
        Assert.That(() => PrecompiledCharsMap.FromBase64("not base64!", "tokenizer.json: normalizer.precompiled_charsmap"),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("tokenizer.json: normalizer.precompiled_charsmap"));

        // A rule that points past the replacement strings.
        byte[] blob = PrecompiledCharsMap.Build(new Dictionary<string, string> { ["a"] = "b" }).ToBytes();
        byte[] truncated = blob[..^2];
        PrecompiledCharsMap broken = PrecompiledCharsMap.Parse(truncated, "broken");
        Assert.That(() => broken.Normalize("a"), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("broken"));
    }

    [Test]
    public void Double_array_finds_exactly_the_keys_and_their_prefixes()
    {
        var random = new Random(7);
        var keys = new Dictionary<string, int>(StringComparer.Ordinal);
        string alphabet = "abcde▁é日😀";
        while (keys.Count < 3000)
        {
            int length = random.Next(1, 9);
            var text = new StringBuilder();
            for (int i = 0; i < length; i++)
            {
                int index = random.Next(alphabet.Length);
                text.Append(char.IsHighSurrogate(alphabet[index]) ? alphabet.Substring(index, 2) : char.IsLowSurrogate(alphabet[index]) ? alphabet.Substring(index - 1, 2) : alphabet[index].ToString());
            }

            keys.TryAdd(text.ToString(), keys.Count);
        }

        var trie = DoubleArrayTrie.Build(keys.Select(k => (Encoding.UTF8.GetBytes(k.Key), k.Value)));
        var reread = DoubleArrayTrie.FromBytes(trie.ToBytes());
        Assert.That(reread.UnitCount % 256, Is.Zero, "whole 256-unit blocks, as darts-clone writes");
        byte[][] encoded = [.. keys.Keys.Select(Encoding.UTF8.GetBytes)];
        foreach ((string key, int value) in keys)
        {
            Assert.That(reread.ExactMatch(Encoding.UTF8.GetBytes(key)), Is.EqualTo(value), key);
        }

        for (int probe = 0; probe < 2000; probe++)
        {
            byte[] text = encoded[random.Next(encoded.Length)].Concat(encoded[random.Next(encoded.Length)]).ToArray();
            var expected = new List<(int, int)>();
            for (int length = 1; length <= text.Length; length++)
            {
                if (keys.TryGetValue(Encoding.UTF8.GetString(text, 0, length), out int value) && Encoding.UTF8.GetByteCount(Encoding.UTF8.GetString(text, 0, length)) == length)
                {
                    expected.Add((length, value));
                }
            }

            Assert.That(reread.CommonPrefixSearch(text), Is.EqualTo(expected));
            Assert.That(reread.ExactMatch(text), Is.EqualTo(keys.GetValueOrDefault(Encoding.UTF8.GetString(text), -1)));
        }
    }

    [Test]
    public void Double_array_keeps_the_first_of_duplicate_keys_and_rejects_what_it_cannot_store()
    {
        var trie = DoubleArrayTrie.Build([("ab"u8.ToArray(), 5), ("ab"u8.ToArray(), 9), ("a"u8.ToArray(), 1), ([], 3)]);
        Assert.That((trie.ExactMatch("ab"u8), trie.ExactMatch("a"u8), trie.ExactMatch("b"u8), trie.ExactMatch([])), Is.EqualTo((5, 1, -1, -1)));
        Assert.That(() => DoubleArrayTrie.Build([("a\0b"u8.ToArray(), 1)]), Throws.ArgumentException);
        Assert.That(() => DoubleArrayTrie.Build([("a"u8.ToArray(), -1)]), Throws.ArgumentException);
    }
}
