using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using ModelSurgery.Inference.IO;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>One BPE merge rule: <see cref="Left"/> and <see cref="Right"/> become <see cref="Result"/>.</summary>
/// <param name="Left">The left parent token.</param>
/// <param name="Right">The right parent token.</param>
public sealed record BpeMerge(string Left, string Right)
{
    /// <summary>The merged token.</summary>
    public string Result => Left + Right;
}

/// <summary>An entry of <c>added_tokens</c> in a <c>tokenizer.json</c>.</summary>
/// <param name="Id">The token id.</param>
/// <param name="Content">The token text, matched whole in the input.</param>
/// <param name="Special">Whether it is a special token (skipped when decoding).</param>
public sealed record AddedToken(int Id, string Content, bool Special);

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> with a BPE model, read into its vocabulary, merges and added tokens. The rest
/// of the JSON (normalizer, pre-tokenizer, decoder, post-processor, ...) is kept as read and written back, with ids
/// renumbered where they appear when the vocabulary changes. Two flavours are understood: byte-level BPE (GPT-2,
/// Llama 3, Qwen, SmolLM2) and SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama).
/// </summary>
public sealed class HuggingFaceTokenizerJson
{
    private readonly JsonObject _root;
    private readonly bool _mergesAsPairs;
    private readonly string _source;

    private HuggingFaceTokenizerJson(JsonObject root, string source)
    {
        _root = root;
        _source = source;
        var model = root["model"] as JsonObject ?? throw new InvalidDataException($"{source}: no 'model' object.");
        string type = model["type"]?.GetValue<string>() ?? "BPE";
        if (type != "BPE")
        {
            throw new InvalidDataException($"{source}: model.type is '{type}'; only BPE tokenizer.json files are supported.");
        }

        var vocab = model["vocab"] as JsonObject ?? throw new InvalidDataException($"{source}: model.vocab is missing or not an object.");
        var vocabulary = new Dictionary<string, int>(vocab.Count, StringComparer.Ordinal);
        foreach ((string token, JsonNode? id) in vocab)
        {
            vocabulary[token] = id?.GetValue<int>() ?? throw new InvalidDataException($"{source}: model.vocab['{token}'] has no id.");
        }

        Vocabulary = vocabulary;
        var merges = new List<BpeMerge>();
        foreach (JsonNode? merge in model["merges"] as JsonArray ?? [])
        {
            if (merge is JsonArray pair && pair.Count == 2)
            {
                _mergesAsPairs = true;
                merges.Add(new BpeMerge(pair[0]!.GetValue<string>(), pair[1]!.GetValue<string>()));
            }
            else if (merge?.GetValue<string>() is { } text && text.Split(' ') is [var left, var right])
            {
                merges.Add(new BpeMerge(left, right));
            }
            else
            {
                throw new InvalidDataException($"{source}: model.merges[{merges.Count}] is not 'left right' or [left, right].");
            }
        }

        Merges = merges;
        var added = new List<AddedToken>();
        foreach (JsonNode? token in root["added_tokens"] as JsonArray ?? [])
        {
            added.Add(new AddedToken(
                token?["id"]?.GetValue<int>() ?? throw new InvalidDataException($"{source}: added_tokens[{added.Count}] has no id."),
                token["content"]?.GetValue<string>() ?? throw new InvalidDataException($"{source}: added_tokens[{added.Count}] has no content."),
                token["special"]?.GetValue<bool>() ?? false));
        }

        AddedTokens = added;
        ByteFallback = model["byte_fallback"]?.GetValue<bool>() ?? false;
        UnknownToken = model["unk_token"]?.GetValue<string>();
        IgnoreMerges = model["ignore_merges"]?.GetValue<bool>() ?? false;
        ContinuingSubwordPrefix = model["continuing_subword_prefix"]?.GetValue<string>();
        EndOfWordSuffix = model["end_of_word_suffix"]?.GetValue<string>();
        IsByteLevel = ContainsType(root["pre_tokenizer"], "ByteLevel") || ContainsType(root["decoder"], "ByteLevel");
        PreTokenizerPattern = FindSplitPattern(root["pre_tokenizer"]) ?? (IsByteLevel ? TiktokenVocabulary.Gpt2Pattern : null);
        IsSentencePieceStyle = !IsByteLevel && (ByteFallback || ContainsType(root["pre_tokenizer"], "Metaspace") || ContainsType(root["normalizer"], "Prepend") || ContainsType(root["decoder"], "Metaspace"));
        var ids = new Dictionary<int, string>();
        foreach ((string token, int id) in Vocabulary)
        {
            ids[id] = token;
        }

        foreach (AddedToken token in AddedTokens)
        {
            ids[token.Id] = token.Content;
        }

        TokensById = ids;
    }

    /// <summary>The file name given when reading, for messages.</summary>
    public string Source => _source;

    /// <summary>The JSON as read (not to be modified).</summary>
    internal JsonObject Root => _root;

    /// <summary>model.vocab: token to id.</summary>
    public IReadOnlyDictionary<string, int> Vocabulary { get; }

    /// <summary>model.merges in priority order.</summary>
    public IReadOnlyList<BpeMerge> Merges { get; }

    /// <summary>added_tokens (special or not).</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <summary>Every id (vocabulary and added tokens) with its text.</summary>
    public IReadOnlyDictionary<int, string> TokensById { get; }

    /// <summary>model.byte_fallback: unknown characters become &lt;0xNN&gt; tokens.</summary>
    public bool ByteFallback { get; }

    /// <summary>The pre-tokenizer or decoder is ByteLevel: tokens are spelled in GPT-2's byte alphabet.</summary>
    public bool IsByteLevel { get; }

    /// <summary>SentencePiece-style BPE: spaces as U+2581, optional byte fallback, no byte-level alphabet.</summary>
    public bool IsSentencePieceStyle { get; }

    /// <summary>model.ignore_merges: a pre-tokenized word that is itself in the vocabulary becomes that token without merging (Llama 3, gpt-oss).</summary>
    public bool IgnoreMerges { get; }

    /// <summary>model.continuing_subword_prefix, if any (WordPiece-style BPE).</summary>
    public string? ContinuingSubwordPrefix { get; }

    /// <summary>model.end_of_word_suffix, if any.</summary>
    public string? EndOfWordSuffix { get; }

    /// <summary>model.unk_token, if any.</summary>
    public string? UnknownToken { get; }

    /// <summary>The Split regex of the pre-tokenizer (GPT-2's for a plain ByteLevel pre-tokenizer); null for SentencePiece style.</summary>
    public string? PreTokenizerPattern { get; }

    /// <summary>One more than the largest id.</summary>
    public int IdCount => TokensById.Count == 0 ? 0 : TokensById.Keys.Max() + 1;

    /// <summary>Reads a <c>tokenizer.json</c>.</summary>
    /// <exception cref="InvalidDataException">The file is not a BPE tokenizer.json; the message names the file and field.</exception>
    public static HuggingFaceTokenizerJson Load(string path) => Parse(File.ReadAllText(path), path);

    /// <summary>Parses <c>tokenizer.json</c> text.</summary>
    /// <param name="json">The JSON text.</param>
    /// <param name="source">The file name, for error messages.</param>
    public static HuggingFaceTokenizerJson Parse(string json, string source = "tokenizer.json")
    {
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(json);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: not valid JSON ({e.Message}).", e);
        }

        return new HuggingFaceTokenizerJson(node as JsonObject ?? throw new InvalidDataException($"{source}: expected a JSON object."), source);
    }

    /// <summary>
    /// Expresses a tiktoken vocabulary as a byte-level BPE tokenizer.json: tokens in GPT-2's byte alphabet, ids = ranks,
    /// and the merge of each token recovered from the ranks (the two parts BPE leaves with only lower ranks).
    /// </summary>
    public static HuggingFaceTokenizerJson FromTiktoken(TiktokenVocabulary vocabulary)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        var ranks = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (TiktokenToken token in vocabulary.Tokens)
        {
            ranks[Encoding.Latin1.GetString(token.Bytes)] = token.Rank;
        }

        TokenPriority priority = BpeMerging.FromDictionary(ranks);
        var vocab = new JsonObject();
        var merges = new JsonArray();
        foreach (TiktokenToken token in vocabulary.Tokens)
        {
            vocab[ByteLevelAlphabet.Encode(token.Bytes)] = token.Rank;
            if (token.Bytes.Length < 2)
            {
                continue;
            }

            if (BpeMerging.Parents(Encoding.Latin1.GetString(token.Bytes), priority, token.Rank) is var (left, right))
            {
                merges.Add($"{ByteLevelAlphabet.Encode(Encoding.Latin1.GetBytes(left))} {ByteLevelAlphabet.Encode(Encoding.Latin1.GetBytes(right))}");
            }
        }

        var added = new JsonArray();
        foreach ((string content, int id) in vocabulary.SpecialTokens.OrderBy(p => p.Value))
        {
            added.Add(new JsonObject
            {
                ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = true,
            });
        }

        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = vocabulary.Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
            },
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["vocab"] = vocab, ["merges"] = merges,
            },
        };
        return new HuggingFaceTokenizerJson(root, "tiktoken");
    }

    /// <summary>
    /// A tokenizer.json with only <paramref name="keptIds"/> (new id = position) and <paramref name="merges"/>: vocab,
    /// merges and added_tokens are rewritten, and ids in post_processor (<c>ids</c>, <c>sep</c>, <c>cls</c>) and
    /// padding.pad_id are renumbered. Everything else is unchanged.
    /// </summary>
    /// <exception cref="ArgumentException">An id is unknown or repeated, a merge uses a removed token, or an id the post-processor needs is removed.</exception>
    public HuggingFaceTokenizerJson WithVocabulary(IReadOnlyList<int> keptIds, IReadOnlyList<BpeMerge> merges)
    {
        ArgumentNullException.ThrowIfNull(keptIds);
        ArgumentNullException.ThrowIfNull(merges);
        var newIds = new Dictionary<int, int>();
        foreach (int id in keptIds)
        {
            if (!TokensById.ContainsKey(id) || !newIds.TryAdd(id, newIds.Count))
            {
                throw new ArgumentException($"Token id {id} is not in {_source} or is kept twice.", nameof(keptIds));
            }
        }

        var root = (JsonObject)_root.DeepClone();
        var model = (JsonObject)root["model"]!;
        var vocab = new JsonObject();
        var keptVocabulary = new HashSet<string>(StringComparer.Ordinal);
        foreach (int id in keptIds)
        {
            string token = TokensById[id];
            if (Vocabulary.TryGetValue(token, out int vocabId) && vocabId == id)
            {
                vocab[token] = newIds[id];
                keptVocabulary.Add(token);
            }
        }

        var mergeArray = new JsonArray();
        foreach (BpeMerge merge in merges)
        {
            if (!keptVocabulary.Contains(merge.Left) || !keptVocabulary.Contains(merge.Right) || !keptVocabulary.Contains(merge.Result))
            {
                throw new ArgumentException($"Merge '{merge.Left} {merge.Right}' uses a token that is not kept.", nameof(merges));
            }

            mergeArray.Add(_mergesAsPairs ? new JsonArray(merge.Left, merge.Right) : (JsonNode)$"{merge.Left} {merge.Right}");
        }

        model["vocab"] = vocab;
        model["merges"] = mergeArray;
        if (root["added_tokens"] is JsonArray added)
        {
            var keptAdded = new JsonArray();
            foreach (JsonNode? token in added.ToList())
            {
                int id = token!["id"]!.GetValue<int>();
                if (newIds.TryGetValue(id, out int newId))
                {
                    var copy = token.DeepClone();
                    copy["id"] = newId;
                    keptAdded.Add(copy);
                }
            }

            root["added_tokens"] = keptAdded;
        }

        RenumberIds(root["post_processor"], newIds, "post_processor");
        if (root["padding"] is JsonObject padding && padding["pad_id"] is JsonValue padId)
        {
            padding["pad_id"] = Renumber(padId.GetValue<int>(), newIds, "padding.pad_id");
        }

        return new HuggingFaceTokenizerJson(root, _source);
    }

    /// <summary>The JSON text (indented).</summary>
    public string ToJson() => _root.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });

    /// <summary>Writes the file atomically.</summary>
    public void Save(string path) => AtomicFile.WriteAllText(path, ToJson());

    /// <summary>The tokenizer that runs this file exactly as Hugging Face tokenizers does.</summary>
    /// <exception cref="InvalidDataException">A component type is not supported; the message names the file and the type.</exception>
    public HuggingFaceTokenizer CreateTokenizer() => new(this);

    /// <summary>The SentencePiece BPE model equivalent to a SentencePiece-style file: merge rank r becomes score -r.</summary>
    public SentencePieceModel ToSentencePieceModel()
    {
        var firstMerge = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int rank = 0; rank < Merges.Count; rank++)
        {
            firstMerge.TryAdd(Merges[rank].Result, rank);
        }

        Dictionary<int, AddedToken> addedById = AddedTokens.ToDictionary(t => t.Id);
        var pieces = new List<SentencePiece>(IdCount);
        for (int id = 0; id < IdCount; id++)
        {
            if (!TokensById.TryGetValue(id, out string? token))
            {
                throw new InvalidDataException($"{_source}: id {id} is unused; SentencePiece needs contiguous ids.");
            }

            SentencePieceType type = token == UnknownToken ? SentencePieceType.Unknown
                : addedById.TryGetValue(id, out AddedToken? added) ? (added.Special ? SentencePieceType.Control : SentencePieceType.UserDefined)
                : ByteFallback && IsByteFallbackToken(token) ? SentencePieceType.Byte
                : SentencePieceType.Normal;
            // Merged pieces score by merge order; pieces no merge produces go last so they never win a merge.
            float score = firstMerge.TryGetValue(token, out int r) ? -r : token.EnumerateRunes().Count() == 1 ? 0 : -1e9f;
            pieces.Add(new SentencePiece(token, type == SentencePieceType.Normal ? score : 0, type));
        }

        int IdOf(string? token) => token is not null && Vocabulary.TryGetValue(token, out int id) ? id
            : AddedTokens.FirstOrDefault(t => t.Content == token)?.Id ?? -1;
        bool addDummyPrefix = !ContainsProperty(_root["pre_tokenizer"], "prepend_scheme", "never") && !ContainsProperty(_root["pre_tokenizer"], "add_prefix_space", false);
        return SentencePieceModel.Create(pieces, SentencePieceModelType.Bpe, ByteFallback,
            unknownId: Math.Max(0, IdOf(UnknownToken)), bosId: IdOf("<s>"), eosId: IdOf("</s>"), padId: -1, addDummyPrefix: addDummyPrefix);
    }

    /// <summary>True for the byte-fallback tokens &lt;0x00&gt;..&lt;0xFF&gt;.</summary>
    public static bool IsByteFallbackToken(string token) =>
        token is ['<', '0', 'x', _, _, '>'] && byte.TryParse(token.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out _);

    private static int Renumber(int id, Dictionary<int, int> newIds, string where) =>
        newIds.TryGetValue(id, out int newId) ? newId : throw new ArgumentException($"{where} refers to token id {id}, which is removed.", nameof(newIds));

    private static void RenumberIds(JsonNode? node, Dictionary<int, int> newIds, string where)
    {
        switch (node)
        {
            case JsonObject obj:
                foreach ((string key, JsonNode? child) in obj.ToList())
                {
                    if (key == "ids" && child is JsonArray ids)
                    {
                        obj[key] = new JsonArray([.. ids.Select(i => (JsonNode)Renumber(i!.GetValue<int>(), newIds, $"{where}.ids"))]);
                    }
                    else if (key is "sep" or "cls" && child is JsonArray { Count: 2 } pair && pair[1] is JsonValue value)
                    {
                        pair[1] = Renumber(value.GetValue<int>(), newIds, $"{where}.{key}");
                    }
                    else
                    {
                        RenumberIds(child, newIds, $"{where}.{key}");
                    }
                }

                break;
            case JsonArray array:
                foreach (JsonNode? child in array)
                {
                    RenumberIds(child, newIds, where);
                }

                break;
        }
    }

    private static bool ContainsType(JsonNode? node, string type) => node switch
    {
        JsonObject obj => (obj["type"] is JsonValue v && v.TryGetValue(out string? t) && t == type) || obj.Any(p => ContainsType(p.Value, type)),
        JsonArray array => array.Any(child => ContainsType(child, type)),
        _ => false,
    };

    private static bool ContainsProperty<T>(JsonNode? node, string name, T value) => node switch
    {
        JsonObject obj => (obj[name] is JsonValue v && v.TryGetValue(out T? t) && Equals(t, value)) || obj.Any(p => ContainsProperty(p.Value, name, value)),
        JsonArray array => array.Any(child => ContainsProperty(child, name, value)),
        _ => false,
    };

    private static string? FindSplitPattern(JsonNode? node) => node switch
    {
        JsonObject obj when obj["type"]?.GetValue<string>() == "Split" => obj["pattern"]?["Regex"]?.GetValue<string>(),
        JsonObject obj => obj.Select(p => FindSplitPattern(p.Value)).FirstOrDefault(p => p is not null),
        JsonArray array => array.Select(FindSplitPattern).FirstOrDefault(p => p is not null),
        _ => null,
    };
}
