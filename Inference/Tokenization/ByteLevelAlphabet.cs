using System.Text;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>
/// GPT-2's byte-to-character table used by byte-level BPE vocabularies (GPT-2, Llama 3, Qwen, SmolLM2): printable
/// bytes stand for themselves, the others are shifted to U+0100 and up (a space becomes 'Ġ').
/// </summary>
public static class ByteLevelAlphabet
{
    private static readonly char[] ByteToChar = BuildTable();
    private static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, b)).ToDictionary(p => p.c, p => (byte)p.b);

    /// <summary>The 256 base symbols in byte order.</summary>
    public static IReadOnlyList<char> Symbols => ByteToChar;

    /// <summary>The character that stands for <paramref name="value"/>.</summary>
    public static char ToChar(byte value) => ByteToChar[value];

    /// <summary>Encodes raw bytes as a byte-level token string.</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        var builder = new StringBuilder(bytes.Length);
        foreach (byte b in bytes)
        {
            builder.Append(ByteToChar[b]);
        }

        return builder.ToString();
    }

    /// <summary>Decodes a byte-level token string to its bytes, or null when it holds a character outside the table.</summary>
    public static byte[]? Decode(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        byte[] bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            if (!CharToByte.TryGetValue(token[i], out bytes[i]))
            {
                return null;
            }
        }

        return bytes;
    }

    private static char[] BuildTable()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)next++;
        }

        return table;
    }
}
