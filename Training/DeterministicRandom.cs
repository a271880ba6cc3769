namespace ModelSurgery.Training;

/// <summary>
/// A small seeded random generator (SplitMix64) whose whole state is one 64-bit number, so shuffles and draws are
/// identical on every runtime and can be saved and restored exactly for resumable training.
/// </summary>
public sealed class DeterministicRandom
{
    /// <summary>Creates a generator from a seed.</summary>
    /// <param name="seed">Any 64-bit seed; equal seeds give equal sequences.</param>
    public DeterministicRandom(ulong seed) => State = seed;

    /// <summary>The full generator state; assign a saved value to continue a sequence exactly.</summary>
    public ulong State { get; set; }

    /// <summary>Derives a seed for a sub-stream (e.g. one epoch) from a base seed, so streams do not overlap.</summary>
    /// <param name="seed">Base seed.</param>
    /// <param name="stream">Sub-stream number.</param>
    /// <returns>A well-mixed seed.</returns>
    public static ulong Derive(ulong seed, ulong stream) => Mix(seed ^ Mix(stream + 0x9E3779B97F4A7C15UL));

    /// <summary>Next raw 64-bit value.</summary>
    /// <returns>A uniformly distributed 64-bit value.</returns>
    public ulong NextUInt64()
    {
        State += 0x9E3779B97F4A7C15UL;
        return Mix(State);
    }

    /// <summary>Uniform double in [0, 1) with 53 random bits.</summary>
    /// <returns>The draw.</returns>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [0, maxExclusive).</summary>
    /// <param name="maxExclusive">Upper bound, positive.</param>
    /// <returns>The draw.</returns>
    public long NextInt64(long maxExclusive)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxExclusive);
        // Rejection sampling keeps the draw exactly uniform.
        ulong bound = (ulong)maxExclusive;
        ulong limit = ulong.MaxValue - (ulong.MaxValue % bound);
        ulong value;
        do
        {
            value = NextUInt64();
        }
        while (value >= limit);
        return (long)(value % bound);
    }

    /// <summary>Shuffles a span in place (Fisher-Yates).</summary>
    /// <typeparam name="T">Element type.</typeparam>
    /// <param name="items">The items to shuffle.</param>
    public void Shuffle<T>(Span<T> items)
    {
        for (int i = items.Length - 1; i > 0; i--)
        {
            int j = (int)NextInt64(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
