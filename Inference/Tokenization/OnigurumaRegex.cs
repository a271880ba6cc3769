using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>
/// A pre-tokenizer regular expression as Hugging Face's tokenizers runs it with Oniguruma, on .NET's engine. Both
/// backtrack leftmost-first with the same meaning for the constructs these patterns use (\p{..} classes, \s, inline
/// (?i:..), lookahead); the difference is the unit: Oniguruma matches code points, .NET UTF-16 chars, so a character
/// outside the BMP is a surrogate pair that neither \p{L} nor \p{N} matches and that counts twice in {1,3}. Text
/// holding such characters is therefore matched through a stand-in string with one BMP character of the same
/// Unicode category per code point, and match positions are mapped back. Possessive quantifiers (*+, ++, ?+), which
/// .NET lacks, are rewritten as atomic groups.
/// </summary>
public sealed class OnigurumaRegex
{
    private static readonly char[] CategoryStandIns = BuildStandIns();
    private readonly Regex _regex;

    /// <summary>Compiles <paramref name="pattern"/>.</summary>
    /// <param name="pattern">The Oniguruma pattern.</param>
    /// <param name="source">The file and field, for error messages.</param>
    /// <exception cref="InvalidDataException">.NET cannot compile the pattern; the message names <paramref name="source"/>.</exception>
    public OnigurumaRegex(string pattern, string source)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        Pattern = pattern;
        try
        {
            _regex = new Regex(RewritePossessive(pattern), RegexOptions.CultureInvariant | RegexOptions.Compiled);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{source}: the regular expression '{pattern}' is not supported ({e.Message}).", e);
        }
    }

    /// <summary>The pattern as written in the file.</summary>
    public string Pattern { get; }

    /// <summary>The (start, end) char ranges of successive non-overlapping matches in <paramref name="text"/>.</summary>
    public List<(int Start, int End)> Matches(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = new List<(int, int)>();
        if (!HasSurrogates(text))
        {
            foreach (ValueMatch m in _regex.EnumerateMatches(text))
            {
                result.Add((m.Index, m.Index + m.Length));
            }

            return result;
        }

        // starts[i] is where the i-th code point begins in text; the stand-in has one char per code point.
        var standIn = new StringBuilder(text.Length);
        var starts = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length;)
        {
            starts.Add(i);
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                int codePoint = char.ConvertToUtf32(text[i], text[i + 1]);
                standIn.Append(CategoryStandIns[(int)CharUnicodeInfo.GetUnicodeCategory(codePoint)]);
                i += 2;
            }
            else
            {
                standIn.Append(text[i]);
                i++;
            }
        }

        starts.Add(text.Length);
        foreach (ValueMatch m in _regex.EnumerateMatches(standIn.ToString()))
        {
            result.Add((starts[m.Index], starts[m.Index + m.Length]));
        }

        return result;
    }

    private static bool HasSurrogates(string text)
    {
        foreach (char c in text)
        {
            if (char.IsSurrogate(c))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// For each Unicode category, a BMP character of that category that no pattern names literally: outside ASCII and
    /// Latin-1 and without an ASCII case equivalent (so (?i:'s) cannot match it).
    /// </summary>
    private static char[] BuildStandIns()
    {
        int count = Enum.GetValues<UnicodeCategory>().Length;
        var table = new char[count];
        var found = new bool[count];
        for (int c = 0x100; c <= 0xFFFF; c++)
        {
            char ch = (char)c;
            if (char.IsSurrogate(ch) || char.ToLowerInvariant(ch) < 0x100 || char.ToUpperInvariant(ch) < 0x100 || char.IsWhiteSpace(ch))
            {
                continue;
            }

            int category = (int)CharUnicodeInfo.GetUnicodeCategory(ch);
            if (!found[category])
            {
                found[category] = true;
                table[category] = ch;
            }
        }

        for (int i = 0; i < count; i++)
        {
            // Categories with no BMP member (none today) fall back to a private-use character.
            if (!found[i])
            {
                table[i] = '\uE000';
            }
        }

        return table;
    }

    /// <summary>Rewrites X*+, X++ and X?+ (X an atom: escape, class, group or char) as (?>X*) and so on.</summary>
    private static string RewritePossessive(string pattern)
    {
        if (!pattern.Contains("++", StringComparison.Ordinal) && !pattern.Contains("*+", StringComparison.Ordinal) && !pattern.Contains("?+", StringComparison.Ordinal))
        {
            return pattern;
        }

        var output = new StringBuilder(pattern.Length + 16);
        var atomStarts = new List<int>();
        int i = 0;
        while (i < pattern.Length)
        {
            int atomStart = output.Length;
            int end = AtomEnd(pattern, i);
            output.Append(pattern, i, end - i);
            i = end;
            if (i < pattern.Length && pattern[i] is '*' or '+' or '?')
            {
                char quantifier = pattern[i];
                if (i + 1 < pattern.Length && pattern[i + 1] == '+')
                {
                    output.Insert(atomStart, "(?>");
                    output.Append(quantifier).Append(')');
                    i += 2;
                }
            }
        }

        return output.ToString();
    }

    private static int AtomEnd(string pattern, int i)
    {
        switch (pattern[i])
        {
            case '\\':
                if (i + 1 < pattern.Length && pattern[i + 1] is 'p' or 'P' && i + 2 < pattern.Length && pattern[i + 2] == '{')
                {
                    return pattern.IndexOf('}', i) + 1;
                }

                return Math.Min(i + 2, pattern.Length);
            case '[':
                int j = i + 1;
                if (j < pattern.Length && pattern[j] == '^')
                {
                    j++;
                }

                if (j < pattern.Length && pattern[j] == ']')
                {
                    j++;
                }

                while (j < pattern.Length && pattern[j] != ']')
                {
                    j += pattern[j] == '\\' ? 2 : 1;
                }

                return Math.Min(j + 1, pattern.Length);
            case '(':
                int depth = 0;
                for (int k = i; k < pattern.Length; k++)
                {
                    if (pattern[k] == '\\')
                    {
                        k++;
                    }
                    else if (pattern[k] == '[')
                    {
                        k = AtomEnd(pattern, k) - 1;
                    }
                    else if (pattern[k] == '(')
                    {
                        depth++;
                    }
                    else if (pattern[k] == ')' && --depth == 0)
                    {
                        return k + 1;
                    }
                }

                return pattern.Length;
            default:
                return i + 1;
        }
    }
}
