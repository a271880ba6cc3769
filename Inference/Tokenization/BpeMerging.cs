namespace ModelSurgery.Inference.Tokenization;

/// <summary>The merge priority of a token (lower merges first), or null when it is not in the vocabulary.</summary>
/// <param name="token">The candidate token text.</param>
public delegate long? TokenPriority(ReadOnlySpan<char> token);

/// <summary>
/// The greedy BPE merge loop, used to recover the two parents a merged token was built from when a format stores
/// merges only implicitly (tiktoken ranks, SentencePiece BPE scores). Bytes are represented as one char each
/// (Latin-1), characters as themselves.
/// </summary>
public static class BpeMerging
{
    /// <summary>
    /// Starting from the Unicode scalar values of <paramref name="token"/>, repeatedly merges the adjacent pair whose
    /// concatenation has the lowest priority below <paramref name="priorityLimit"/>; returns the parts left.
    /// </summary>
    /// <param name="token">The text to split.</param>
    /// <param name="priorityOf">Priority lookup.</param>
    /// <param name="priorityLimit">Only tokens with a priority strictly below this take part.</param>
    public static List<string> Merge(string token, TokenPriority priorityOf, long priorityLimit)
    {
        ArgumentNullException.ThrowIfNull(token);
        ArgumentNullException.ThrowIfNull(priorityOf);
        // starts[i] is where part i begins; starts[^1] == token.Length.
        var starts = new List<int>(token.Length + 1);
        for (int i = 0; i < token.Length; i += char.IsHighSurrogate(token[i]) && i + 1 < token.Length ? 2 : 1)
        {
            starts.Add(i);
        }

        starts.Add(token.Length);
        // pairPriority[i] is the priority of parts i and i + 1 joined; only a merge's neighbours are recomputed.
        var pairPriority = new List<long>(starts.Count);
        for (int i = 0; i + 2 < starts.Count; i++)
        {
            pairPriority.Add(PairPriority(i));
        }

        while (pairPriority.Count > 0)
        {
            int best = -1;
            long bestPriority = priorityLimit;
            for (int i = 0; i < pairPriority.Count; i++)
            {
                if (pairPriority[i] < bestPriority)
                {
                    best = i;
                    bestPriority = pairPriority[i];
                }
            }

            if (best < 0)
            {
                break;
            }

            starts.RemoveAt(best + 1);
            pairPriority.RemoveAt(best);
            if (best < pairPriority.Count)
            {
                pairPriority[best] = PairPriority(best);
            }

            if (best > 0)
            {
                pairPriority[best - 1] = PairPriority(best - 1);
            }
        }

        var parts = new List<string>(starts.Count - 1);
        for (int i = 0; i + 1 < starts.Count; i++)
        {
            parts.Add(token[starts[i]..starts[i + 1]]);
        }

        return parts;

        long PairPriority(int part) => priorityOf(token.AsSpan(starts[part], starts[part + 2] - starts[part])) ?? long.MaxValue;
    }

    /// <summary>
    /// The two tokens BPE merges to produce <paramref name="token"/> of priority <paramref name="priority"/>: the parts
    /// left by <see cref="Merge"/> run with only the tokens that merge earlier. Null when the token is a single symbol
    /// or the earlier tokens do not reduce it to exactly two parts (it is then unreachable by merging).
    /// </summary>
    /// <param name="token">The merged token.</param>
    /// <param name="priorityOf">Priority lookup.</param>
    /// <param name="priority">The token's own priority.</param>
    public static (string Left, string Right)? Parents(string token, TokenPriority priorityOf, long priority)
    {
        List<string> parts = Merge(token, priorityOf, priority);
        return parts.Count == 2 ? (parts[0], parts[1]) : null;
    }

    /// <summary>A <see cref="TokenPriority"/> over a dictionary, looked up without allocating.</summary>
    public static TokenPriority FromDictionary(Dictionary<string, long> priorities)
    {
        ArgumentNullException.ThrowIfNull(priorities);
        Dictionary<string, long>.AlternateLookup<ReadOnlySpan<char>> lookup = priorities.GetAlternateLookup<ReadOnlySpan<char>>();
        return token => lookup.TryGetValue(token, out long value) ? value : null;
    }
}
