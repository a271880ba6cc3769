using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>A piece of text on its way through the pipeline; <see cref="AtStart"/>: it begins at offset 0 of the input.</summary>
internal readonly record struct TextPiece(string Text, bool AtStart);

/// <summary>A normalizer of a tokenizer.json (text to text; offsets are not tracked).</summary>
internal abstract class HfNormalizer
{
    public abstract string Normalize(string text);

    public static HfNormalizer? Create(JsonNode? node, string source)
    {
        if (node is null)
        {
            return null;
        }

        string type = TypeOf(node, source, "normalizer");
        return type switch
        {
            "Sequence" => new SequenceNormalizer([.. (node["normalizers"] as JsonArray ?? []).Select(n => Create(n, source)!)]),
            "NFC" => new UnicodeNormalizer(NormalizationForm.FormC),
            "NFD" => new UnicodeNormalizer(NormalizationForm.FormD),
            "NFKC" => new UnicodeNormalizer(NormalizationForm.FormKC),
            "NFKD" => new UnicodeNormalizer(NormalizationForm.FormKD),
            "Lowercase" => new LowercaseNormalizer(),
            "Prepend" => new PrependNormalizer(node["prepend"]?.GetValue<string>() ?? throw Missing(source, "normalizer Prepend", "prepend")),
            "Replace" => new ReplaceNormalizer(HfPattern.Create(node["pattern"], source, "normalizer Replace"), node["content"]?.GetValue<string>() ?? ""),
            "Strip" => new StripNormalizer(node["strip_left"]?.GetValue<bool>() ?? true, node["strip_right"]?.GetValue<bool>() ?? true),
            "Precompiled" => new PrecompiledNormalizer(PrecompiledCharsMap.Parse(
                Convert.FromBase64String(node["precompiled_charsmap"]?.GetValue<string>() ?? ""), $"{source}: normalizer Precompiled")),
            _ => throw Unsupported(source, "normalizer", type),
        };
    }

    internal static string TypeOf(JsonNode node, string source, string component) =>
        node["type"] is JsonValue v && v.TryGetValue(out string? t) ? t : throw new InvalidDataException($"{source}: a {component} has no \"type\".");

    internal static InvalidDataException Unsupported(string source, string component, string type) =>
        new($"{source}: {component} type \"{type}\" is not supported.");

    internal static InvalidDataException Missing(string source, string component, string field) =>
        new($"{source}: {component} has no \"{field}\".");

    private sealed class SequenceNormalizer(HfNormalizer[] parts) : HfNormalizer
    {
        public override string Normalize(string text)
        {
            foreach (HfNormalizer part in parts)
            {
                text = part.Normalize(text);
            }

            return text;
        }
    }

    private sealed class UnicodeNormalizer(NormalizationForm form) : HfNormalizer
    {
        public override string Normalize(string text) => text.IsNormalized(form) ? text : text.Normalize(form);
    }

    private sealed class LowercaseNormalizer : HfNormalizer
    {
        public override string Normalize(string text) => text.ToLowerInvariant();
    }

    private sealed class PrependNormalizer(string prefix) : HfNormalizer
    {
        public override string Normalize(string text) => text.Length == 0 ? text : prefix + text;
    }

    private sealed class ReplaceNormalizer(HfPattern pattern, string content) : HfNormalizer
    {
        public override string Normalize(string text) => pattern.Replace(text, content);
    }

    private sealed class StripNormalizer(bool left, bool right) : HfNormalizer
    {
        public override string Normalize(string text) => (left, right) switch
        {
            (true, true) => text.Trim(),
            (true, false) => text.TrimStart(),
            (false, true) => text.TrimEnd(),
            _ => text,
        };
    }

    /// <summary>
    /// Hugging Face's Precompiled: per grapheme cluster, the whole cluster's rule if it has one (clusters under 6
    /// bytes), else each character's rule.
    /// </summary>
    private sealed class PrecompiledNormalizer(PrecompiledCharsMap map) : HfNormalizer
    {
        public override string Normalize(string text)
        {
            var output = new StringBuilder(text.Length);
            TextElementEnumerator graphemes = StringInfo.GetTextElementEnumerator(text);
            while (graphemes.MoveNext())
            {
                string grapheme = graphemes.GetTextElement();
                if (Encoding.UTF8.GetByteCount(grapheme) < 6 && Transform(grapheme) is { } whole)
                {
                    output.Append(whole);
                    continue;
                }

                foreach (Rune rune in grapheme.EnumerateRunes())
                {
                    string s = rune.ToString();
                    output.Append(Transform(s) ?? s);
                }
            }

            return output.ToString();
        }

        private string? Transform(string unit)
        {
            // The first (shortest) rule matching a prefix replaces the whole unit, as spm_precompiled's transform does.
            IReadOnlyList<PrecompiledCharsMapMatch> matches = map.FindPrefixMatches(Encoding.UTF8.GetBytes(unit));
            return matches.Count == 0 ? null : matches[0].Replacement;
        }
    }
}

/// <summary>A tokenizer.json pattern: <c>{"String": ...}</c> (literal) or <c>{"Regex": ...}</c> (Oniguruma).</summary>
internal sealed class HfPattern
{
    private readonly string? _literal;
    private readonly OnigurumaRegex? _regex;

    private HfPattern(string? literal, OnigurumaRegex? regex)
    {
        _literal = literal;
        _regex = regex;
    }

    public static HfPattern Create(JsonNode? node, string source, string component)
    {
        if (node?["String"] is JsonValue s)
        {
            return new HfPattern(s.GetValue<string>(), null);
        }

        if (node?["Regex"] is JsonValue r)
        {
            return new HfPattern(null, new OnigurumaRegex(r.GetValue<string>(), $"{source}: {component}"));
        }

        throw new InvalidDataException($"{source}: {component} pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}.");
    }

    public static HfPattern Literal(string text) => new(text, null);

    /// <summary>Non-overlapping matches, left to right (an empty literal matches nothing).</summary>
    public List<(int Start, int End)> Matches(string text)
    {
        if (_regex is not null)
        {
            return _regex.Matches(text);
        }

        var result = new List<(int, int)>();
        if (string.IsNullOrEmpty(_literal))
        {
            return result;
        }

        for (int i = text.IndexOf(_literal, StringComparison.Ordinal); i >= 0; i = text.IndexOf(_literal, i + _literal.Length, StringComparison.Ordinal))
        {
            result.Add((i, i + _literal.Length));
        }

        return result;
    }

    public string Replace(string text, string content)
    {
        List<(int Start, int End)> matches = Matches(text);
        if (matches.Count == 0)
        {
            return text;
        }

        var output = new StringBuilder(text.Length + (matches.Count * content.Length));
        int previous = 0;
        foreach ((int start, int end) in matches)
        {
            output.Append(text, previous, start - previous).Append(content);
            previous = end;
        }

        return output.Append(text, previous, text.Length - previous).ToString();
    }
}

/// <summary>How a split keeps the matched delimiters (Hugging Face's SplitDelimiterBehavior).</summary>
internal enum SplitBehavior
{
    Removed,
    Isolated,
    MergedWithPrevious,
    MergedWithNext,
    Contiguous,
}

/// <summary>A pre-tokenizer of a tokenizer.json: splits pieces into smaller pieces, possibly rewriting them.</summary>
internal abstract class HfPreTokenizer
{
    /// <summary>GPT-2's pattern, used by ByteLevel with use_regex.</summary>
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    public abstract void PreTokenize(List<TextPiece> pieces);

    public static HfPreTokenizer? Create(JsonNode? node, string source)
    {
        if (node is null)
        {
            return null;
        }

        string type = HfNormalizer.TypeOf(node, source, "pre_tokenizer");
        return type switch
        {
            "Sequence" => new SequencePreTokenizer([.. (node["pretokenizers"] as JsonArray ?? []).Select(n => Create(n, source)!)]),
            "ByteLevel" => new ByteLevelPreTokenizer(node["add_prefix_space"]?.GetValue<bool>() ?? true,
                (node["use_regex"]?.GetValue<bool>() ?? true) ? new OnigurumaRegex(Gpt2Pattern, $"{source}: pre_tokenizer ByteLevel") : null),
            "Split" => new SplitPreTokenizer(HfPattern.Create(node["pattern"], source, "pre_tokenizer Split"),
                ParseBehavior(node["behavior"]?.GetValue<string>(), source), node["invert"]?.GetValue<bool>() ?? false),
            "Metaspace" => new MetaspacePreTokenizer(MetaspaceSettings.Parse(node, source)),
            "Digits" => new DigitsPreTokenizer(node["individual_digits"]?.GetValue<bool>() ?? false),
            "WhitespaceSplit" => new SplitPreTokenizer(HfPattern.Create(new JsonObject { ["Regex"] = @"\s+" }, source, "pre_tokenizer WhitespaceSplit"), SplitBehavior.Removed, false),
            "Whitespace" => new SplitPreTokenizer(HfPattern.Create(new JsonObject { ["Regex"] = @"\w+|[^\w\s]+" }, source, "pre_tokenizer Whitespace"), SplitBehavior.Removed, true),
            _ => throw HfNormalizer.Unsupported(source, "pre_tokenizer", type),
        };
    }

    private static SplitBehavior ParseBehavior(string? value, string source) => value switch
    {
        "Removed" => SplitBehavior.Removed,
        "Isolated" => SplitBehavior.Isolated,
        "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
        "MergedWithNext" => SplitBehavior.MergedWithNext,
        "Contiguous" => SplitBehavior.Contiguous,
        _ => throw new InvalidDataException($"{source}: pre_tokenizer Split behavior \"{value}\" is not supported."),
    };

    /// <summary>Splits every piece at <paramref name="matches"/> as Hugging Face's NormalizedString::split does.</summary>
    internal static void Split(List<TextPiece> pieces, Func<string, List<(int Start, int End)>> matches, SplitBehavior behavior, bool invert = false)
    {
        var output = new List<TextPiece>(pieces.Count * 2);
        var segments = new List<(int Start, int End, bool Match)>();
        var merged = new List<(int Start, int End, bool Remove)>();
        foreach (TextPiece piece in pieces)
        {
            string text = piece.Text;
            segments.Clear();
            int previous = 0;
            foreach ((int start, int end) in matches(text))
            {
                if (previous != start)
                {
                    segments.Add((previous, start, invert));
                }

                segments.Add((start, end, !invert));
                previous = end;
            }

            if (previous != text.Length || text.Length == 0)
            {
                segments.Add((previous, text.Length, invert));
            }

            merged.Clear();
            bool previousMatch = false;
            switch (behavior)
            {
                case SplitBehavior.Isolated:
                    merged.AddRange(segments.Select(s => (s.Start, s.End, false)));
                    break;
                case SplitBehavior.Removed:
                    merged.AddRange(segments.Select(s => (s.Start, s.End, s.Match)));
                    break;
                case SplitBehavior.MergedWithPrevious:
                    foreach ((int start, int end, bool match) in segments)
                    {
                        if (match && !previousMatch && merged.Count > 0)
                        {
                            merged[^1] = (merged[^1].Start, end, false);
                        }
                        else
                        {
                            merged.Add((start, end, false));
                        }

                        previousMatch = match;
                    }

                    break;
                case SplitBehavior.MergedWithNext:
                    for (int i = segments.Count - 1; i >= 0; i--)
                    {
                        (int start, int end, bool match) = segments[i];
                        if (match && !previousMatch && merged.Count > 0)
                        {
                            merged[^1] = (start, merged[^1].End, false);
                        }
                        else
                        {
                            merged.Add((start, end, false));
                        }

                        previousMatch = match;
                    }

                    merged.Reverse();
                    break;
                default:
                    foreach ((int start, int end, bool match) in segments)
                    {
                        if (match == previousMatch && merged.Count > 0)
                        {
                            merged[^1] = (merged[^1].Start, end, false);
                        }
                        else
                        {
                            merged.Add((start, end, false));
                        }

                        previousMatch = match;
                    }

                    break;
            }

            foreach ((int start, int end, bool remove) in merged)
            {
                if (!remove && end > start)
                {
                    output.Add(new TextPiece(text[start..end], piece.AtStart && start == 0));
                }
            }
        }

        pieces.Clear();
        pieces.AddRange(output);
    }

    private sealed class SequencePreTokenizer(HfPreTokenizer[] parts) : HfPreTokenizer
    {
        public override void PreTokenize(List<TextPiece> pieces)
        {
            foreach (HfPreTokenizer part in parts)
            {
                part.PreTokenize(pieces);
            }
        }
    }

    /// <summary>Optional prefix space and GPT-2 split, then each piece's UTF-8 bytes in GPT-2's byte alphabet.</summary>
    private sealed class ByteLevelPreTokenizer(bool addPrefixSpace, OnigurumaRegex? regex) : HfPreTokenizer
    {
        public override void PreTokenize(List<TextPiece> pieces)
        {
            if (addPrefixSpace)
            {
                for (int i = 0; i < pieces.Count; i++)
                {
                    if (!pieces[i].Text.StartsWith(' '))
                    {
                        pieces[i] = pieces[i] with { Text = " " + pieces[i].Text };
                    }
                }
            }

            if (regex is not null)
            {
                Split(pieces, regex.Matches, SplitBehavior.Isolated);
            }

            for (int i = 0; i < pieces.Count; i++)
            {
                pieces[i] = pieces[i] with { Text = ByteLevelAlphabet.Encode(Encoding.UTF8.GetBytes(pieces[i].Text)) };
            }
        }
    }

    private sealed class SplitPreTokenizer(HfPattern pattern, SplitBehavior behavior, bool invert) : HfPreTokenizer
    {
        public override void PreTokenize(List<TextPiece> pieces) => Split(pieces, pattern.Matches, behavior, invert);
    }

    private sealed class MetaspacePreTokenizer(MetaspaceSettings settings) : HfPreTokenizer
    {
        public override void PreTokenize(List<TextPiece> pieces)
        {
            string replacement = settings.Replacement.ToString();
            for (int i = 0; i < pieces.Count; i++)
            {
                string text = pieces[i].Text.Replace(" ", replacement, StringComparison.Ordinal);
                bool prepend = settings.Scheme switch
                {
                    "always" => true,
                    "first" => pieces[i].AtStart,
                    _ => false,
                };
                if (prepend && !text.StartsWith(settings.Replacement))
                {
                    text = replacement + text;
                }

                pieces[i] = pieces[i] with { Text = text };
            }

            if (settings.Split)
            {
                Split(pieces, CharMatches(c => c == settings.Replacement), SplitBehavior.MergedWithNext);
            }
        }
    }

    private sealed class DigitsPreTokenizer(bool individual) : HfPreTokenizer
    {
        public override void PreTokenize(List<TextPiece> pieces) =>
            Split(pieces, CharMatches(char.IsAsciiDigit), individual ? SplitBehavior.Isolated : SplitBehavior.Contiguous);
    }

    /// <summary>Each character satisfying <paramref name="predicate"/> is one match.</summary>
    private static Func<string, List<(int Start, int End)>> CharMatches(Func<char, bool> predicate) => text =>
    {
        var result = new List<(int, int)>();
        for (int i = 0; i < text.Length; i++)
        {
            if (predicate(text[i]))
            {
                result.Add((i, i + 1));
            }
        }

        return result;
    };
}

/// <summary>The settings shared by the Metaspace pre-tokenizer and decoder.</summary>
internal sealed record MetaspaceSettings(char Replacement, string Scheme, bool Split)
{
    public static MetaspaceSettings Parse(JsonNode node, string source)
    {
        string replacement = node["replacement"]?.GetValue<string>() ?? "\u2581";
        if (replacement.Length != 1)
        {
            throw new InvalidDataException($"{source}: Metaspace replacement \"{replacement}\" must be one character.");
        }

        // Older files carry add_prefix_space instead of prepend_scheme.
        string scheme = node["prepend_scheme"]?.GetValue<string>() ?? ((node["add_prefix_space"]?.GetValue<bool>() ?? true) ? "always" : "never");
        if (scheme is not ("always" or "first" or "never"))
        {
            throw new InvalidDataException($"{source}: Metaspace prepend_scheme \"{scheme}\" is not supported.");
        }

        return new MetaspaceSettings(replacement[0], scheme, node["split"]?.GetValue<bool>() ?? true);
    }
}

/// <summary>A decoder of a tokenizer.json: token strings to token strings (joined at the end).</summary>
internal abstract class HfDecoder
{
    public abstract List<string> DecodeChain(List<string> tokens);

    public static HfDecoder? Create(JsonNode? node, string source)
    {
        if (node is null)
        {
            return null;
        }

        string type = HfNormalizer.TypeOf(node, source, "decoder");
        return type switch
        {
            "Sequence" => new SequenceDecoder([.. (node["decoders"] as JsonArray ?? []).Select(n => Create(n, source)!)]),
            "ByteLevel" => new ByteLevelDecoder(),
            "Metaspace" => new MetaspaceDecoder(MetaspaceSettings.Parse(node, source)),
            "ByteFallback" => new ByteFallbackDecoder(),
            "Fuse" => new FuseDecoder(),
            "Replace" => new ReplaceDecoder(HfPattern.Create(node["pattern"], source, "decoder Replace"), node["content"]?.GetValue<string>() ?? ""),
            "Strip" => new StripDecoder((node["content"]?.GetValue<string>() ?? " ")[0], node["start"]?.GetValue<int>() ?? 0, node["stop"]?.GetValue<int>() ?? 0),
            _ => throw HfNormalizer.Unsupported(source, "decoder", type),
        };
    }

    private sealed class SequenceDecoder(HfDecoder[] parts) : HfDecoder
    {
        public override List<string> DecodeChain(List<string> tokens)
        {
            foreach (HfDecoder part in parts)
            {
                tokens = part.DecodeChain(tokens);
            }

            return tokens;
        }
    }

    /// <summary>Byte-alphabet characters back to bytes (a token with other characters keeps its UTF-8), lossy UTF-8.</summary>
    private sealed class ByteLevelDecoder : HfDecoder
    {
        public override List<string> DecodeChain(List<string> tokens)
        {
            var bytes = new List<byte>();
            foreach (string token in tokens)
            {
                bytes.AddRange(ByteLevelAlphabet.Decode(token) ?? Encoding.UTF8.GetBytes(token));
            }

            return [Encoding.UTF8.GetString([.. bytes])];
        }
    }

    private sealed class MetaspaceDecoder(MetaspaceSettings settings) : HfDecoder
    {
        public override List<string> DecodeChain(List<string> tokens)
        {
            var output = new List<string>(tokens.Count);
            for (int i = 0; i < tokens.Count; i++)
            {
                var builder = new StringBuilder(tokens[i].Length);
                foreach (char c in tokens[i])
                {
                    if (c != settings.Replacement)
                    {
                        builder.Append(c);
                    }
                    else if (i != 0 || settings.Scheme == "never")
                    {
                        builder.Append(' ');
                    }
                }

                output.Add(builder.ToString());
            }

            return output;
        }
    }

    /// <summary>Runs of &lt;0xNN&gt; tokens become their UTF-8 text, or one U+FFFD per token when not valid UTF-8.</summary>
    private sealed class ByteFallbackDecoder : HfDecoder
    {
        private static readonly UTF8Encoding Strict = new(false, true);

        public override List<string> DecodeChain(List<string> tokens)
        {
            var output = new List<string>(tokens.Count);
            var pending = new List<byte>();
            foreach (string token in tokens)
            {
                if (token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
                    && byte.TryParse(token.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b))
                {
                    pending.Add(b);
                    continue;
                }

                Flush();
                output.Add(token);
            }

            Flush();
            return output;

            void Flush()
            {
                if (pending.Count == 0)
                {
                    return;
                }

                try
                {
                    output.Add(Strict.GetString([.. pending]));
                }
                catch (DecoderFallbackException)
                {
                    output.AddRange(Enumerable.Repeat("\uFFFD", pending.Count));
                }

                pending.Clear();
            }
        }
    }

    private sealed class FuseDecoder : HfDecoder
    {
        public override List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
    }

    private sealed class ReplaceDecoder(HfPattern pattern, string content) : HfDecoder
    {
        public override List<string> DecodeChain(List<string> tokens) => [.. tokens.Select(t => pattern.Replace(t, content))];
    }

    private sealed class StripDecoder(char content, int start, int stop) : HfDecoder
    {
        public override List<string> DecodeChain(List<string> tokens) => [.. tokens.Select(Strip)];

        private string Strip(string token)
        {
            int from = 0;
            while (from < start && from < token.Length && token[from] == content)
            {
                from++;
            }

            int to = token.Length;
            for (int i = 0; i < stop && to > from && token[to - 1] == content; i++)
            {
                to--;
            }

            return token[from..to];
        }
    }
}

/// <summary>A post-processor of a tokenizer.json: adds special tokens around the ids of one sequence.</summary>
internal sealed class HfPostProcessor
{
    private readonly int[] _prefix;
    private readonly int[] _suffix;

    private HfPostProcessor(int[] prefix, int[] suffix)
    {
        _prefix = prefix;
        _suffix = suffix;
    }

    /// <summary>The first id placed before the sequence, if any (the BOS of Llama-style templates).</summary>
    public int? FirstPrefixId => _prefix.Length > 0 ? _prefix[0] : null;

    public int[] Apply(int[] ids) => _prefix.Length == 0 && _suffix.Length == 0 ? ids : [.. _prefix, .. ids, .. _suffix];

    public static HfPostProcessor? Create(JsonNode? node, string source)
    {
        if (node is null)
        {
            return null;
        }

        string type = HfNormalizer.TypeOf(node, source, "post_processor");
        switch (type)
        {
            case "ByteLevel":
                return null;
            case "RobertaProcessing":
            case "BertProcessing":
                return new HfPostProcessor([PairId(node["cls"], source, type, "cls")], [PairId(node["sep"], source, type, "sep")]);
            case "TemplateProcessing":
                return Template(node, source);
            case "Sequence":
                var prefix = new List<int>();
                var suffix = new List<int>();
                foreach (JsonNode? child in node["processors"] as JsonArray ?? [])
                {
                    if (Create(child, source) is { } inner)
                    {
                        prefix.InsertRange(0, inner._prefix);
                        suffix.AddRange(inner._suffix);
                    }
                }

                return new HfPostProcessor([.. prefix], [.. suffix]);
            default:
                throw HfNormalizer.Unsupported(source, "post_processor", type);
        }
    }

    private static int PairId(JsonNode? pair, string source, string type, string field) =>
        pair is JsonArray { Count: 2 } p ? p[1]!.GetValue<int>() : throw HfNormalizer.Missing(source, $"post_processor {type}", field);

    private static HfPostProcessor Template(JsonNode node, string source)
    {
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool seenSequence = false;
        foreach (JsonNode? item in node["single"] as JsonArray ?? [])
        {
            if (item?["Sequence"] is not null)
            {
                seenSequence = true;
            }
            else if (item?["SpecialToken"]?["id"]?.GetValue<string>() is { } name)
            {
                JsonNode special = node["special_tokens"]?[name]
                    ?? throw new InvalidDataException($"{source}: post_processor TemplateProcessing uses \"{name}\", which special_tokens does not define.");
                IEnumerable<int> ids = (special["ids"] as JsonArray ?? []).Select(i => i!.GetValue<int>());
                (seenSequence ? suffix : prefix).AddRange(ids);
            }
        }

        return new HfPostProcessor([.. prefix], [.. suffix]);
    }
}
