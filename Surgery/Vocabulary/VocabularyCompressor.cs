using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ModelSurgery.Inference.IO;
using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Surgery.Vocabulary;

/// <summary>How far to compress: keep a number of tokens, or enough tokens to cover a fraction of the corpus.</summary>
public sealed record CompressionTarget
{
    private CompressionTarget(int? keepCount, double? coverage)
    {
        KeepCount = keepCount;
        Coverage = coverage;
    }

    /// <summary>Total tokens to keep (required and closure tokens included), or null.</summary>
    public int? KeepCount { get; }

    /// <summary>Fraction of counted corpus tokens the kept tokens must cover, or null.</summary>
    public double? Coverage { get; }

    /// <summary>Keep exactly <paramref name="count"/> tokens (fewer only if the vocabulary runs out).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is not positive.</exception>
    public static CompressionTarget Keep(int count)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        return new CompressionTarget(count, null);
    }

    /// <summary>Keep the most frequent tokens until they cover <paramref name="coverage"/> of the corpus (e.g. 0.98).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="coverage"/> is not in (0, 1].</exception>
    public static CompressionTarget Cover(double coverage)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(coverage, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(coverage, 1);
        return new CompressionTarget(null, coverage);
    }

    /// <inheritdoc/>
    public override string ToString() => KeepCount is int n ? $"keep {n}" : $"cover {Coverage:P2}";
}

/// <summary>Which ids a compression keeps and why.</summary>
/// <param name="KeptOldIds">Kept ids in ascending (original) order.</param>
/// <param name="Required">Tokens kept regardless of frequency (special, added, control, unknown, byte tokens).</param>
/// <param name="AddedForClosure">Tokens kept only because a kept token is merged from them.</param>
/// <param name="Coverage">Fraction of counted corpus tokens that are kept ids.</param>
public sealed record VocabularySelection(IReadOnlyList<int> KeptOldIds, int Required, int AddedForClosure, double Coverage);

/// <summary>A compressed tokenizer in its own format, with the id map to the original.</summary>
/// <typeparam name="T">The format: <see cref="HuggingFaceTokenizerJson"/>, <see cref="SentencePieceModel"/> or <see cref="TiktokenVocabulary"/>.</typeparam>
/// <param name="Tokenizer">The compressed tokenizer.</param>
/// <param name="Map">New id to old id.</param>
/// <param name="Selection">What was kept and why.</param>
public sealed record CompressedTokenizer<T>(T Tokenizer, VocabularyMap Map, VocabularySelection Selection);

/// <summary>Files written by <see cref="VocabularyCompressor.CompressAsync"/>.</summary>
/// <param name="Map">New id to old id.</param>
/// <param name="Selection">What was kept and why.</param>
/// <param name="TokenizerPath">The compressed tokenizer file, in the input's format.</param>
/// <param name="MapPath">The <c>vocab_map.json</c> file.</param>
public sealed record CompressionResult(VocabularyMap Map, VocabularySelection Selection, string TokenizerPath, string MapPath);

/// <summary>
/// Shrinks a tokenizer to its most frequent tokens (PanGu-pi Pro) without breaking it: special/added/control,
/// unknown and byte tokens are always kept; every kept merged token stays reachable because the two tokens it is
/// merged from are kept too (recursively, counted in the target size); merges whose tokens are removed are dropped.
/// Kept ids keep their original relative order.
/// </summary>
public static class VocabularyCompressor
{
    /// <summary>The map file name written next to the compressed tokenizer.</summary>
    public const string MapFileName = "vocab_map.json";

    /// <summary>
    /// Compresses the tokenizer at <paramref name="tokenizerPath"/> (tokenizer.json or a folder with one, SentencePiece
    /// .model, .tiktoken, or <c>gpt2</c>) and writes it into <paramref name="outputDirectory"/>, with
    /// <c>vocab_map.json</c>, under a name every command reads from a folder: BPE sources (tokenizer.json, .tiktoken,
    /// <c>gpt2</c>) as a Hugging Face <c>tokenizer.json</c> with a <c>tokenizer_config.json</c> (the source's, with
    /// added_tokens_decoder renumbered, and special_tokens_map.json copied; for tiktoken sources one naming the special
    /// tokens), SentencePiece models as <c>tokenizer.model</c>.
    /// </summary>
    /// <param name="tokenizerPath">The tokenizer to compress.</param>
    /// <param name="statistics">Token counts for that tokenizer.</param>
    /// <param name="target">How many tokens, or how much coverage, to keep.</param>
    /// <param name="outputDirectory">Where to write (created if needed).</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="cancellationToken">Stops the work.</param>
    /// <exception cref="ArgumentException">The statistics do not fit the tokenizer, or the target is below the required tokens.</exception>
    public static Task<CompressionResult> CompressAsync(string tokenizerPath, VocabularyStatistics statistics, CompressionTarget target, string outputDirectory,
        ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(statistics);
        ArgumentNullException.ThrowIfNull(target);
        ArgumentException.ThrowIfNullOrWhiteSpace(outputDirectory);
        logger ??= NullLogger.Instance;
        return Task.Run(() =>
        {
            (TokenizerFormat format, string file) = TokenizerFiles.Detect(tokenizerPath);
            Directory.CreateDirectory(outputDirectory);
            string output;
            VocabularyMap map;
            VocabularySelection selection;
            switch (format)
            {
                case TokenizerFormat.HuggingFaceJson:
                    var json = Compress(HuggingFaceTokenizerJson.Load(file), statistics.Counts, target, cancellationToken);
                    output = Path.Combine(outputDirectory, "tokenizer.json");
                    json.Tokenizer.Save(output);
                    (map, selection) = (json.Map, json.Selection);
                    CopyCompanionFiles(Path.GetDirectoryName(Path.GetFullPath(file))!, outputDirectory, map);
                    break;
                case TokenizerFormat.SentencePiece:
                    var model = Compress(SentencePieceModel.Load(file), statistics.Counts, target, cancellationToken);
                    output = Path.Combine(outputDirectory, "tokenizer.model");
                    model.Tokenizer.Save(output);
                    (map, selection) = (model.Map, model.Selection);
                    break;
                default:
                    // tiktoken ranks are the ids of the equivalent byte-level tokenizer.json, so the counts apply as they are.
                    TiktokenVocabulary source = format == TokenizerFormat.BuiltInGpt2 ? TiktokenVocabulary.LoadGpt2() : TiktokenVocabulary.Load(file);
                    var converted = Compress(HuggingFaceTokenizerJson.FromTiktoken(source), statistics.Counts, target, cancellationToken);
                    output = Path.Combine(outputDirectory, "tokenizer.json");
                    converted.Tokenizer.Save(output);
                    (map, selection) = (converted.Map, converted.Selection);
                    WriteTiktokenConfig(converted.Tokenizer, outputDirectory);
                    break;
            }

            string mapPath = Path.Combine(outputDirectory, MapFileName);
            map.Save(mapPath);
            VocabularyLog.Compressed(logger, tokenizerPath, map.OldVocabSize, map.NewVocabSize, selection.AddedForClosure, selection.Coverage, output);
            return new CompressionResult(map, selection, output, mapPath);
        }, cancellationToken);
    }

    /// <summary>
    /// Compresses a tokenizer.json so that it still tokenizes every text exactly as the full file does wherever all the
    /// full file's tokens are kept. For every kept token, BPE is run on the token's own string (<see cref="BpeMergeTrace"/>)
    /// and the two tokens of its last merge are kept too, recursively, so every merge BPE applies on the way to a kept
    /// token survives; all merges whose three tokens are kept are written, in their original order. Tokens BPE cannot
    /// build from their own string are never produced by merging: they are kept only as added tokens, or as whole words
    /// when model.ignore_merges is set, and dropped otherwise. Text with dropped tokens falls back to kept tokens (byte-level
    /// alphabet or byte fallback), so it still decodes to the same text.
    /// </summary>
    /// <param name="tokenizer">The tokenizer to compress.</param>
    /// <param name="counts">Occurrences per id.</param>
    /// <param name="target">How many tokens, or how much coverage, to keep.</param>
    /// <param name="cancellationToken">Stops the work.</param>
    /// <exception cref="InvalidDataException">The model uses continuing_subword_prefix or end_of_word_suffix.</exception>
    public static CompressedTokenizer<HuggingFaceTokenizerJson> Compress(HuggingFaceTokenizerJson tokenizer, IReadOnlyList<long> counts, CompressionTarget target,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        var trace = new BpeMergeTrace(tokenizer);
        var required = new HashSet<int>(tokenizer.AddedTokens.Select(t => t.Id));
        if (tokenizer.UnknownToken is { } unk && tokenizer.Vocabulary.TryGetValue(unk, out int unkId))
        {
            required.Add(unkId);
        }

        // Parents from the token's own BPE run; unreachable tokens have none and are eligible only as whole words.
        var parents = new Dictionary<int, int[]>(tokenizer.Vocabulary.Count);
        var unreachable = new HashSet<int>();
        foreach ((string token, int id) in tokenizer.Vocabulary)
        {
            cancellationToken.ThrowIfCancellationRequested();
            bool byteToken = tokenizer.IsByteLevel
                ? token.Length == 1 && ByteLevelAlphabet.Decode(token) is not null
                : tokenizer.ByteFallback && HuggingFaceTokenizerJson.IsByteFallbackToken(token);
            if (byteToken)
            {
                required.Add(id);
            }

            (bool reachable, BpeMerge? last) = trace.Trace(token);
            if (!reachable)
            {
                unreachable.Add(id);
            }
            else if (last is not null)
            {
                parents[id] = [tokenizer.Vocabulary[last.Left], tokenizer.Vocabulary[last.Right]];
            }
        }

        IReadOnlyList<int> Parents(int id) => parents.TryGetValue(id, out int[]? pair) ? pair : [];
        bool Eligible(int id) => tokenizer.IgnoreMerges || required.Contains(id) || !unreachable.Contains(id);

        VocabularySelection selection = Select(tokenizer.IdCount, tokenizer.TokensById.ContainsKey, required, Parents, counts, target, Eligible, cancellationToken);
        var kept = new HashSet<string>(selection.KeptOldIds.Where(id => tokenizer.Vocabulary.TryGetValue(tokenizer.TokensById[id], out int v) && v == id)
            .Select(id => tokenizer.TokensById[id]), StringComparer.Ordinal);
        BpeMerge[] merges = [.. tokenizer.Merges.Where(m => kept.Contains(m.Left) && kept.Contains(m.Right) && kept.Contains(m.Result))];
        return new(tokenizer.WithVocabulary(selection.KeptOldIds, merges), new VocabularyMap(selection.KeptOldIds, tokenizer.IdCount), selection);
    }

    /// <summary>
    /// Compresses a SentencePiece model: control, unknown, user-defined and byte pieces are kept; for BPE models every
    /// kept piece keeps the two pieces it is merged from (recovered from the scores); unigram pieces are independent.
    /// </summary>
    /// <param name="model">The model to compress.</param>
    /// <param name="counts">Occurrences per id.</param>
    /// <param name="target">How many pieces, or how much coverage, to keep.</param>
    /// <param name="cancellationToken">Stops the work.</param>
    public static CompressedTokenizer<SentencePieceModel> Compress(SentencePieceModel model, IReadOnlyList<long> counts, CompressionTarget target,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        var required = new HashSet<int>();
        for (int id = 0; id < model.Pieces.Count; id++)
        {
            if (model.Pieces[id].Type is SentencePieceType.Control or SentencePieceType.Unknown or SentencePieceType.UserDefined or SentencePieceType.Byte)
            {
                required.Add(id);
            }
        }

        // BPE merges the pair whose piece scores highest: rank normal pieces by score (ties by id).
        var rank = new Dictionary<string, long>(StringComparer.Ordinal);
        var pieceIds = new Dictionary<string, int>(StringComparer.Ordinal);
        int[] order = [.. Enumerable.Range(0, model.Pieces.Count).Where(i => model.Pieces[i].Type == SentencePieceType.Normal)
            .OrderByDescending(i => model.Pieces[i].Score).ThenBy(i => i)];
        for (int r = 0; r < order.Length; r++)
        {
            rank.TryAdd(model.Pieces[order[r]].Piece, r);
            pieceIds.TryAdd(model.Pieces[order[r]].Piece, order[r]);
        }

        TokenPriority priority = BpeMerging.FromDictionary(rank);
        IReadOnlyList<int> Parents(int id)
        {
            SentencePiece piece = model.Pieces[id];
            if (model.ModelType != SentencePieceModelType.Bpe || piece.Type != SentencePieceType.Normal)
            {
                return [];
            }

            return BpeMerging.Parents(piece.Piece, priority, rank[piece.Piece]) is var (left, right)
                && pieceIds.TryGetValue(left, out int l) && pieceIds.TryGetValue(right, out int rr)
                ? [l, rr]
                : [];
        }

        VocabularySelection selection = Select(model.Pieces.Count, _ => true, required, Parents, counts, target, cancellationToken: cancellationToken);
        return new(model.WithPieces(selection.KeptOldIds), new VocabularyMap(selection.KeptOldIds, model.Pieces.Count), selection);
    }

    /// <summary>
    /// Compresses a tiktoken vocabulary: special tokens and the 256 single bytes are kept, and every kept token keeps
    /// the two lower-ranked tokens BPE merges it from; ranks are renumbered densely in the original order.
    /// </summary>
    /// <param name="vocabulary">The vocabulary to compress.</param>
    /// <param name="counts">Occurrences per id.</param>
    /// <param name="target">How many tokens, or how much coverage, to keep.</param>
    /// <param name="cancellationToken">Stops the work.</param>
    public static CompressedTokenizer<TiktokenVocabulary> Compress(TiktokenVocabulary vocabulary, IReadOnlyList<long> counts, CompressionTarget target,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        var ranks = new Dictionary<string, long>(StringComparer.Ordinal);
        var bytesById = new Dictionary<int, byte[]>();
        foreach (TiktokenToken token in vocabulary.Tokens)
        {
            ranks[Encoding.Latin1.GetString(token.Bytes)] = token.Rank;
            bytesById[token.Rank] = token.Bytes;
        }

        TokenPriority priority = BpeMerging.FromDictionary(ranks);
        var required = new HashSet<int>(vocabulary.SpecialTokens.Values);
        required.UnionWith(vocabulary.Tokens.Where(t => t.Bytes.Length == 1).Select(t => t.Rank));

        IReadOnlyList<int> Parents(int id)
        {
            if (!bytesById.TryGetValue(id, out byte[]? bytes) || bytes.Length < 2)
            {
                return [];
            }

            return BpeMerging.Parents(Encoding.Latin1.GetString(bytes), priority, id) is var (left, right)
                ? [(int)ranks[left], (int)ranks[right]]
                : [];
        }

        var exists = new HashSet<int>(bytesById.Keys);
        exists.UnionWith(vocabulary.SpecialTokens.Values);
        VocabularySelection selection = Select(vocabulary.IdCount, exists.Contains, required, Parents, counts, target, cancellationToken: cancellationToken);
        return new(vocabulary.WithTokens(selection.KeptOldIds), new VocabularyMap(selection.KeptOldIds, vocabulary.IdCount), selection);
    }

    /// <summary>
    /// The selection shared by all formats: required tokens with their closure first, then tokens by descending count
    /// (ties: lower id first) each with its closure, while the closure fits the size target or until the coverage
    /// target is met.
    /// </summary>
    /// <param name="idCount">One more than the largest id.</param>
    /// <param name="exists">Whether an id is in the vocabulary (ids may have gaps).</param>
    /// <param name="required">Ids always kept.</param>
    /// <param name="parentsOf">The ids a token is merged from (empty for base tokens).</param>
    /// <param name="counts">Occurrences per id.</param>
    /// <param name="target">How many tokens, or how much coverage, to keep.</param>
    /// <param name="eligible">Whether a token may be kept for its own count (null: every existing token); tokens it
    /// rejects are still kept when required or needed by a kept token's closure.</param>
    /// <param name="cancellationToken">Stops the work.</param>
    /// <exception cref="ArgumentException">The counts have ids the vocabulary lacks, or the size target is below the required tokens.</exception>
    public static VocabularySelection Select(int idCount, Func<int, bool> exists, IReadOnlySet<int> required, Func<int, IReadOnlyList<int>> parentsOf,
        IReadOnlyList<long> counts, CompressionTarget target, Func<int, bool>? eligible = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(exists);
        ArgumentNullException.ThrowIfNull(required);
        ArgumentNullException.ThrowIfNull(parentsOf);
        ArgumentNullException.ThrowIfNull(counts);
        ArgumentNullException.ThrowIfNull(target);
        for (int id = 0; id < counts.Count; id++)
        {
            if (counts[id] != 0 && (id >= idCount || !exists(id)))
            {
                throw new ArgumentException($"The statistics count id {id}, which this tokenizer does not have ({idCount} ids); were they made with another tokenizer?", nameof(counts));
            }
        }

        long Count(int id) => id < counts.Count ? counts[id] : 0;
        long total = counts.Sum();
        bool[] kept = new bool[idCount];
        int keptCount = 0;
        long covered = 0;

        List<int> Closure(int id)
        {
            var missing = new List<int>();
            var stack = new Stack<int>();
            var visited = new HashSet<int>();
            stack.Push(id);
            while (stack.Count > 0)
            {
                int next = stack.Pop();
                if (kept[next] || !visited.Add(next))
                {
                    continue;
                }

                missing.Add(next);
                foreach (int parent in parentsOf(next))
                {
                    stack.Push(parent);
                }
            }

            return missing;
        }

        void Keep(List<int> ids)
        {
            foreach (int id in ids)
            {
                kept[id] = true;
                covered += Count(id);
            }

            keptCount += ids.Count;
        }

        foreach (int id in required.Order())
        {
            Keep(Closure(id));
        }

        int requiredCount = keptCount;
        if (target.KeepCount is int limit && limit < requiredCount)
        {
            throw new ArgumentException($"Target size {limit} is below the {requiredCount} tokens that must be kept (special, added, unknown and byte tokens).", nameof(target));
        }

        int closureAdded = 0;
        int[] candidates = [.. Enumerable.Range(0, idCount).Where(id => !kept[id] && exists(id) && (eligible?.Invoke(id) ?? true)).OrderByDescending(Count).ThenBy(id => id)];
        foreach (int id in candidates)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if ((target.KeepCount is int n && keptCount >= n) || (target.Coverage is double c && covered >= c * total))
            {
                break;
            }

            if (kept[id])
            {
                continue;
            }

            List<int> closure = Closure(id);
            if (target.KeepCount is int max && keptCount + closure.Count > max)
            {
                continue;
            }

            Keep(closure);
            closureAdded += closure.Count - 1;
        }

        int[] keptIds = [.. Enumerable.Range(0, idCount).Where(id => kept[id])];
        return new VocabularySelection(keptIds, requiredCount, closureAdded, total == 0 ? 0 : (double)covered / total);
    }

    /// <summary>
    /// A tokenizer_config.json for a tokenizer.json made from tiktoken: its special tokens in added_tokens_decoder, and
    /// <c>&lt;|endoftext|&gt;</c>, when present, as the BOS, EOS and unknown token (GPT-2's convention).
    /// </summary>
    private static void WriteTiktokenConfig(HuggingFaceTokenizerJson tokenizer, string outputDirectory)
    {
        var decoder = new JsonObject();
        foreach (AddedToken token in tokenizer.AddedTokens.OrderBy(t => t.Id))
        {
            decoder[token.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)] = new JsonObject
            {
                ["content"] = token.Content, ["lstrip"] = false, ["normalized"] = false, ["rstrip"] = false,
                ["single_word"] = false, ["special"] = token.Special,
            };
        }

        var root = new JsonObject { ["added_tokens_decoder"] = decoder, ["tokenizer_class"] = "PreTrainedTokenizerFast" };
        const string endOfText = "<|endoftext|>";
        if (tokenizer.AddedTokens.Any(t => t.Content == endOfText))
        {
            root["bos_token"] = endOfText;
            root["eos_token"] = endOfText;
            root["unk_token"] = endOfText;
        }

        AtomicFile.WriteAllText(Path.Combine(outputDirectory, "tokenizer_config.json"), root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    private static void CopyCompanionFiles(string sourceDirectory, string outputDirectory, VocabularyMap map)
    {
        if (Path.GetFullPath(sourceDirectory) == Path.GetFullPath(outputDirectory))
        {
            return;
        }

        string specialMap = Path.Combine(sourceDirectory, "special_tokens_map.json");
        if (File.Exists(specialMap))
        {
            AtomicFile.WriteAllText(Path.Combine(outputDirectory, "special_tokens_map.json"), File.ReadAllText(specialMap));
        }

        string config = Path.Combine(sourceDirectory, "tokenizer_config.json");
        if (!File.Exists(config))
        {
            return;
        }

        var root = JsonNode.Parse(File.ReadAllText(config)) as JsonObject
            ?? throw new InvalidDataException($"{config}: expected a JSON object.");
        if (root["added_tokens_decoder"] is JsonObject decoder)
        {
            var renumbered = new JsonObject();
            foreach ((string key, JsonNode? value) in decoder.ToList())
            {
                if (int.TryParse(key, out int oldId) && map.NewId(oldId) is int newId)
                {
                    renumbered[newId.ToString(System.Globalization.CultureInfo.InvariantCulture)] = value?.DeepClone();
                }
            }

            root["added_tokens_decoder"] = renumbered;
        }

        AtomicFile.WriteAllText(Path.Combine(outputDirectory, "tokenizer_config.json"), root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
