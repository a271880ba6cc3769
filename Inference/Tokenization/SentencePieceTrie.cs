using System.Buffers.Binary;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>
/// A byte trie stored as a darts-clone double array: the format of the trie inside a SentencePiece
/// <c>precompiled_charsmap</c>, and the structure SentencePiece matches pieces with. Each 32-bit unit holds a label
/// (the byte that leads to it), a has-leaf flag and the XOR offset to its children; a key's value sits in the child
/// labelled 0 of its last node, as a unit with the top bit set. Lookups follow darts-clone's
/// <c>commonPrefixSearch</c> and <c>traverse</c> unit for unit, so a foreign array (ALBERT's charsmap) reads exactly
/// as SentencePiece reads it; <see cref="Build"/> writes arrays in the same format.
/// </summary>
internal sealed class DoubleArrayTrie
{
    private const uint LeafFlag = 1u << 31;
    private const uint HasLeafFlag = 1u << 8;
    private const uint ExtendedOffsetFlag = 1u << 9;
    private const int Root = 0;

    private readonly uint[] _units;

    private DoubleArrayTrie(uint[] units) => _units = units;

    /// <summary>Number of 32-bit units.</summary>
    public int UnitCount => _units.Length;

    /// <summary>Reads units stored little-endian, four bytes each, as SentencePiece and darts-clone write them.</summary>
    public static DoubleArrayTrie FromBytes(ReadOnlySpan<byte> bytes)
    {
        uint[] units = new uint[bytes.Length / 4];
        for (int i = 0; i < units.Length; i++)
        {
            units[i] = BinaryPrimitives.ReadUInt32LittleEndian(bytes.Slice(i * 4, 4));
        }

        return new DoubleArrayTrie(units);
    }

    /// <summary>The units little-endian, four bytes each.</summary>
    public byte[] ToBytes()
    {
        byte[] bytes = new byte[_units.Length * 4];
        for (int i = 0; i < _units.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(i * 4, 4), _units[i]);
        }

        return bytes;
    }

    /// <summary>
    /// The node reached from <paramref name="node"/> by <paramref name="label"/>, or -1 (darts-clone's
    /// <c>traverse</c> for one byte). The root is node 0.
    /// </summary>
    public int Next(int node, byte label)
    {
        uint[] units = _units;
        uint child = (uint)node ^ Offset(units[node]) ^ label;
        // darts-clone reads past its array only for malformed arrays (real ones are whole 256-unit blocks).
        return child < (uint)units.Length && Label(units[child]) == label ? (int)child : -1;
    }

    /// <summary>The value of the key ending at <paramref name="node"/>, or -1 when no key ends there.</summary>
    public int ValueAt(int node)
    {
        uint[] units = _units;
        uint unit = units[node];
        if ((unit & HasLeafFlag) == 0)
        {
            return -1;
        }

        uint leaf = (uint)node ^ Offset(unit);
        return leaf < (uint)units.Length ? (int)(units[leaf] & ~LeafFlag) : -1;
    }

    /// <summary>The value of exactly <paramref name="key"/>, or -1 (darts-clone's <c>exactMatchSearch</c>).</summary>
    public int ExactMatch(ReadOnlySpan<byte> key)
    {
        int node = Root;
        foreach (byte b in key)
        {
            node = Next(node, b);
            if (node < 0)
            {
                return -1;
            }
        }

        return ValueAt(node);
    }

    /// <summary>
    /// The longest key that is a prefix of <paramref name="text"/>: its length (0 when none) and value.
    /// </summary>
    public int LongestPrefix(ReadOnlySpan<byte> text, out int value)
    {
        value = -1;
        int length = 0;
        int node = Root;
        for (int i = 0; i < text.Length; i++)
        {
            node = Next(node, text[i]);
            if (node < 0)
            {
                break;
            }

            int v = ValueAt(node);
            if (v >= 0)
            {
                value = v;
                length = i + 1;
            }
        }

        return length;
    }

    /// <summary>Every key that is a prefix of <paramref name="text"/>, shortest first, as (length, value).</summary>
    public List<(int Length, int Value)> CommonPrefixSearch(ReadOnlySpan<byte> text)
    {
        var results = new List<(int, int)>();
        int node = Root;
        for (int i = 0; i < text.Length; i++)
        {
            node = Next(node, text[i]);
            if (node < 0)
            {
                break;
            }

            int v = ValueAt(node);
            if (v >= 0)
            {
                results.Add((i + 1, v));
            }
        }

        return results;
    }

    /// <summary>
    /// Builds a double array from keys and non-negative values. Keys are sorted bytewise first; as in darts-clone, a
    /// key given twice keeps the value listed first, and empty keys are skipped.
    /// </summary>
    /// <exception cref="ArgumentException">A key contains a zero byte, a value is negative, or the array outgrows the format.</exception>
    public static DoubleArrayTrie Build(IEnumerable<(byte[] Key, int Value)> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        var list = new List<(byte[] Key, int Value, int Order)>();
        foreach ((byte[] key, int value) in entries)
        {
            if (value < 0)
            {
                throw new ArgumentException($"Trie values must be non-negative; got {value}.", nameof(entries));
            }

            if (key.AsSpan().Contains((byte)0))
            {
                // Label 0 marks the leaf in this format, so keys cannot contain it.
                throw new ArgumentException("Trie keys must not contain a zero byte.", nameof(entries));
            }

            if (key.Length > 0)
            {
                list.Add((key, value, list.Count));
            }
        }

        list.Sort((a, b) =>
        {
            int c = a.Key.AsSpan().SequenceCompareTo(b.Key);
            return c != 0 ? c : a.Order.CompareTo(b.Order);
        });
        var keys = new List<(byte[] Key, int Value)>(list.Count);
        foreach (var entry in list)
        {
            if (keys.Count == 0 || !keys[^1].Key.AsSpan().SequenceEqual(entry.Key))
            {
                keys.Add((entry.Key, entry.Value));
            }
        }

        return new Builder(keys).Build();
    }

    private static uint Offset(uint unit) => (unit >> 10) << (int)((unit & ExtendedOffsetFlag) >> 6);

    private static uint Label(uint unit) => unit & (LeafFlag | 0xFF);

    /// <summary>
    /// Places nodes breadth first; each parent gets a block base no other parent uses, so the label check alone
    /// identifies children. Free slots are found through a "next free slot" forest with path compression, and the
    /// search starts at most <see cref="SearchWindow"/> slots below the top, leaving older holes behind as
    /// darts-clone does, so building stays near linear.
    /// </summary>
    private sealed class Builder(List<(byte[] Key, int Value)> keys)
    {
        private const int SearchWindow = 1 << 14;

        private uint[] _units = new uint[256];
        private int[] _nextFree = InitialFree(256);
        private readonly HashSet<int> _usedBases = [];
        private int _top = 1;

        public DoubleArrayTrie Build()
        {
            Reserve(Root);
            // Work items: (array position, depth, key range [lo, hi)) of nodes whose children are still to be placed.
            var queue = new Queue<(int Position, int Depth, int Lo, int Hi)>();
            queue.Enqueue((Root, 0, 0, keys.Count));
            var labels = new List<int>(256);
            var ranges = new List<(int Lo, int Hi)>(256);
            while (queue.Count > 0)
            {
                (int position, int depth, int lo, int hi) = queue.Dequeue();
                labels.Clear();
                ranges.Clear();
                int leafValue = -1;
                int i = lo;
                if (i < hi && keys[i].Key.Length == depth)
                {
                    // Sorted keys put the one ending here first; it becomes the leaf (label 0) child.
                    leafValue = keys[i].Value;
                    labels.Add(0);
                    ranges.Add((i, i + 1));
                    i++;
                }

                while (i < hi)
                {
                    byte label = keys[i].Key[depth];
                    int start = i;
                    while (i < hi && keys[i].Key[depth] == label)
                    {
                        i++;
                    }

                    labels.Add(label);
                    ranges.Add((start, i));
                }

                if (labels.Count == 0)
                {
                    continue;
                }

                int baseIndex = FindBase(position, labels);
                _usedBases.Add(baseIndex);
                uint offset = (uint)(position ^ baseIndex);
                uint unit = _units[position] & (LeafFlag | HasLeafFlag | 0xFF);
                unit |= offset < (1u << 21) ? offset << 10 : (offset << 2) | ExtendedOffsetFlag;
                if (leafValue >= 0)
                {
                    unit |= HasLeafFlag;
                }

                _units[position] = unit;
                for (int k = 0; k < labels.Count; k++)
                {
                    int child = baseIndex ^ labels[k];
                    Reserve(child);
                    if (labels[k] == 0)
                    {
                        _units[child] = (uint)leafValue | LeafFlag;
                    }
                    else
                    {
                        _units[child] = (uint)labels[k];
                        queue.Enqueue((child, depth + 1, ranges[k].Lo, ranges[k].Hi));
                    }
                }
            }

            // Whole 256-unit blocks, as darts-clone writes them, so every child slot a lookup can compute exists.
            int size = (_top + 255) / 256 * 256;
            Array.Resize(ref _units, size);
            return new DoubleArrayTrie(_units);
        }

        private int FindBase(int parent, List<int> labels)
        {
            for (int free = FindFree(Math.Max(1, _top - SearchWindow)); ; free = FindFree(free + 1))
            {
                int candidate = free ^ labels[0];
                if (candidate == Root || _usedBases.Contains(candidate) || !Encodable((uint)(parent ^ candidate)))
                {
                    continue;
                }

                EnsureCapacity((candidate | 0xFF) + 1);
                bool fits = true;
                for (int k = 1; k < labels.Count && fits; k++)
                {
                    int slot = candidate ^ labels[k];
                    fits = slot != Root && FindFree(slot) == slot;
                }

                if (fits)
                {
                    return candidate;
                }
            }
        }

        /// <summary>The first free slot at or after <paramref name="position"/> (growing the arrays as needed).</summary>
        private int FindFree(int position)
        {
            EnsureCapacity(position + 1);
            int root = position;
            while (_nextFree[root] != root)
            {
                root = _nextFree[root];
                EnsureCapacity(root + 1);
            }

            // Path compression: everything walked now points at the free slot.
            while (_nextFree[position] != root)
            {
                (position, _nextFree[position]) = (_nextFree[position], root);
            }

            return root;
        }

        private static bool Encodable(uint offset) =>
            offset < (1u << 21) || (offset < (1u << 29) && (offset & 0xFF) == 0);

        private void Reserve(int position)
        {
            EnsureCapacity(position + 2);
            _nextFree[position] = position + 1;
            _top = Math.Max(_top, position + 1);
        }

        private void EnsureCapacity(int size)
        {
            if (size <= _units.Length)
            {
                return;
            }

            if (size > (1 << 29))
            {
                throw new ArgumentException("Too many keys for a darts-clone double array.");
            }

            int old = _units.Length;
            int capacity = Math.Max(size, old * 2);
            Array.Resize(ref _units, capacity);
            Array.Resize(ref _nextFree, capacity);
            for (int i = old; i < capacity; i++)
            {
                _nextFree[i] = i;
            }
        }

        private static int[] InitialFree(int size)
        {
            int[] next = new int[size];
            for (int i = 0; i < size; i++)
            {
                next[i] = i;
            }

            return next;
        }
    }
}
