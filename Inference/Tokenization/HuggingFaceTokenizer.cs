using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>
/// Runs a Hugging Face <c>tokenizer.json</c> with a BPE model exactly as the Rust <c>tokenizers</c> library does:
/// added tokens are cut out first (leftmost-longest, with their special/normalized/lstrip/rstrip/single_word flags),
/// every other piece is normalized, pre-tokenized and merged (lowest merge rank first, leftmost on ties,
/// <c>ignore_merges</c>, byte fallback, fused unknowns), and the post-processor adds its special tokens on request.
/// Component types outside those listed in <see cref="HfNormalizer"/>, <see cref="HfPreTokenizer"/>,
/// <see cref="HfDecoder"/> and <see cref="HfPostProcessor"/> are refused when loading. BPE dropout is not applied
/// (encoding is deterministic). Immutable apart from a word cache; safe for concurrent use.
/// </summary>
public sealed class HuggingFaceTokenizer : ModelTokenizer
{
    private const int CacheCapacity = 200_000;
    private const int MaxCachedWordLength = 256;
    private readonly Dictionary<string, int> _vocabulary;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabularyLookup;
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly string?[] _tokens;
    private readonly bool[] _special;
    private readonly AddedTokenMatcher _rawAdded;
    private readonly AddedTokenMatcher _normalizedAdded;
    private readonly Dictionary<string, int> _addedIds;
    private readonly HfNormalizer? _normalizer;
    private readonly HfPreTokenizer? _preTokenizer;
    private readonly HfDecoder? _decoder;
    private readonly HfPostProcessor? _postProcessor;
    private readonly int? _unknownId;
    private readonly string _prefix;
    private readonly string _suffix;
    private readonly bool _fuseUnknown;
    private readonly bool _byteFallback;
    private readonly bool _ignoreMerges;
    private readonly int[] _byteIds;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);

    /// <summary>Prepares <paramref name="file"/> for encoding.</summary>
    /// <exception cref="InvalidDataException">
    /// A normalizer, pre-tokenizer, decoder or post-processor type is not supported, a merge names a token outside
    /// the vocabulary, or a pattern does not compile; the message names the file and the offending value.
    /// </exception>
    public HuggingFaceTokenizer(HuggingFaceTokenizerJson file)
    {
        ArgumentNullException.ThrowIfNull(file);
        Source = file.Source;
        JsonObject root = file.Root;
        var model = (JsonObject)root["model"]!;
        _vocabulary = new Dictionary<string, int>(file.Vocabulary, StringComparer.Ordinal);
        _vocabularyLookup = _vocabulary.GetAlternateLookup<ReadOnlySpan<char>>();
        _prefix = model["continuing_subword_prefix"]?.GetValue<string>() ?? "";
        _suffix = model["end_of_word_suffix"]?.GetValue<string>() ?? "";
        _fuseUnknown = model["fuse_unk"]?.GetValue<bool>() ?? false;
        _byteFallback = file.ByteFallback;
        _ignoreMerges = model["ignore_merges"]?.GetValue<bool>() ?? false;
        _unknownId = file.UnknownToken is { } unk ? (_vocabulary.TryGetValue(unk, out int u) ? u
            : throw new InvalidDataException($"{Source}: model.unk_token \"{unk}\" is not in model.vocab.")) : null;
        _merges = new Dictionary<long, (int, int)>(file.Merges.Count);
        for (int rank = 0; rank < file.Merges.Count; rank++)
        {
            BpeMerge merge = file.Merges[rank];
            if (!_vocabulary.TryGetValue(merge.Left, out int left) || !_vocabulary.TryGetValue(merge.Right, out int right))
            {
                throw new InvalidDataException($"{Source}: model.merges[{rank}] \"{merge.Left} {merge.Right}\" uses a token that is not in model.vocab.");
            }

            string merged = merge.Left + (_prefix.Length > 0 && merge.Right.StartsWith(_prefix, StringComparison.Ordinal) ? merge.Right[_prefix.Length..] : merge.Right);
            if (!_vocabulary.TryGetValue(merged, out int newId))
            {
                throw new InvalidDataException($"{Source}: model.merges[{rank}] makes \"{merged}\", which is not in model.vocab.");
            }

            _merges[Pair(left, right)] = (rank, newId);
        }

        _byteIds = new int[256];
        for (int b = 0; b < 256; b++)
        {
            _byteIds[b] = _vocabulary.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        }

        _normalizer = HfNormalizer.Create(root["normalizer"], Source);
        _preTokenizer = HfPreTokenizer.Create(root["pre_tokenizer"], Source);
        _decoder = HfDecoder.Create(root["decoder"], Source);
        _postProcessor = HfPostProcessor.Create(root["post_processor"], Source);

        var raw = new List<AddedTokenEntry>();
        var normalized = new List<AddedTokenEntry>();
        _addedIds = new Dictionary<string, int>(StringComparer.Ordinal);
        var specialIds = new HashSet<int>();
        int index = 0;
        foreach (JsonNode? node in root["added_tokens"] as JsonArray ?? [])
        {
            string where = $"{Source}: added_tokens[{index++}]";
            int id = node?["id"]?.GetValue<int>() ?? throw new InvalidDataException($"{where} has no id.");
            string content = node["content"]?.GetValue<string>() ?? throw new InvalidDataException($"{where} has no content.");
            bool special = node["special"]?.GetValue<bool>() ?? false;
            bool isNormalized = node["normalized"]?.GetValue<bool>() ?? !special;
            _addedIds[content] = id;
            if (special)
            {
                specialIds.Add(id);
            }

            if (content.Length == 0)
            {
                continue;
            }

            var entry = new AddedTokenEntry(id, isNormalized && _normalizer is not null ? _normalizer.Normalize(content) : content,
                node["single_word"]?.GetValue<bool>() ?? false, node["lstrip"]?.GetValue<bool>() ?? false, node["rstrip"]?.GetValue<bool>() ?? false);
            (isNormalized ? normalized : raw).Add(entry);
        }

        _rawAdded = new AddedTokenMatcher(raw);
        _normalizedAdded = new AddedTokenMatcher(normalized);
        int size = Math.Max(_vocabulary.Count == 0 ? 0 : _vocabulary.Values.Max() + 1, _addedIds.Count == 0 ? 0 : _addedIds.Values.Max() + 1);
        _tokens = new string?[size];
        _special = new bool[size];
        foreach ((string token, int id) in _vocabulary)
        {
            _tokens[id] = token;
        }

        foreach ((string token, int id) in _addedIds)
        {
            _tokens[id] = token;
            _special[id] = specialIds.Contains(id);
        }

        BosId = _postProcessor?.FirstPrefixId ?? FirstAdded("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>");
        EosId = FirstAdded("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>");
        PadId = FirstAdded("<pad>", "<|pad|>", "[PAD]");
    }

    /// <summary>The file this tokenizer was read from, for messages.</summary>
    public string Source { get; }

    /// <inheritdoc/>
    public override int VocabularySize => _tokens.Length;

    /// <summary>The post-processor's first added token, else the first of &lt;s&gt;, &lt;|begin_of_text|&gt;, &lt;bos&gt;, &lt;|startoftext|&gt; among the added tokens.</summary>
    public override int? BosId { get; }

    /// <summary>The first of &lt;/s&gt;, &lt;|end_of_text|&gt;, &lt;|endoftext|&gt;, &lt;eos&gt; among the added tokens.</summary>
    public override int? EosId { get; }

    /// <inheritdoc/>
    public override int? UnknownId => _unknownId;

    /// <summary>The first of &lt;pad&gt;, &lt;|pad|&gt;, [PAD] among the added tokens.</summary>
    public override int? PadId { get; }

    /// <summary>Reads and prepares a <c>tokenizer.json</c>.</summary>
    /// <exception cref="InvalidDataException">The file is malformed or uses an unsupported component; the message names it.</exception>
    public static HuggingFaceTokenizer Load(string path) => new(HuggingFaceTokenizerJson.Load(path));

    /// <inheritdoc/>
    public override int[] Encode(string text, bool addSpecialTokens)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        var pieces = new List<TextPiece>();
        foreach ((int start, int end, int id) in _rawAdded.Split(text))
        {
            if (id >= 0)
            {
                ids.Add(id);
                continue;
            }

            string segment = text[start..end];
            string normalized = _normalizer is null ? segment : _normalizer.Normalize(segment);
            foreach ((int s, int e, int addedId) in _normalizedAdded.Split(normalized))
            {
                if (addedId >= 0)
                {
                    ids.Add(addedId);
                    continue;
                }

                pieces.Clear();
                pieces.Add(new TextPiece(normalized[s..e], start == 0 && s == 0));
                _preTokenizer?.PreTokenize(pieces);
                foreach (TextPiece piece in pieces)
                {
                    Tokenize(piece.Text, ids);
                }
            }
        }

        int[] result = [.. ids];
        return addSpecialTokens && _postProcessor is not null ? _postProcessor.Apply(result) : result;
    }

    /// <inheritdoc/>
    public override string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var tokens = new List<string>();
        foreach (int id in ids)
        {
            if ((uint)id < (uint)_tokens.Length && _tokens[id] is { } token && !(skipSpecialTokens && _special[id]))
            {
                tokens.Add(token);
            }
        }

        return _decoder is null ? string.Join(' ', tokens) : string.Concat(_decoder.DecodeChain(tokens));
    }

    /// <inheritdoc/>
    public override int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        return _addedIds.TryGetValue(token, out int added) ? added : _vocabulary.TryGetValue(token, out int id) ? id : null;
    }

    /// <inheritdoc/>
    public override string? IdToToken(int id) => (uint)id < (uint)_tokens.Length ? _tokens[id] : null;

    private static long Pair(int left, int right) => ((long)left << 32) | (uint)right;

    private int? FirstAdded(params string[] names)
    {
        foreach (string name in names)
        {
            if (_addedIds.TryGetValue(name, out int id))
            {
                return id;
            }
        }

        return null;
    }

    /// <summary>The BPE model on one pre-tokenized word (Rust's BPE::tokenize_with_cache).</summary>
    private void Tokenize(string word, List<int> ids)
    {
        if (word.Length == 0)
        {
            return;
        }

        if (_ignoreMerges && _vocabularyLookup.TryGetValue(word, out int whole))
        {
            ids.Add(whole);
            return;
        }

        if (_cache.TryGetValue(word, out int[]? cached))
        {
            ids.AddRange(cached);
            return;
        }

        int[] merged = MergeWord(word);
        // Long words (a whole paragraph when there is no pre-tokenizer) rarely repeat; caching them only costs memory.
        if (word.Length <= MaxCachedWordLength && _cache.Count < CacheCapacity)
        {
            _cache.TryAdd(word, merged);
        }

        ids.AddRange(merged);
    }

    /// <summary>Rust's BPE::merge_word followed by Word::merge_all: a heap of (rank, position), leftmost on ties.</summary>
    private int[] MergeWord(string word)
    {
        var symbols = new List<int>(word.Length);
        bool previousUnknown = false;
        var builder = new StringBuilder();
        int charCount = 0;
        for (int i = 0; i < word.Length; i += char.IsSurrogatePair(word, i) ? 2 : 1)
        {
            charCount++;
        }

        int index = 0;
        for (int i = 0; i < word.Length; index++)
        {
            int length = char.IsSurrogatePair(word, i) ? 2 : 1;
            ReadOnlySpan<char> character = word.AsSpan(i, length);
            i += length;
            string? affixed = null;
            if (_prefix.Length > 0 || _suffix.Length > 0)
            {
                builder.Clear();
                if (index > 0)
                {
                    builder.Append(_prefix);
                }

                builder.Append(character);
                if (index == charCount - 1)
                {
                    builder.Append(_suffix);
                }

                affixed = builder.ToString();
            }

            if (affixed is null ? _vocabularyLookup.TryGetValue(character, out int id) : _vocabulary.TryGetValue(affixed, out id))
            {
                symbols.Add(id);
                previousUnknown = false;
                continue;
            }

            if (_byteFallback && ByteFallback(affixed ?? character.ToString(), symbols))
            {
                previousUnknown = false;
                continue;
            }

            if (_unknownId is int unknown)
            {
                if (!(_fuseUnknown && previousUnknown))
                {
                    symbols.Add(unknown);
                }

                previousUnknown = true;
            }
        }

        return MergeAll(symbols);
    }

    private bool ByteFallback(string text, List<int> symbols)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        foreach (byte b in bytes)
        {
            if (_byteIds[b] < 0)
            {
                return false;
            }
        }

        foreach (byte b in bytes)
        {
            symbols.Add(_byteIds[b]);
        }

        return true;
    }

    private int[] MergeAll(List<int> ids)
    {
        int n = ids.Count;
        if (n < 2)
        {
            return [.. ids];
        }

        int[] symbol = [.. ids];
        int[] prev = new int[n];
        int[] next = new int[n];
        bool[] removed = new bool[n];
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }

        var queue = new PriorityQueue<(int Position, int NewId), (int Rank, int Position)>(n);
        for (int i = 0; i + 1 < n; i++)
        {
            if (_merges.TryGetValue(Pair(symbol[i], symbol[i + 1]), out var m))
            {
                queue.Enqueue((i, m.NewId), (m.Rank, i));
            }
        }

        while (queue.TryDequeue(out var top, out _))
        {
            int position = top.Position;
            if (removed[position] || next[position] < 0)
            {
                continue;
            }

            int right = next[position];
            // A stale entry: the pair at this position no longer makes the same token.
            if (!_merges.TryGetValue(Pair(symbol[position], symbol[right]), out var current) || current.NewId != top.NewId)
            {
                continue;
            }

            symbol[position] = top.NewId;
            removed[right] = true;
            next[position] = next[right];
            if (next[right] >= 0)
            {
                prev[next[right]] = position;
            }

            if (prev[position] >= 0 && _merges.TryGetValue(Pair(symbol[prev[position]], symbol[position]), out var before))
            {
                queue.Enqueue((prev[position], before.NewId), (before.Rank, prev[position]));
            }

            if (next[position] >= 0 && _merges.TryGetValue(Pair(symbol[position], symbol[next[position]]), out var after))
            {
                queue.Enqueue((position, after.NewId), (after.Rank, position));
            }
        }

        var result = new List<int>(n);
        for (int i = 0; i >= 0; i = next[i])
        {
            result.Add(symbol[i]);
        }

        return [.. result];
    }

    private sealed record AddedTokenEntry(int Id, string Content, bool SingleWord, bool LeftStrip, bool RightStrip);

    /// <summary>Finds added tokens leftmost-longest and applies their flags (Rust's AddedVocabulary::find_matches).</summary>
    private sealed class AddedTokenMatcher
    {
        private readonly Dictionary<char, AddedTokenEntry[]> _byFirstChar;

        public AddedTokenMatcher(List<AddedTokenEntry> tokens) =>
            _byFirstChar = tokens.Where(t => t.Content.Length > 0).GroupBy(t => t.Content[0])
                .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());

        /// <summary>(start, end, id) parts covering the text; id -1 for text between added tokens. Empty parts are left out.</summary>
        public List<(int Start, int End, int Id)> Split(string text)
        {
            var parts = new List<(int, int, int)>();
            int offset = 0;
            if (_byFirstChar.Count > 0)
            {
                for (int i = 0; i < text.Length;)
                {
                    AddedTokenEntry? found = null;
                    if (_byFirstChar.TryGetValue(text[i], out AddedTokenEntry[]? candidates))
                    {
                        foreach (AddedTokenEntry candidate in candidates)
                        {
                            if (text.AsSpan(i).StartsWith(candidate.Content, StringComparison.Ordinal))
                            {
                                found = candidate;
                                break;
                            }
                        }
                    }

                    if (found is null)
                    {
                        i++;
                        continue;
                    }

                    int start = i;
                    int stop = i + found.Content.Length;
                    i = stop;
                    if (found.SingleWord && ((start > 0 && IsWordChar(text, start - 1, backwards: true)) || (stop < text.Length && IsWordChar(text, stop, backwards: false))))
                    {
                        continue;
                    }

                    if (found.LeftStrip)
                    {
                        int newStart = start;
                        while (newStart > 0 && char.IsWhiteSpace(text[newStart - 1]))
                        {
                            newStart--;
                        }

                        start = Math.Max(newStart, offset);
                    }

                    if (found.RightStrip)
                    {
                        while (stop < text.Length && char.IsWhiteSpace(text[stop]))
                        {
                            stop++;
                        }

                        i = stop;
                    }

                    if (offset < start)
                    {
                        parts.Add((offset, start, -1));
                    }

                    parts.Add((start, stop, found.Id));
                    offset = stop;
                }
            }

            if (offset < text.Length)
            {
                parts.Add((offset, text.Length, -1));
            }

            return parts;
        }

        /// <summary>Rust regex's Unicode \w: letters, marks, digits, connector punctuation.</summary>
        private static bool IsWordChar(string text, int index, bool backwards)
        {
            if (backwards && index > 0 && char.IsLowSurrogate(text[index]) && char.IsHighSurrogate(text[index - 1]))
            {
                index--;
            }

            UnicodeCategory category = CharUnicodeInfo.GetUnicodeCategory(text, index);
            return category is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter or UnicodeCategory.NonSpacingMark
                or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark or UnicodeCategory.DecimalDigitNumber
                or UnicodeCategory.ConnectorPunctuation;
        }
    }
}
