using System.Text;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>
/// SentencePiece's normalizer (normalizer.cc): character rules from the precompiled chars map (longest match over
/// UTF-8, a malformed byte becoming U+FFFD), user-defined symbols passed through unnormalized, then the whitespace
/// options of the spec (dummy prefix, or suffix with <c>treat_whitespace_as_suffix</c>; removal of extra
/// whitespace; spaces written as U+2581). Immutable and safe to share between threads.
/// </summary>
public sealed class SentencePieceNormalizer
{
    private readonly SentencePieceNormalizerSpec _spec;
    private readonly PrecompiledCharsMap? _charsMap;
    private readonly SentencePiecePrefixMatcher? _userDefined;
    private readonly bool _treatWhitespaceAsSuffix;

    /// <summary>A normalizer for <paramref name="spec"/>.</summary>
    /// <param name="spec">The normalizer spec.</param>
    /// <param name="treatWhitespaceAsSuffix">trainer_spec.treat_whitespace_as_suffix: the dummy space goes after the text.</param>
    /// <param name="source">The file and field the spec comes from, for error messages.</param>
    /// <exception cref="InvalidDataException">The chars map is malformed.</exception>
    public SentencePieceNormalizer(SentencePieceNormalizerSpec spec, bool treatWhitespaceAsSuffix = false, string source = "normalizer_spec")
        : this(spec, treatWhitespaceAsSuffix, null, source)
    {
    }

    internal SentencePieceNormalizer(SentencePieceNormalizerSpec spec, bool treatWhitespaceAsSuffix, SentencePiecePrefixMatcher? userDefined, string source)
    {
        ArgumentNullException.ThrowIfNull(spec);
        _spec = spec;
        _charsMap = spec.PrecompiledCharsMap.Length == 0 ? null : PrecompiledCharsMap.Parse(spec.PrecompiledCharsMap, $"{source}.precompiled_charsmap");
        _userDefined = userDefined;
        _treatWhitespaceAsSuffix = treatWhitespaceAsSuffix;
    }

    /// <summary>The spec this normalizer applies.</summary>
    public SentencePieceNormalizerSpec Spec => _spec;

    /// <summary>The compiled character rules, or null when the spec has none.</summary>
    public PrecompiledCharsMap? CharsMap => _charsMap;

    /// <summary>Normalizes <paramref name="text"/> as SentencePiece's <c>Normalize</c> does (spaces appear as U+2581 when escaped).</summary>
    public string Normalize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        byte[] input = Encoding.UTF8.GetBytes(text);
        var output = new ByteBuffer(input.Length * 3 + 8);
        Normalize(input, ref output);
        return Encoding.UTF8.GetString(output.Span);
    }

    /// <summary>Normalizes UTF-8 bytes (malformed sequences included) into <paramref name="output"/>, which is cleared first.</summary>
    internal void Normalize(ReadOnlySpan<byte> input, ref ByteBuffer output)
    {
        output.Clear();
        if (input.IsEmpty)
        {
            return;
        }

        bool removeExtra = _spec.RemoveExtraWhitespaces;
        bool escape = _spec.EscapeWhitespaces;
        if (removeExtra)
        {
            // Leading whitespace, judged after normalization (a rule may turn other characters into spaces).
            while (!input.IsEmpty)
            {
                int consumed = NormalizePrefix(input, out ReadOnlySpan<byte> piece);
                if (!piece.SequenceEqual(" "u8))
                {
                    break;
                }

                input = input[consumed..];
            }

            if (input.IsEmpty)
            {
                return;
            }
        }

        if (!_treatWhitespaceAsSuffix && _spec.AddDummyPrefix)
        {
            AddSpace(ref output, escape);
        }

        bool isPrevSpace = removeExtra;
        while (!input.IsEmpty)
        {
            int consumed = NormalizePrefix(input, out ReadOnlySpan<byte> piece);
            // Spaces that start a piece are dropped while the previous piece ended with one (collapsing runs).
            while (isPrevSpace && !piece.IsEmpty && piece[0] == (byte)' ')
            {
                piece = piece[1..];
            }

            if (!piece.IsEmpty)
            {
                foreach (byte b in piece)
                {
                    if (escape && b == (byte)' ')
                    {
                        output.Append(SentencePieceUtf8.SpaceSymbol);
                    }
                    else
                    {
                        output.Append(b);
                    }
                }

                isPrevSpace = piece[^1] == (byte)' ';
            }

            input = input[consumed..];
            if (!removeExtra)
            {
                isPrevSpace = false;
            }
        }

        if (removeExtra)
        {
            ReadOnlySpan<byte> space = escape ? SentencePieceUtf8.SpaceSymbol : " "u8;
            while (output.Span.EndsWith(space))
            {
                output.Length -= space.Length;
            }
        }

        if (_treatWhitespaceAsSuffix && _spec.AddDummyPrefix)
        {
            AddSpace(ref output, escape);
        }
    }

    /// <summary>
    /// Normalizer::NormalizePrefix: the normalized form of the input's first unit and the bytes it consumes. A
    /// user-defined symbol is taken whole and unchanged; otherwise the longest chars-map rule applies; otherwise one
    /// character is copied, or one malformed byte becomes U+FFFD.
    /// </summary>
    private int NormalizePrefix(ReadOnlySpan<byte> input, out ReadOnlySpan<byte> normalized)
    {
        if (_userDefined is not null)
        {
            int length = _userDefined.PrefixMatch(input, out bool found);
            if (found)
            {
                normalized = input[..length];
                return length;
            }
        }

        if (_charsMap is not null && _charsMap.TryMatchLongestPrefix(input, out int matched, out normalized))
        {
            return matched;
        }

        if (SentencePieceUtf8.IsValidDecode(input, out int charLength))
        {
            normalized = input[..charLength];
            return charLength;
        }

        normalized = SentencePieceUtf8.ReplacementCharacter;
        return 1;
    }

    private static void AddSpace(ref ByteBuffer output, bool escape)
    {
        if (escape)
        {
            output.Append(SentencePieceUtf8.SpaceSymbol);
        }
        else
        {
            output.Append((byte)' ');
        }
    }
}

/// <summary>
/// SentencePiece's PrefixMatcher for user-defined symbols: the longest symbol that starts the input, else one
/// character (clipped to the input).
/// </summary>
internal sealed class SentencePiecePrefixMatcher
{
    private readonly DoubleArrayTrie? _trie;

    public SentencePiecePrefixMatcher(IEnumerable<string> symbols)
    {
        // darts-clone builds from NUL-terminated strings, so a symbol ends at its first NUL.
        byte[][] keys = [.. symbols.Select(Encoding.UTF8.GetBytes).Select(k => k.AsSpan(0, k.AsSpan().IndexOf((byte)0) is int n and >= 0 ? n : k.Length).ToArray()).Where(k => k.Length > 0)];
        _trie = keys.Length == 0 ? null : DoubleArrayTrie.Build(keys.Select(k => (k, 0)));
    }

    /// <summary>Whether any symbol is defined.</summary>
    public bool IsEmpty => _trie is null;

    /// <summary>Bytes of the longest symbol starting <paramref name="text"/> (<paramref name="found"/> true), else of its first character.</summary>
    public int PrefixMatch(ReadOnlySpan<byte> text, out bool found)
    {
        if (_trie is not null)
        {
            int length = _trie.LongestPrefix(text, out _);
            if (length > 0)
            {
                found = true;
                return length;
            }
        }

        found = false;
        return SentencePieceUtf8.CharLength(text);
    }
}

/// <summary>A growable byte buffer for the encoder's scratch work.</summary>
internal struct ByteBuffer(int capacity)
{
    private byte[] _data = new byte[Math.Max(capacity, 16)];

    public int Length { readonly get; set; }

    public readonly ReadOnlySpan<byte> Span => _data.AsSpan(0, Length);

    /// <summary>The free space after <see cref="Length"/>, for writing in place (then set <see cref="Length"/>).</summary>
    public readonly Span<byte> Writable => _data.AsSpan(Length);

    public void Clear() => Length = 0;

    /// <summary>Makes room for <paramref name="count"/> more bytes.</summary>
    public void Reserve(int count)
    {
        if (Length + count > _data.Length)
        {
            Array.Resize(ref _data, Math.Max(_data.Length * 2, Length + count));
        }
    }

    public void Append(byte b)
    {
        if (Length == _data.Length)
        {
            Array.Resize(ref _data, _data.Length * 2);
        }

        _data[Length++] = b;
    }

    public void Append(ReadOnlySpan<byte> bytes)
    {
        if (Length + bytes.Length > _data.Length)
        {
            Array.Resize(ref _data, Math.Max(_data.Length * 2, Length + bytes.Length));
        }

        bytes.CopyTo(_data.AsSpan(Length));
        Length += bytes.Length;
    }
}
