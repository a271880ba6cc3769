using System.Text;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>Splits normalized text into pieces (SentencePiece's ModelInterface::Encode for one model type).</summary>
internal abstract class SentencePieceEncoder
{
    protected SentencePieceEncoder(SentencePieceVocabulary vocabulary) => Vocabulary = vocabulary;

    protected SentencePieceVocabulary Vocabulary { get; }

    /// <summary>The pieces of <paramref name="normalized"/>, in order, covering it; ids may be the unknown id.</summary>
    public abstract void Encode(ReadOnlySpan<byte> normalized, SentencePieceScratch scratch, List<SentencePieceSegment> output);

    /// <summary>
    /// VerifyOutputsEquivalent for the self-test: the pieces must be the same, except that Unigram accepts another
    /// segmentation of the same score (within 1e-7).
    /// </summary>
    public virtual bool Equivalent(string expected, string actual) => expected == actual;

    public static SentencePieceEncoder Create(SentencePieceModel model, SentencePieceVocabulary vocabulary) => model.ModelType switch
    {
        SentencePieceModelType.Unigram => new SentencePieceUnigramEncoder(vocabulary),
        SentencePieceModelType.Bpe => new SentencePieceBpeEncoder(vocabulary),
        SentencePieceModelType.Word => new SentencePieceWordEncoder(vocabulary),
        SentencePieceModelType.Character => new SentencePieceCharacterEncoder(vocabulary),
        _ => throw new InvalidDataException($"{model.Source}: trainer_spec.model_type {(int)model.ModelType} is not a SentencePiece model type (1 unigram, 2 BPE, 3 word, 4 char)."),
    };
}

/// <summary>Per-thread scratch arrays, so concurrent Encode calls share nothing and a single thread allocates little.</summary>
internal sealed class SentencePieceScratch
{
    [ThreadStatic]
    private static SentencePieceScratch? t_current;

    public ByteBuffer Input = new(256);
    public ByteBuffer Normalized = new(256);
    public readonly List<SentencePieceSegment> Segments = new(64);
    public int[] Ints1 = new int[64], Ints2 = new int[64], Ints3 = new int[64], Ints4 = new int[64], Ints5 = new int[64];
    public float[] Floats = new float[64];
    public bool[] Flags = new bool[64];
    private readonly BpeAgenda _agenda = new(64);

    /// <summary>Inputs above this many bytes leave scratch arrays a thread should not keep.</summary>
    private const int KeepLimit = 1 << 20;

    /// <summary>The calling thread's scratch; Encode never re-enters itself, so one per thread is enough.</summary>
    public static SentencePieceScratch Current => t_current ??= new SentencePieceScratch();

    /// <summary>Drops the calling thread's scratch after a large input, so one long document does not pin its buffers.</summary>
    public static void ReleaseIfLarge(int inputBytes)
    {
        if (inputBytes > KeepLimit)
        {
            t_current = null;
        }
    }

    /// <summary>The BPE agenda, emptied.</summary>
    public BpeAgenda ResetAgenda()
    {
        _agenda.Clear();
        return _agenda;
    }

    public void EnsureCapacity(int count)
    {
        if (Ints1.Length >= count)
        {
            return;
        }

        int size = Math.Max(count, Ints1.Length * 2);
        Ints1 = new int[size];
        Ints2 = new int[size];
        Ints3 = new int[size];
        Ints4 = new int[size];
        Ints5 = new int[size];
        Floats = new float[size];
        Flags = new bool[size];
    }
}

/// <summary>
/// bpe_model.cc: start from characters (user-defined symbols whole and frozen), repeatedly merge the adjacent pair
/// whose concatenation is a piece with the highest score, the leftmost pair on equal scores; merged pieces of type
/// UNUSED are split back into the pair they were made from.
/// </summary>
internal sealed class SentencePieceBpeEncoder : SentencePieceEncoder
{
    private readonly bool _hasUnused;
    private readonly DoubleArrayTrie? _trie;
    private readonly bool _splitBeforeSpaces;

    /// <summary>Whether this vocabulary lets the text be merged in independent stretches.</summary>
    internal bool SplitsIntoStretches => _splitBeforeSpaces;

    /// <param name="vocabulary">The pieces.</param>
    /// <param name="allowStretches">Whether the text may be cut into independent stretches when that is exact (tests compare both ways).</param>
    public SentencePieceBpeEncoder(SentencePieceVocabulary vocabulary, bool allowStretches = true)
        : base(vocabulary)
    {
        _hasUnused = vocabulary.Types.Contains(SentencePieceType.Unused);
        _trie = vocabulary.NormalTrie;
        // SentencePiece runs one agenda over the whole text. Where no piece holds a U+2581 right after another
        // character, no merge can join the symbols on the two sides of a position where U+2581 follows another
        // character, so each stretch between such positions merges exactly as it would inside the whole text, and
        // smaller agendas are much faster. UNUSED pieces rule this out: SentencePiece splits them back by the pair
        // last proposed anywhere in the text, which ties the stretches together.
        string space = Encoding.UTF8.GetString(SentencePieceUtf8.SpaceSymbol);
        _splitBeforeSpaces = allowStretches && !_hasUnused && !vocabulary.Normal.Any(p =>
        {
            string piece = Encoding.UTF8.GetString(p.Key);
            for (int i = piece.IndexOf(space, 1, StringComparison.Ordinal); i > 0; i = piece.IndexOf(space, i + 1, StringComparison.Ordinal))
            {
                if (!piece.AsSpan(0, i).EndsWith(space, StringComparison.Ordinal))
                {
                    return true;
                }
            }

            return false;
        });
    }

    public override void Encode(ReadOnlySpan<byte> normalized, SentencePieceScratch scratch, List<SentencePieceSegment> output)
    {
        output.Clear();
        if (normalized.IsEmpty)
        {
            return;
        }

        scratch.EnsureCapacity(normalized.Length + 1);
        var state = new State(scratch);
        SentencePiecePrefixMatcher matcher = Vocabulary.UserDefinedMatcher;
        int count = 0;
        for (int position = 0; position < normalized.Length; count++)
        {
            int size = matcher.IsEmpty ? SentencePieceUtf8.CharLength(normalized[position..]) : matcher.PrefixMatch(normalized[position..], out state.Freeze[count]);
            state.Start[count] = position;
            state.Length[count] = size;
            state.Prev[count] = count - 1;
            state.Node[count] = _trie is null ? -1 : Walk(0, normalized.Slice(position, size));
            position += size;
            state.Next[count] = position == normalized.Length ? -1 : count + 1;
        }

        if (matcher.IsEmpty)
        {
            Array.Clear(state.Freeze, 0, count);
        }

        int first = 0;
        for (int i = 1; i < count; i++)
        {
            if (_splitBeforeSpaces && normalized[state.Start[i]..].StartsWith(SentencePieceUtf8.SpaceSymbol)
                && !normalized[..state.Start[i]].EndsWith(SentencePieceUtf8.SpaceSymbol))
            {
                state.Next[i - 1] = -1;
                state.Prev[i] = -1;
                EncodeStretch(normalized, ref state, first, i, output);
                first = i;
            }
        }

        EncodeStretch(normalized, ref state, first, count, output);
    }

    /// <summary>Merges symbols <paramref name="first"/> .. <paramref name="end"/> - 1 (linked among themselves only) and emits their pieces.</summary>
    private void EncodeStretch(ReadOnlySpan<byte> normalized, ref State state, int first, int end, List<SentencePieceSegment> output)
    {
        state.Agenda.Clear();
        for (int i = first + 1; i < end; i++)
        {
            MaybeAddPair(normalized, ref state, i - 1, i);
        }

        int[] length = state.Length, next = state.Next, prev = state.Prev;
        while (state.Agenda.Count > 0)
        {
            BpeCandidate top = state.Agenda.Pop();
            int left = top.Left, right = top.Right;
            // Stale: one side was merged away or grew since the pair was proposed.
            if (length[left] == 0 || length[right] == 0 || length[left] + length[right] != top.Size)
            {
                continue;
            }

            length[left] += length[right];
            state.Node[left] = top.Node;
            next[left] = next[right];
            if (next[right] >= 0)
            {
                prev[next[right]] = left;
            }

            length[right] = 0;
            MaybeAddPair(normalized, ref state, prev[left], left);
            MaybeAddPair(normalized, ref state, left, next[left]);
        }

        for (int index = first; index != -1; index = next[index])
        {
            Resegment(normalized, state.Start[index], length[index], state.ReverseMerges, output);
        }
    }

    /// <summary>MaybeAddNewSymbolPair: propose merging two adjacent symbols when their concatenation is a piece.</summary>
    private void MaybeAddPair(ReadOnlySpan<byte> text, ref State state, int left, int right)
    {
        if (left == -1 || right == -1 || state.Freeze[left] || state.Freeze[right])
        {
            return;
        }

        int size = state.Length[left] + state.Length[right];
        int node = -1, id;
        if (_trie is not null)
        {
            // Continue the walk where the left symbol's own walk ended instead of starting from the root.
            node = state.Node[left] < 0 ? -1 : Walk(state.Node[left], text.Slice(state.Start[right], state.Length[right]));
            id = node < 0 ? -1 : _trie.ValueAt(node);
        }
        else
        {
            id = Vocabulary.FindNormal(text.Slice(state.Start[left], size));
        }

        if (id < 0)
        {
            return;
        }

        state.Agenda.Push(new BpeCandidate(Vocabulary.Scores[id], left, right, size, node));
        if (_hasUnused && Vocabulary.Types[id] == SentencePieceType.Unused)
        {
            // rev_merge: the UNUSED piece -> byte length of its left part, from the last time such a pair was proposed.
            (state.ReverseMerges ??= new Dictionary<string, int>(StringComparer.Ordinal))[Encoding.UTF8.GetString(text.Slice(state.Start[left], size))] = state.Length[left];
        }
    }

    private int Walk(int node, ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes)
        {
            node = _trie!.Next(node, b);
            if (node < 0)
            {
                return -1;
            }
        }

        return node;
    }

    private void Resegment(ReadOnlySpan<byte> text, int start, int length, Dictionary<string, int>? reverseMerges, List<SentencePieceSegment> output)
    {
        ReadOnlySpan<byte> piece = text.Slice(start, length);
        int id = Vocabulary.PieceToId(piece);
        if (Vocabulary.Types[id] != SentencePieceType.Unused || reverseMerges is null
            || !reverseMerges.TryGetValue(Encoding.UTF8.GetString(piece), out int leftLength))
        {
            output.Add(new SentencePieceSegment(start, length, id));
            return;
        }

        Resegment(text, start, leftLength, reverseMerges, output);
        Resegment(text, start + leftLength, length - leftLength, reverseMerges, output);
    }

    /// <summary>The symbols (a doubly linked list over the scratch arrays) and the merge agenda of one Encode call.</summary>
    private struct State(SentencePieceScratch scratch)
    {
        public readonly int[] Start = scratch.Ints1, Length = scratch.Ints2, Prev = scratch.Ints3, Next = scratch.Ints4, Node = scratch.Ints5;
        public readonly bool[] Freeze = scratch.Flags;
        public readonly BpeAgenda Agenda = scratch.ResetAgenda();
        public Dictionary<string, int>? ReverseMerges;
    }
}

/// <summary>
/// A proposed merge: the pair (left, right) whose concatenation, <see cref="Size"/> bytes long, is a piece with
/// <see cref="Score"/>; <see cref="Node"/> is the piece's trie node (-1 when lookups go through the vocabulary).
/// </summary>
internal readonly record struct BpeCandidate(float Score, int Left, int Right, int Size, int Node);

/// <summary>
/// The merge agenda: a binary max-heap ordered by score, then by the smaller left index, which is the order of
/// SentencePiece's SymbolPairComparator (equal scores merge leftmost first).
/// </summary>
internal sealed class BpeAgenda(int capacity)
{
    private BpeCandidate[] _items = new BpeCandidate[Math.Max(capacity, 4)];

    public int Count { get; private set; }

    public void Clear() => Count = 0;

    public void Push(BpeCandidate item)
    {
        if (Count == _items.Length)
        {
            Array.Resize(ref _items, _items.Length * 2);
        }

        int i = Count++;
        while (i > 0)
        {
            int parent = (i - 1) >> 1;
            if (!Before(item, _items[parent]))
            {
                break;
            }

            _items[i] = _items[parent];
            i = parent;
        }

        _items[i] = item;
    }

    public BpeCandidate Pop()
    {
        BpeCandidate top = _items[0];
        BpeCandidate last = _items[--Count];
        int i = 0;
        while (true)
        {
            int child = (2 * i) + 1;
            if (child >= Count)
            {
                break;
            }

            if (child + 1 < Count && Before(_items[child + 1], _items[child]))
            {
                child++;
            }

            if (!Before(_items[child], last))
            {
                break;
            }

            _items[i] = _items[child];
            i = child;
        }

        if (Count > 0)
        {
            _items[i] = last;
        }

        return top;
    }

    /// <summary>Whether <paramref name="a"/> is merged before <paramref name="b"/>.</summary>
    internal static bool Before(BpeCandidate a, BpeCandidate b) => a.Score > b.Score || (a.Score == b.Score && a.Left < b.Left);
}

/// <summary>
/// unigram_model.cc's EncodeOptimized: Viterbi over every piece that matches at every character, keeping for each
/// end position the best path ending there. A character no piece of one character covers gets an unknown node
/// scored (lowest normal score - 10); user-defined pieces score (byte length x highest normal score - 0.1).
/// The arithmetic follows the C++ types: piece candidates are summed and compared in double and stored as float,
/// unknown candidates are summed in float; the first candidate wins ties.
/// </summary>
internal sealed class SentencePieceUnigramEncoder : SentencePieceEncoder
{
    /// <summary>kUnkPenalty: how much worse than the worst piece an unknown character scores.</summary>
    internal const float UnknownPenalty = 10.0f;

    private readonly DoubleArrayTrie _trie;
    private readonly float _maxScore;
    private readonly float _unknownScore;

    public SentencePieceUnigramEncoder(SentencePieceVocabulary vocabulary)
        : base(vocabulary)
    {
        // The C++ starts from FLT_MAX / FLT_MIN (the smallest positive float, not the most negative) over NORMAL pieces.
        float min = float.MaxValue, max = 1.17549435E-38f;
        for (int id = 0; id < vocabulary.Count; id++)
        {
            if (vocabulary.Types[id] == SentencePieceType.Normal)
            {
                min = Math.Min(min, vocabulary.Scores[id]);
                max = Math.Max(max, vocabulary.Scores[id]);
            }
        }

        _maxScore = max;
        _unknownScore = min - UnknownPenalty;
        // BuildTrie: pieces sorted by (bytes, id), handed to darts-clone as NUL-terminated strings (a piece ends at
        // its first NUL); of equal keys the first is kept.
        _trie = DoubleArrayTrie.Build(vocabulary.Normal
            .OrderBy(p => p.Key, ByteArrayComparer.Instance).ThenBy(p => p.Id)
            .Select(p => (p.Key.AsSpan().IndexOf((byte)0) is int nul and >= 0 ? p.Key[..nul] : p.Key, p.Id)));
    }

    public override bool Equivalent(string expected, string actual) => Math.Abs(Score(expected) - Score(actual)) <= 1e-7f;

    /// <summary>The score the self-test gives pieces joined by spaces (float sums, user-defined and unknown pieces as in the lattice).</summary>
    private float Score(string pieces)
    {
        float total = 0;
        foreach (string piece in pieces.Split(' '))
        {
            byte[] utf8 = Encoding.UTF8.GetBytes(piece);
            int id = Vocabulary.PieceToId(utf8);
            // float += double for user-defined pieces (the sum is taken in double, then rounded), float += float otherwise.
            total = id == Vocabulary.UnknownId ? total + _unknownScore
                : Vocabulary.Types[id] == SentencePieceType.UserDefined ? (float)(total + ((double)(float)(utf8.Length * _maxScore) - 0.1))
                : total + Vocabulary.Scores[id];
        }

        return total;
    }

    public override void Encode(ReadOnlySpan<byte> normalized, SentencePieceScratch scratch, List<SentencePieceSegment> output)
    {
        output.Clear();
        int size = normalized.Length;
        if (size == 0)
        {
            return;
        }

        scratch.EnsureCapacity(size + 1);
        int[] bestId = scratch.Ints1, bestStart = scratch.Ints2;
        float[] bestScore = scratch.Floats;
        Array.Fill(bestStart, -1, 0, size + 1);
        Array.Clear(bestScore, 0, size + 1);
        SentencePieceType[] types = Vocabulary.Types;
        float[] scores = Vocabulary.Scores;
        for (int startsAt = 0; startsAt < size;)
        {
            float scoreTillHere = bestScore[startsAt];
            bool hasSingleNode = false;
            int charLength = Math.Min(SentencePieceUtf8.OneCharLen(normalized[startsAt]), size - startsAt);
            int node = 0;
            for (int keyPos = startsAt; keyPos < size;)
            {
                node = _trie.Next(node, normalized[keyPos]);
                if (node < 0)
                {
                    break;
                }

                keyPos++;
                int id = _trie.ValueAt(node);
                if (id < 0 || types[id] == SentencePieceType.Unused)
                {
                    continue;
                }

                int length = keyPos - startsAt;
                double score = types[id] == SentencePieceType.UserDefined ? (double)(float)(length * _maxScore) - 0.1 : scores[id];
                double candidate = score + scoreTillHere;
                if (bestStart[keyPos] == -1 || candidate > bestScore[keyPos])
                {
                    bestScore[keyPos] = (float)candidate;
                    bestStart[keyPos] = startsAt;
                    bestId[keyPos] = id;
                }

                if (!hasSingleNode && length == charLength)
                {
                    hasSingleNode = true;
                }
            }

            if (!hasSingleNode)
            {
                int target = startsAt + charLength;
                float candidate = (float)(_unknownScore + scoreTillHere);
                if (bestStart[target] == -1 || candidate > bestScore[target])
                {
                    bestScore[target] = candidate;
                    bestStart[target] = startsAt;
                    bestId[target] = Vocabulary.UnknownId;
                }
            }

            startsAt += charLength;
        }

        for (int endsAt = size; endsAt > 0;)
        {
            int startsAt = bestStart[endsAt];
            if (startsAt < 0)
            {
                throw new InvalidOperationException($"No path reaches byte {endsAt} of the normalized text; a piece ends inside a character.");
            }

            output.Add(new SentencePieceSegment(startsAt, endsAt - startsAt, bestId[endsAt]));
            endsAt = startsAt;
        }

        output.Reverse();
    }

    private sealed class ByteArrayComparer : IComparer<byte[]>
    {
        public static readonly ByteArrayComparer Instance = new();

        public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y);
    }
}

/// <summary>word_model.cc: one piece per word, a word starting at each U+2581 (the trainer's whitespace options do not apply).</summary>
internal sealed class SentencePieceWordEncoder(SentencePieceVocabulary vocabulary) : SentencePieceEncoder(vocabulary)
{
    public override void Encode(ReadOnlySpan<byte> normalized, SentencePieceScratch scratch, List<SentencePieceSegment> output)
    {
        output.Clear();
        int wordStart = 0;
        for (int position = 0; position < normalized.Length;)
        {
            int length = SentencePieceUtf8.CharLength(normalized[position..]);
            if (position > 0 && normalized.Slice(position, length).SequenceEqual(SentencePieceUtf8.SpaceSymbol))
            {
                Add(normalized, wordStart, position, output);
                wordStart = position;
            }

            position += length;
        }

        if (normalized.Length > 0)
        {
            Add(normalized, wordStart, normalized.Length, output);
        }
    }

    private void Add(ReadOnlySpan<byte> text, int start, int end, List<SentencePieceSegment> output) =>
        output.Add(new SentencePieceSegment(start, end - start, Vocabulary.PieceToId(text[start..end])));
}

/// <summary>char_model.cc: one piece per character (user-defined symbols whole).</summary>
internal sealed class SentencePieceCharacterEncoder(SentencePieceVocabulary vocabulary) : SentencePieceEncoder(vocabulary)
{
    public override void Encode(ReadOnlySpan<byte> normalized, SentencePieceScratch scratch, List<SentencePieceSegment> output)
    {
        output.Clear();
        for (int position = 0; position < normalized.Length;)
        {
            int length = Vocabulary.UserDefinedMatcher.PrefixMatch(normalized[position..], out _);
            output.Add(new SentencePieceSegment(position, length, Vocabulary.PieceToId(normalized.Slice(position, length))));
            position += length;
        }
    }
}
