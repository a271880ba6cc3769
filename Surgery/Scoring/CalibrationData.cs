using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// Token sequences that scoring runs through the model: <see cref="SequenceCount"/> windows of
/// <see cref="SequenceLength"/> tokens each, stored row-major.
/// </summary>
public sealed class CalibrationData
{
    private readonly long[] _tokens;

    /// <summary>Creates calibration data from row-major token ids, [<paramref name="sequenceCount"/>, <paramref name="sequenceLength"/>].</summary>
    /// <exception cref="ArgumentException">The counts are not positive, the token count does not match or an id is negative.</exception>
    public CalibrationData(IReadOnlyList<long> tokens, int sequenceCount, int sequenceLength)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (sequenceCount <= 0 || sequenceLength <= 0)
        {
            throw new ArgumentException($"Calibration data needs a positive sequence count and length, got {sequenceCount} x {sequenceLength}.", nameof(sequenceCount));
        }

        if (tokens.Count != (long)sequenceCount * sequenceLength)
        {
            throw new ArgumentException($"Calibration data of {sequenceCount} x {sequenceLength} needs {(long)sequenceCount * sequenceLength} tokens, got {tokens.Count}.", nameof(tokens));
        }

        _tokens = [.. tokens];
        int negative = Array.FindIndex(_tokens, t => t < 0);
        if (negative >= 0)
        {
            throw new ArgumentException($"Calibration token {negative} is negative ({_tokens[negative]}).", nameof(tokens));
        }

        SequenceCount = sequenceCount;
        SequenceLength = sequenceLength;
    }

    /// <summary>Number of sequences (N).</summary>
    public int SequenceCount { get; }

    /// <summary>Tokens per sequence (T).</summary>
    public int SequenceLength { get; }

    /// <summary>All token ids, row-major [N, T].</summary>
    public IReadOnlyList<long> Tokens => _tokens;

    /// <summary>Largest token id, to check against a vocabulary.</summary>
    public long MaxTokenId => _tokens.Max();

    /// <summary>
    /// Cuts <paramref name="sequenceCount"/> windows of <paramref name="sequenceLength"/> tokens out of a token stream at
    /// start positions drawn uniformly with <paramref name="seed"/> (the same seed gives the same windows).
    /// </summary>
    /// <exception cref="ArgumentException">The stream is shorter than one window or the counts are not positive.</exception>
    public static CalibrationData FromTokenStream(IReadOnlyList<int> tokens, int sequenceCount, int sequenceLength, int seed)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (sequenceCount <= 0 || sequenceLength <= 0)
        {
            throw new ArgumentException($"Calibration data needs a positive sequence count and length, got {sequenceCount} x {sequenceLength}.", nameof(sequenceCount));
        }

        if (tokens.Count < sequenceLength)
        {
            throw new ArgumentException($"The token stream has {tokens.Count} tokens, fewer than one calibration window of {sequenceLength}.", nameof(tokens));
        }

        var random = new Random(seed);
        var windows = new long[(long)sequenceCount * sequenceLength];
        for (int s = 0; s < sequenceCount; s++)
        {
            int start = random.Next(0, tokens.Count - sequenceLength + 1);
            for (int t = 0; t < sequenceLength; t++)
            {
                windows[((long)s * sequenceLength) + t] = tokens[start + t];
            }
        }

        return new CalibrationData(windows, sequenceCount, sequenceLength);
    }

    /// <summary>
    /// Cuts windows out of a stream of 64-bit token ids (what <c>TokenFile.Read</c> returns), as
    /// <see cref="FromTokenStream(IReadOnlyList{int}, int, int, int)"/> does.
    /// </summary>
    /// <exception cref="ArgumentException">An id is negative or does not fit in a 32-bit token id (the message gives its position), the stream is shorter than one window, or the counts are not positive.</exception>
    public static CalibrationData FromTokenStream(IReadOnlyList<long> tokens, int sequenceCount, int sequenceLength, int seed)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        // Every id is checked, not only the sampled windows, so a corrupt token file fails the same way for every seed.
        for (int i = 0; i < tokens.Count; i++)
        {
            if (tokens[i] is < 0 or > int.MaxValue)
            {
                throw new ArgumentException($"Token {i} of the calibration stream has id {tokens[i]}, which is not a valid token id (0 to {int.MaxValue}); the token file is corrupt or was written for another vocabulary.", nameof(tokens));
            }
        }

        return FromTokenStream(new Int32View(tokens), sequenceCount, sequenceLength, seed);
    }

    /// <summary>Sequences [<paramref name="start"/>, start + count) as an int64 tensor [count, T] on <paramref name="device"/>.</summary>
    public Tensor Batch(int start, int count, Device device)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + count, SequenceCount);
        long[] slice = _tokens.AsSpan(start * SequenceLength, count * SequenceLength).ToArray();
        return torch.tensor(slice, [count, SequenceLength], device: device); // [count, T]
    }

    /// <summary>Batch start/count pairs covering all sequences with batches of at most <paramref name="batchSize"/>.</summary>
    public IEnumerable<(int Start, int Count)> Batches(int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        for (int start = 0; start < SequenceCount; start += batchSize)
        {
            yield return (start, Math.Min(batchSize, SequenceCount - start));
        }
    }

    /// <summary>The checked 64-bit ids read as 32-bit ones, without copying the stream.</summary>
    private sealed class Int32View(IReadOnlyList<long> tokens) : IReadOnlyList<int>
    {
        public int Count => tokens.Count;

        public int this[int index] => (int)tokens[index];

        public IEnumerator<int> GetEnumerator() => tokens.Select(t => (int)t).GetEnumerator();

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }
}
