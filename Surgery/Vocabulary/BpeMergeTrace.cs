using System.Text;
using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Surgery.Vocabulary;

/// <summary>
/// How Hugging Face BPE (tokenizers' <c>word.rs</c>) builds a token from the token's own string: start from its
/// characters (byte-level alphabet characters, or Unicode characters with <c>&lt;0xNN&gt;</c> byte fallback), then
/// repeatedly apply the adjacent merge of lowest rank, equal ranks leftmost first.
/// </summary>
/// <remarks>
/// Wherever BPE outputs a token inside a longer word, no merge crossed the token's edges, so the merges inside it are
/// exactly the ones this run applies, in the same order; the run's last merge joins two tokens that are themselves
/// built by their own runs. Keeping, for every kept token, the two tokens of its last merge (recursively) therefore
/// keeps every merge the full tokenizer applies on the way to kept tokens.
/// </remarks>
public sealed class BpeMergeTrace
{
    private readonly HuggingFaceTokenizerJson _tokenizer;
    private readonly Dictionary<(string Left, string Right), int> _ranks;

    /// <summary>Prepares the merge ranks of <paramref name="tokenizer"/>.</summary>
    /// <exception cref="InvalidDataException">The model uses continuing_subword_prefix or end_of_word_suffix, which this trace does not model.</exception>
    public BpeMergeTrace(HuggingFaceTokenizerJson tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (!string.IsNullOrEmpty(tokenizer.ContinuingSubwordPrefix) || !string.IsNullOrEmpty(tokenizer.EndOfWordSuffix))
        {
            throw new InvalidDataException(
                $"model.{(!string.IsNullOrEmpty(tokenizer.ContinuingSubwordPrefix) ? "continuing_subword_prefix" : "end_of_word_suffix")} is set; vocabulary compression supports BPE without subword prefixes or word suffixes.");
        }

        _tokenizer = tokenizer;
        _ranks = new Dictionary<(string, string), int>(tokenizer.Merges.Count);
        for (int rank = 0; rank < tokenizer.Merges.Count; rank++)
        {
            // tokenizers collects merges into a map, so a repeated pair takes its last rank.
            _ranks[(tokenizer.Merges[rank].Left, tokenizer.Merges[rank].Right)] = rank;
        }
    }

    /// <summary>
    /// The last merge BPE applies to <paramref name="token"/>'s own string when that run ends in the token itself;
    /// <c>Reachable</c> is false when it ends elsewhere (the token is never produced by merging), and the merge is null
    /// for a single starting symbol.
    /// </summary>
    /// <param name="token">A vocabulary token, spelled as in the vocabulary.</param>
    public (bool Reachable, BpeMerge? LastMerge) Trace(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        List<string>? symbols = StartingSymbols(token);
        if (symbols is null)
        {
            return (false, null);
        }

        BpeMerge? last = null;
        while (symbols.Count > 1)
        {
            int best = -1, bestRank = int.MaxValue;
            for (int i = 0; i + 1 < symbols.Count; i++)
            {
                if (_ranks.TryGetValue((symbols[i], symbols[i + 1]), out int rank) && rank < bestRank)
                {
                    (best, bestRank) = (i, rank);
                }
            }

            if (best < 0)
            {
                break;
            }

            last = new BpeMerge(symbols[best], symbols[best + 1]);
            symbols[best] += symbols[best + 1];
            symbols.RemoveAt(best + 1);
        }

        return symbols is [var only] && only == token ? (true, last) : (false, null);
    }

    private List<string>? StartingSymbols(string token)
    {
        var symbols = new List<string>(token.Length);
        Span<byte> utf8 = stackalloc byte[4];
        foreach (Rune rune in token.EnumerateRunes())
        {
            string text = rune.ToString();
            if (_tokenizer.Vocabulary.ContainsKey(text))
            {
                symbols.Add(text);
                continue;
            }

            if (_tokenizer.IsByteLevel || !_tokenizer.ByteFallback)
            {
                return null;
            }

            int length = rune.EncodeToUtf8(utf8);
            for (int b = 0; b < length; b++)
            {
                string byteToken = $"<0x{utf8[b]:X2}>";
                if (!_tokenizer.Vocabulary.ContainsKey(byteToken))
                {
                    return null;
                }

                symbols.Add(byteToken);
            }
        }

        return symbols;
    }
}
