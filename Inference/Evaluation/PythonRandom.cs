using System.Numerics;

namespace ModelSurgery.Inference.Evaluation;

/// <summary>
/// CPython's <c>random.Random</c> (Mersenne Twister MT19937), reproduced draw for draw so that choices made by Python
/// tools seeded with an integer (lm-evaluation-harness's few-shot sampler) can be repeated here: <c>seed(int)</c>,
/// <c>getrandbits</c>, <c>_randbelow</c>, <c>random()</c> and <c>sample</c> follow Modules/_randommodule.c and
/// Lib/random.py of CPython 3.11.
/// </summary>
internal sealed class PythonRandom
{
    private const int N = 624;
    private const int M = 397;
    private const uint MatrixA = 0x9908b0dfU;
    private const uint UpperMask = 0x80000000U;
    private const uint LowerMask = 0x7fffffffU;

    private readonly uint[] _mt = new uint[N];
    private int _index;

    /// <summary>Seeds like <c>random.Random(seed)</c> with an int seed (its absolute value, all of its bits).</summary>
    /// <param name="seed">The seed.</param>
    public PythonRandom(BigInteger seed)
    {
        // random_seed: the absolute value as 32-bit words, least significant first; zero is one zero word.
        BigInteger rest = BigInteger.Abs(seed);
        var key = new List<uint>();
        do
        {
            key.Add((uint)(rest & uint.MaxValue));
            rest >>= 32;
        }
        while (rest > 0);

        InitByArray(key);
    }

    /// <summary><c>getrandbits(k)</c> for k up to 32: the top k bits of one output.</summary>
    /// <param name="k">Bits, 0 to 32.</param>
    /// <returns>A value below 2^k.</returns>
    public uint GetRandBits32(int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(k, 32);
        return k == 0 ? 0 : NextUInt32() >> (32 - k);
    }

    /// <summary>
    /// <c>getrandbits(k)</c> for any k: one 32-bit output per word, least significant word first, the last word keeping
    /// the top bits of its output.
    /// </summary>
    /// <param name="k">Bits, not negative.</param>
    /// <returns>A value below 2^k.</returns>
    public BigInteger GetRandBits(int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (k <= 32)
        {
            return GetRandBits32(k);
        }

        BigInteger result = BigInteger.Zero;
        int shift = 0;
        for (int left = k; left > 0; left -= 32, shift += 32)
        {
            uint word = NextUInt32();
            if (left < 32)
            {
                word >>= 32 - left; // drop the least significant bits
            }

            result |= (BigInteger)word << shift;
        }

        return result;
    }

    /// <summary><c>random()</c>: a double in [0, 1) with 53 random bits from two outputs.</summary>
    /// <returns>The double.</returns>
    public double NextDouble()
    {
        uint a = NextUInt32() >> 5;
        uint b = NextUInt32() >> 6;
        return ((a * 67108864.0) + b) * (1.0 / 9007199254740992.0);
    }

    /// <summary><c>_randbelow(n)</c>: k = n.bit_length() bits, drawn again while the value is not below n.</summary>
    /// <param name="n">Exclusive bound, positive.</param>
    /// <returns>A value in [0, n).</returns>
    public int RandBelow(int n)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(n);
        int k = 32 - BitOperations.LeadingZeroCount((uint)n);
        uint r = GetRandBits32(k);
        while (r >= (uint)n)
        {
            r = GetRandBits32(k);
        }

        return (int)r;
    }

    /// <summary>
    /// <c>sample(population, k)</c>: k distinct items in selection order. Small populations are drawn from a shrinking
    /// pool, large ones by redrawing indices already taken, with CPython's threshold between the two.
    /// </summary>
    /// <typeparam name="T">Item type.</typeparam>
    /// <param name="population">The items.</param>
    /// <param name="k">How many to draw, 0 to the population size.</param>
    /// <returns>The drawn items.</returns>
    public T[] Sample<T>(IReadOnlyList<T> population, int k)
    {
        ArgumentNullException.ThrowIfNull(population);
        int n = population.Count;
        if (k < 0 || k > n)
        {
            throw new ArgumentOutOfRangeException(nameof(k), $"Sample size {k} must be between 0 and the population size {n}.");
        }

        var result = new T[k];
        long setSize = 21; // size of a small set minus size of an empty list, as CPython estimates it
        if (k > 5)
        {
            // 4 ** ceil(log(3k, 4)); 3k is never a power of 4, so this is the smallest power of 4 above 3k, found exactly.
            long power = 1;
            while (power <= 3L * k)
            {
                power *= 4;
            }

            setSize += power;
        }

        if (n <= setSize)
        {
            T[] pool = [.. population];
            for (int i = 0; i < k; i++)
            {
                int j = RandBelow(n - i);
                result[i] = pool[j];
                pool[j] = pool[n - i - 1]; // move a non-selected item into the vacancy
            }
        }
        else
        {
            var selected = new HashSet<int>();
            for (int i = 0; i < k; i++)
            {
                int j = RandBelow(n);
                while (!selected.Add(j))
                {
                    j = RandBelow(n);
                }

                result[i] = population[j];
            }
        }

        return result;
    }

    /// <summary>One tempered 32-bit output (genrand_uint32).</summary>
    /// <returns>The output.</returns>
    public uint NextUInt32()
    {
        if (_index >= N)
        {
            Twist();
        }

        uint y = _mt[_index++];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680U;
        y ^= (y << 15) & 0xefc60000U;
        y ^= y >> 18;
        return y;
    }

    private void Twist()
    {
        int kk;
        uint y;
        for (kk = 0; kk < N - M; kk++)
        {
            y = (_mt[kk] & UpperMask) | (_mt[kk + 1] & LowerMask);
            _mt[kk] = _mt[kk + M] ^ (y >> 1) ^ ((y & 1) * MatrixA);
        }

        for (; kk < N - 1; kk++)
        {
            y = (_mt[kk] & UpperMask) | (_mt[kk + 1] & LowerMask);
            _mt[kk] = _mt[kk + (M - N)] ^ (y >> 1) ^ ((y & 1) * MatrixA);
        }

        y = (_mt[N - 1] & UpperMask) | (_mt[0] & LowerMask);
        _mt[N - 1] = _mt[M - 1] ^ (y >> 1) ^ ((y & 1) * MatrixA);
        _index = 0;
    }

    private void InitGenRand(uint s)
    {
        _mt[0] = s;
        for (int i = 1; i < N; i++)
        {
            _mt[i] = (1812433253U * (_mt[i - 1] ^ (_mt[i - 1] >> 30))) + (uint)i;
        }

        _index = N;
    }

    private void InitByArray(List<uint> key)
    {
        InitGenRand(19650218U);
        int i = 1;
        int j = 0;
        for (int k = Math.Max(N, key.Count); k > 0; k--)
        {
            _mt[i] = (_mt[i] ^ ((_mt[i - 1] ^ (_mt[i - 1] >> 30)) * 1664525U)) + key[j] + (uint)j; // non-linear
            i++;
            j++;
            if (i >= N)
            {
                _mt[0] = _mt[N - 1];
                i = 1;
            }

            if (j >= key.Count)
            {
                j = 0;
            }
        }

        for (int k = N - 1; k > 0; k--)
        {
            _mt[i] = (_mt[i] ^ ((_mt[i - 1] ^ (_mt[i - 1] >> 30)) * 1566083941U)) - (uint)i; // non-linear
            i++;
            if (i >= N)
            {
                _mt[0] = _mt[N - 1];
                i = 1;
            }
        }

        _mt[0] = 0x80000000U; // MSB is 1, assuring a non-zero initial array
        _index = N;
    }
}
