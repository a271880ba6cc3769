namespace ModelSurgery.Inference.Tokenization;

/// <summary>
/// The greedy BPE merge loop, used to recover the two parents a merged token was built from when a format stores
/// merges only implicitly (tiktoken ranks, SentencePiece BPE scores).
/// </summary>
public static class BpeMerging
{
    /// <summary>
    /// Repeatedly merges the adjacent pair whose concatenation has the lowest priority below
    /// <paramref name="priorityLimit"/>, and returns the parts left when no pair qualifies.
    /// </summary>
    /// <param name="symbols">The initial symbols (bytes or characters as strings).</param>
    /// <param name="priorityOf">The merge priority of a token (lower merges first), or null when it is not in the vocabulary.</param>
    /// <param name="priorityLimit">Only tokens with a priority strictly below this take part.</param>
    public static List<string> Merge(IReadOnlyList<string> symbols, Func<string, long?> priorityOf, long priorityLimit)
    {
        ArgumentNullException.ThrowIfNull(symbols);
        ArgumentNullException.ThrowIfNull(priorityOf);
        var parts = new List<string>(symbols);
        while (parts.Count > 1)
        {
            int best = -1;
            long bestPriority = priorityLimit;
            for (int i = 0; i + 1 < parts.Count; i++)
            {
                if (priorityOf(parts[i] + parts[i + 1]) is long p && p < bestPriority)
                {
                    best = i;
                    bestPriority = p;
                }
            }

            if (best < 0)
            {
                break;
            }

            parts[best] += parts[best + 1];
            parts.RemoveAt(best + 1);
        }

        return parts;
    }

    /// <summary>
    /// The two tokens BPE merges to produce a token of priority <paramref name="priority"/>: the parts left by
    /// <see cref="Merge"/> run with only the tokens that merge earlier. Null when the token is a single symbol or the
    /// earlier tokens do not reduce it to exactly two parts (it is then unreachable by merging).
    /// </summary>
    /// <param name="symbols">The token split into initial symbols.</param>
    /// <param name="priorityOf">The merge priority of a token (lower merges first), or null when it is not in the vocabulary.</param>
    /// <param name="priority">The token's own priority.</param>
    public static (string Left, string Right)? Parents(IReadOnlyList<string> symbols, Func<string, long?> priorityOf, long priority)
    {
        ArgumentNullException.ThrowIfNull(symbols);
        if (symbols.Count < 2)
        {
            return null;
        }

        List<string> parts = Merge(symbols, priorityOf, priority);
        return parts.Count == 2 ? (parts[0], parts[1]) : null;
    }
}
