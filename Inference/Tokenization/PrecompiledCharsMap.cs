using System.Buffers.Binary;
using System.Text;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>One rule of a <see cref="PrecompiledCharsMap"/> that matches a prefix of the input.</summary>
/// <param name="Length">Bytes of UTF-8 input the rule consumes.</param>
/// <param name="ReplacementUtf8">What those bytes become (UTF-8, possibly empty).</param>
public readonly record struct PrecompiledCharsMapMatch(int Length, ReadOnlyMemory<byte> ReplacementUtf8)
{
    /// <summary>The replacement as text.</summary>
    public string Replacement => Encoding.UTF8.GetString(ReplacementUtf8.Span);
}

/// <summary>
/// SentencePiece's compiled normalization rules (<c>normalizer_spec.precompiled_charsmap</c> in a <c>.model</c>
/// file, <c>precompiled_charsmap</c> of a <c>Precompiled</c> normalizer in a Hugging Face <c>tokenizer.json</c>):
/// a little-endian uint32 trie size, a darts-clone double-array trie over UTF-8 byte strings whose values are
/// offsets, and the NUL-separated replacement strings those offsets point into. Normalization replaces the longest
/// rule matching at each position, as SentencePiece's <c>Normalizer::NormalizePrefix</c> does. Immutable and safe to
/// share between threads.
/// </summary>
public sealed class PrecompiledCharsMap
{
    private static readonly byte[] ReplacementCharacter = [0xEF, 0xBF, 0xBD];

    private readonly byte[] _blob;
    private readonly DoubleArrayTrie _trie;
    private readonly ReadOnlyMemory<byte> _normalized;
    private readonly string _source;

    private PrecompiledCharsMap(byte[] blob, DoubleArrayTrie trie, ReadOnlyMemory<byte> normalized, string source)
    {
        _blob = blob;
        _trie = trie;
        _normalized = normalized;
        _source = source;
    }

    /// <summary>Units (4 bytes each) of the double-array trie.</summary>
    public int TrieUnitCount => _trie.UnitCount;

    /// <summary>Bytes of NUL-separated replacement strings.</summary>
    public int ReplacementBytes => _normalized.Length;

    /// <summary>Reads a compiled chars map.</summary>
    /// <param name="blob">The bytes of <c>precompiled_charsmap</c>.</param>
    /// <param name="source">Where the bytes come from (file and field), for error messages.</param>
    /// <exception cref="InvalidDataException">The blob is too short or its trie size exceeds it; the message names <paramref name="source"/>.</exception>
    public static PrecompiledCharsMap Parse(ReadOnlySpan<byte> blob, string source = "precompiled_charsmap")
    {
        // Normalizer::DecodePrecompiledCharsMap: <trie size: uint32 LE><trie><replacement strings>.
        if (blob.Length <= 4)
        {
            throw new InvalidDataException($"{source}: the chars map is {blob.Length} bytes; it needs a 4-byte trie size and a trie.");
        }

        uint trieSize = BinaryPrimitives.ReadUInt32LittleEndian(blob);
        if (trieSize >= (uint)blob.Length)
        {
            throw new InvalidDataException($"{source}: the trie size {trieSize} exceeds the {blob.Length}-byte chars map.");
        }

        if (trieSize > (uint)blob.Length - 4)
        {
            throw new InvalidDataException($"{source}: the trie size {trieSize} runs past the end of the {blob.Length}-byte chars map.");
        }

        byte[] copy = blob.ToArray();
        // darts-clone's set_array takes size / 4 units; trailing bytes of an odd-sized trie are ignored there too.
        var trie = DoubleArrayTrie.FromBytes(copy.AsSpan(4, (int)trieSize));
        return new PrecompiledCharsMap(copy, trie, copy.AsMemory(4 + (int)trieSize), source);
    }

    /// <summary>Reads a chars map stored as base64 (as <c>tokenizer.json</c> files store it).</summary>
    /// <exception cref="InvalidDataException">Not base64, or not a chars map; the message names <paramref name="source"/>.</exception>
    public static PrecompiledCharsMap FromBase64(string base64, string source = "precompiled_charsmap")
    {
        ArgumentNullException.ThrowIfNull(base64);
        byte[] bytes;
        try
        {
            bytes = Convert.FromBase64String(base64);
        }
        catch (FormatException e)
        {
            throw new InvalidDataException($"{source}: not valid base64 ({e.Message}).", e);
        }

        return Parse(bytes, source);
    }

    /// <summary>
    /// Compiles rules (UTF-8 source string to replacement) into the same format SentencePiece's builder writes.
    /// Sources must be non-empty and free of NUL; replacements free of NUL.
    /// </summary>
    /// <exception cref="ArgumentException">A rule has an empty source or a NUL character.</exception>
    public static PrecompiledCharsMap Build(IEnumerable<KeyValuePair<string, string>> rules)
    {
        ArgumentNullException.ThrowIfNull(rules);
        var normalized = new List<byte>();
        var offsets = new Dictionary<string, int>(StringComparer.Ordinal);
        var entries = new List<(byte[], int)>();
        foreach ((string from, string to) in rules.OrderBy(r => r.Key, StringComparer.Ordinal))
        {
            if (string.IsNullOrEmpty(from) || from.Contains('\0', StringComparison.Ordinal) || to.Contains('\0', StringComparison.Ordinal))
            {
                throw new ArgumentException($"Rule '{from}' -> '{to}': the source must be non-empty and neither side may contain NUL.", nameof(rules));
            }

            if (!offsets.TryGetValue(to, out int offset))
            {
                offset = normalized.Count;
                offsets[to] = offset;
                normalized.AddRange(Encoding.UTF8.GetBytes(to));
                normalized.Add(0);
            }

            entries.Add((Encoding.UTF8.GetBytes(from), offset));
        }

        byte[] trie = DoubleArrayTrie.Build(entries).ToBytes();
        byte[] blob = new byte[4 + trie.Length + normalized.Count];
        BinaryPrimitives.WriteUInt32LittleEndian(blob, (uint)trie.Length);
        trie.CopyTo(blob, 4);
        normalized.CopyTo(blob, 4 + trie.Length);
        return Parse(blob, "built chars map");
    }

    /// <summary>The compiled bytes (trie size, trie, replacement strings).</summary>
    public byte[] ToBytes() => (byte[])_blob.Clone();

    /// <summary>
    /// Every rule that matches a prefix of <paramref name="utf8"/>, shortest first (darts-clone's
    /// <c>commonPrefixSearch</c> order). SentencePiece applies the longest; the Hugging Face <c>Precompiled</c>
    /// normalizer applies the first.
    /// </summary>
    public IReadOnlyList<PrecompiledCharsMapMatch> FindPrefixMatches(ReadOnlySpan<byte> utf8)
    {
        List<(int Length, int Value)> found = _trie.CommonPrefixSearch(utf8);
        var matches = new PrecompiledCharsMapMatch[found.Count];
        for (int i = 0; i < found.Count; i++)
        {
            matches[i] = new PrecompiledCharsMapMatch(found[i].Length, ReplacementAt(found[i].Value));
        }

        return matches;
    }

    /// <summary>The longest rule matching a prefix of <paramref name="utf8"/>, as SentencePiece picks it.</summary>
    /// <param name="utf8">The input from the current position.</param>
    /// <param name="matchedLength">Bytes of input the rule consumes (0 when no rule matches).</param>
    /// <param name="replacement">What those bytes become.</param>
    /// <exception cref="InvalidDataException">The rule points outside the replacement strings (a corrupt chars map).</exception>
    public bool TryMatchLongestPrefix(ReadOnlySpan<byte> utf8, out int matchedLength, out ReadOnlySpan<byte> replacement)
    {
        matchedLength = _trie.LongestPrefix(utf8, out int value);
        if (matchedLength == 0)
        {
            replacement = default;
            return false;
        }

        replacement = ReplacementAt(value).Span;
        return true;
    }

    /// <summary>
    /// Applies the rules to <paramref name="text"/> as SentencePiece's character normalization does (the longest rule
    /// at each position; characters no rule matches are copied), without SentencePiece's whitespace handling.
    /// </summary>
    public string Normalize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Encoding.UTF8.GetString(Normalize(Encoding.UTF8.GetBytes(text)));
    }

    /// <summary>
    /// UTF-8 form of <see cref="Normalize(string)"/>: a malformed byte no rule matches becomes U+FFFD and consumes
    /// one byte, as in SentencePiece.
    /// </summary>
    public byte[] Normalize(ReadOnlySpan<byte> utf8)
    {
        var output = new List<byte>(utf8.Length + 16);
        while (!utf8.IsEmpty)
        {
            if (TryMatchLongestPrefix(utf8, out int length, out ReadOnlySpan<byte> replacement))
            {
                foreach (byte b in replacement)
                {
                    output.Add(b);
                }
            }
            else if (SentencePieceUtf8.IsValidDecode(utf8, out length))
            {
                foreach (byte b in utf8[..length])
                {
                    output.Add(b);
                }
            }
            else
            {
                output.AddRange(ReplacementCharacter);
            }

            utf8 = utf8[length..];
        }

        return [.. output];
    }

    private ReadOnlyMemory<byte> ReplacementAt(int offset)
    {
        // The trie's value is an offset into the NUL-separated strings; the string runs to the next NUL.
        if ((uint)offset >= (uint)_normalized.Length)
        {
            throw new InvalidDataException($"{_source}: a rule points at byte {offset}, outside the {_normalized.Length} bytes of replacement strings.");
        }

        ReadOnlySpan<byte> rest = _normalized.Span[offset..];
        int end = rest.IndexOf((byte)0);
        return _normalized.Slice(offset, end < 0 ? rest.Length : end);
    }
}
