namespace ModelSurgery.Training.Data;

/// <summary>
/// Training windows: window <c>w</c> covers tokens [w * T, w * T + T + 1) of a token file, i.e. T inputs and the T
/// next-token targets. Consecutive windows share one boundary token so every token is predicted once.
/// </summary>
public static class TokenWindows
{
    /// <summary>Number of whole windows of <paramref name="seqLen"/> inputs in <paramref name="tokenCount"/> tokens.</summary>
    /// <param name="tokenCount">Tokens in the file.</param>
    /// <param name="seqLen">Inputs per window (T).</param>
    /// <returns>The window count.</returns>
    public static long Count(long tokenCount, int seqLen)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(seqLen);
        return tokenCount <= 1 ? 0 : (tokenCount - 1) / seqLen;
    }

    /// <summary>First token of window <paramref name="window"/>.</summary>
    /// <param name="window">Window index.</param>
    /// <param name="seqLen">Inputs per window (T).</param>
    /// <returns>The token offset.</returns>
    public static long Start(long window, int seqLen) => window * seqLen;
}

/// <summary>A deterministic split of window indices into training and validation sets.</summary>
/// <param name="Train">Training window indices, ascending.</param>
/// <param name="Validation">Validation window indices, ascending.</param>
public sealed record DatasetSplit(IReadOnlyList<long> Train, IReadOnlyList<long> Validation)
{
    /// <summary>
    /// Splits windows (chunks of T+1 tokens) at random but reproducibly: the same count, fraction and seed always give the
    /// same split. At least one window goes to validation when the fraction is positive and there are two or more windows.
    /// </summary>
    /// <param name="windowCount">Number of windows (see <see cref="TokenWindows.Count"/>).</param>
    /// <param name="validationFraction">Share of windows held out, in [0, 1).</param>
    /// <param name="seed">Split seed.</param>
    /// <returns>The split.</returns>
    public static DatasetSplit ByChunk(long windowCount, double validationFraction, ulong seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(windowCount);
        if (!(validationFraction >= 0 && validationFraction < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(validationFraction), $"--val-fraction must be in [0, 1); got {validationFraction}.");
        }

        long[] order = new long[windowCount];
        for (long i = 0; i < windowCount; i++)
        {
            order[i] = i;
        }

        new DeterministicRandom(DeterministicRandom.Derive(seed, 0x5B117)).Shuffle(order.AsSpan());
        long validation = (long)Math.Round(validationFraction * windowCount);
        if (validationFraction > 0 && validation == 0 && windowCount > 1)
        {
            validation = 1;
        }

        long[] val = order[..(int)validation];
        long[] train = order[(int)validation..];
        Array.Sort(val);
        Array.Sort(train);
        return new DatasetSplit(train, val);
    }

    /// <summary>
    /// Splits windows at a token: training windows end (with their last target) before <paramref name="validationStart"/>,
    /// validation windows start at or after it, and a window across it is dropped, so that no token of a held-out part at
    /// the end of the file is trained on.
    /// </summary>
    /// <param name="tokenCount">Tokens in the file.</param>
    /// <param name="validationStart">First token of the held-out part.</param>
    /// <param name="seqLen">Inputs per window (T).</param>
    /// <returns>The split.</returns>
    public static DatasetSplit AtToken(long tokenCount, long validationStart, int seqLen)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokenCount);
        ArgumentOutOfRangeException.ThrowIfNegative(validationStart);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(validationStart, tokenCount);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(seqLen);
        var train = new List<long>();
        var validation = new List<long>();
        long windows = TokenWindows.Count(tokenCount, seqLen);
        for (long w = 0; w < windows; w++)
        {
            long start = TokenWindows.Start(w, seqLen);
            if (start + seqLen + 1 <= validationStart)
            {
                train.Add(w);
            }
            else if (start >= validationStart)
            {
                validation.Add(w);
            }
        }

        return new DatasetSplit(train, validation);
    }

    /// <summary>
    /// The split of a token file: at the description's <see cref="TokenFileInfo.ValidationStartToken"/> when it records
    /// one, else by chunk with the description's fraction and seed. A fraction given here overrides the description's split.
    /// </summary>
    /// <param name="tokenFilePath">The token file (named in messages).</param>
    /// <param name="info">Its description, or null when it has none.</param>
    /// <param name="tokenCount">Tokens in the file.</param>
    /// <param name="seqLen">Inputs per window (T).</param>
    /// <param name="validationFraction">Share of windows held out; null takes the description's split.</param>
    /// <param name="splitSeed">Seed of a split by chunk; null takes the description's, else <see cref="TokenFileInfo.DefaultSplitSeed"/>.</param>
    /// <returns>The split.</returns>
    /// <exception cref="ArgumentException">The recorded validation start is beyond the file, or leaves no training window.</exception>
    public static DatasetSplit ForTokenFile(string tokenFilePath, TokenFileInfo? info, long tokenCount, int seqLen, double? validationFraction = null, ulong? splitSeed = null)
    {
        if (validationFraction is null && info?.ValidationStartToken is long start)
        {
            if (start > tokenCount)
            {
                throw new ArgumentException($"Token file '{tokenFilePath}' has {tokenCount} tokens but its description's val_start_token is {start}; the description belongs to another file.", nameof(info));
            }

            DatasetSplit split = AtToken(tokenCount, start, seqLen);
            if (split.Train.Count == 0)
            {
                throw new ArgumentException($"Token file '{tokenFilePath}': val_start_token {start} leaves no training window of {seqLen} + 1 tokens before it.", nameof(info));
            }

            return split;
        }

        return ByChunk(TokenWindows.Count(tokenCount, seqLen), validationFraction ?? info?.ValidationFraction ?? 0, splitSeed ?? info?.SplitSeed ?? TokenFileInfo.DefaultSplitSeed);
    }
}
