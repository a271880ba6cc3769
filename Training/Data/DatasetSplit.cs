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
}
