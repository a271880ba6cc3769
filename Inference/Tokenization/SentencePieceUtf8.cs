namespace ModelSurgery.Inference.Tokenization;

/// <summary>SentencePiece's UTF-8 helpers (util.h / util.cc), whose treatment of malformed input the encoder must share.</summary>
internal static class SentencePieceUtf8
{
    /// <summary>U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's visible space.</summary>
    public static ReadOnlySpan<byte> SpaceSymbol => [0xE2, 0x96, 0x81];

    /// <summary>U+FFFD REPLACEMENT CHARACTER.</summary>
    public static ReadOnlySpan<byte> ReplacementCharacter => [0xEF, 0xBF, 0xBD];

    /// <summary>
    /// Length of the character a lead byte announces, from its top four bits only (string_util::OneCharLen): trail
    /// bytes and 0xF8..0xFF count too, so callers clip it to what is left.
    /// </summary>
    public static int OneCharLen(byte lead) => (lead >> 4) switch
    {
        < 12 => 1,
        12 or 13 => 2,
        14 => 3,
        _ => 4,
    };

    /// <summary><see cref="OneCharLen"/> clipped to the input, as SentencePiece does before taking a character.</summary>
    public static int CharLength(ReadOnlySpan<byte> text) => Math.Min(OneCharLen(text[0]), text.Length);

    /// <summary>
    /// Decodes one character (string_util::DecodeUTF8): shortest form only, no surrogates, at most U+10FFFF. Returns
    /// U+FFFD with <paramref name="length"/> 1 for malformed input.
    /// </summary>
    public static int Decode(ReadOnlySpan<byte> s, out int length)
    {
        int b0 = s[0];
        if (b0 < 0x80)
        {
            length = 1;
            return b0;
        }

        if (s.Length >= 2 && (b0 & 0xE0) == 0xC0)
        {
            int cp = ((b0 & 0x1F) << 6) | (s[1] & 0x3F);
            if (IsTrail(s[1]) && cp >= 0x80 && IsValidCodepoint(cp))
            {
                length = 2;
                return cp;
            }
        }
        else if (s.Length >= 3 && (b0 & 0xF0) == 0xE0)
        {
            int cp = ((b0 & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
            if (IsTrail(s[1]) && IsTrail(s[2]) && cp >= 0x800 && IsValidCodepoint(cp))
            {
                length = 3;
                return cp;
            }
        }
        else if (s.Length >= 4 && (b0 & 0xF8) == 0xF0)
        {
            int cp = ((b0 & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
            if (IsTrail(s[1]) && IsTrail(s[2]) && IsTrail(s[3]) && cp >= 0x10000 && IsValidCodepoint(cp))
            {
                length = 4;
                return cp;
            }
        }

        length = 1;
        return 0xFFFD;
    }

    /// <summary>
    /// Whether the first character is well formed (string_util::IsValidDecodeUTF8); a real U+FFFD counts as valid.
    /// <paramref name="length"/> is the bytes to consume (1 when malformed).
    /// </summary>
    public static bool IsValidDecode(ReadOnlySpan<byte> s, out int length) => Decode(s, out length) != 0xFFFD || length == 3;

    private static bool IsTrail(byte b) => (b & 0xC0) == 0x80;

    private static bool IsValidCodepoint(int c) => c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF);
}
