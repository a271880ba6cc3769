using System.Text;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>One piece of an encoding: <see cref="Length"/> bytes of the normalized text from <see cref="Start"/>, and its id.</summary>
internal readonly record struct SentencePieceSegment(int Start, int Length, int Id);

/// <summary>
/// The vocabulary as SentencePiece's ModelInterface::InitializePieces sees it: normal, user-defined and unused pieces
/// are looked up in one table (they can be produced from text), control, unknown and byte pieces in another
/// (PieceToId looks there first), with the same load-time checks.
/// </summary>
internal sealed class SentencePieceVocabulary
{
    private readonly PieceTable _pieces;
    private readonly PieceTable _reserved;

    public SentencePieceVocabulary(SentencePieceModel model)
    {
        string source = model.Source;
        int count = model.Pieces.Count;
        Text = new string[count];
        Utf8 = new byte[count][];
        Scores = new float[count];
        Types = new SentencePieceType[count];
        var normal = new List<(byte[] Key, int Id)>();
        var reserved = new List<(byte[] Key, int Id)>();
        var seenNormal = new Dictionary<string, int>(StringComparer.Ordinal);
        var seenReserved = new Dictionary<string, int>(StringComparer.Ordinal);
        var userDefined = new List<string>();
        ByteIds = new int[256];
        Array.Fill(ByteIds, -1);
        UnknownId = -1;
        for (int id = 0; id < count; id++)
        {
            SentencePiece piece = model.Pieces[id];
            if (piece.Piece.Length == 0)
            {
                throw new InvalidDataException($"{source}: piece {id} is empty; SentencePiece requires non-empty pieces.");
            }

            Text[id] = piece.Piece;
            Utf8[id] = Encoding.UTF8.GetBytes(piece.Piece);
            Scores[id] = piece.Score;
            Types[id] = piece.Type;
            bool isNormal = piece.Type is SentencePieceType.Normal or SentencePieceType.UserDefined or SentencePieceType.Unused;
            Dictionary<string, int> seen = isNormal ? seenNormal : seenReserved;
            if (!seen.TryAdd(piece.Piece, id))
            {
                throw new InvalidDataException($"{source}: piece {id} ('{piece.Piece}') is already defined as piece {seen[piece.Piece]}.");
            }

            (isNormal ? normal : reserved).Add((Utf8[id], id));
            switch (piece.Type)
            {
                case SentencePieceType.UserDefined:
                    userDefined.Add(piece.Piece);
                    break;
                case SentencePieceType.Unknown:
                    if (UnknownId >= 0)
                    {
                        throw new InvalidDataException($"{source}: pieces {UnknownId} and {id} are both of type UNKNOWN; a model has one.");
                    }

                    UnknownId = id;
                    break;
                case SentencePieceType.Byte:
                    if (!model.ByteFallback)
                    {
                        throw new InvalidDataException($"{source}: piece {id} ('{piece.Piece}') is a byte piece although trainer_spec.byte_fallback is false.");
                    }

                    int b = PieceToByte(piece.Piece);
                    if (b < 0)
                    {
                        throw new InvalidDataException($"{source}: byte piece {id} ('{piece.Piece}') is not of the form <0xNN>.");
                    }

                    ByteIds[b] = id;
                    break;
            }
        }

        if (UnknownId < 0)
        {
            throw new InvalidDataException($"{source}: no piece has type UNKNOWN; SentencePiece requires one.");
        }

        if (model.ByteFallback && Array.IndexOf(ByteIds, -1) is int missing and >= 0)
        {
            throw new InvalidDataException($"{source}: trainer_spec.byte_fallback is true but there is no byte piece <0x{missing:X2}> (all 256 are required).");
        }

        _pieces = new PieceTable(normal);
        _reserved = new PieceTable(reserved);
        Normal = normal;
        UserDefinedMatcher = new SentencePiecePrefixMatcher(userDefined);
    }

    /// <summary>Piece texts by id.</summary>
    public string[] Text { get; }

    /// <summary>Piece texts as UTF-8, by id.</summary>
    public byte[][] Utf8 { get; }

    /// <summary>Scores by id.</summary>
    public float[] Scores { get; }

    /// <summary>Types by id.</summary>
    public SentencePieceType[] Types { get; }

    /// <summary>The id of the piece of type UNKNOWN (not trainer_spec.unk_id: SentencePiece goes by the type).</summary>
    public int UnknownId { get; }

    /// <summary>The id of &lt;0xNN&gt; for each byte, or -1.</summary>
    public int[] ByteIds { get; }

    /// <summary>Normal, user-defined and unused pieces as (UTF-8, id), in id order.</summary>
    public IReadOnlyList<(byte[] Key, int Id)> Normal { get; }

    /// <summary>Matches user-defined symbols (empty when the model has none).</summary>
    public SentencePiecePrefixMatcher UserDefinedMatcher { get; }

    public int Count => Text.Length;

    /// <summary>
    /// The trie of normal, user-defined and unused pieces (value = id) when it holds all of them, so a walk through it
    /// is the whole lookup; null when a piece contains NUL or there are none.
    /// </summary>
    public DoubleArrayTrie? NormalTrie => _pieces.CompleteTrie;

    /// <summary>The id of a normal, user-defined or unused piece, or -1 (the lookup BPE merges with).</summary>
    public int FindNormal(ReadOnlySpan<byte> piece) => _pieces.Find(piece);

    /// <summary>ModelInterface::PieceToId: control, unknown and byte pieces first, then the others, else the unknown id.</summary>
    public int PieceToId(ReadOnlySpan<byte> piece)
    {
        int id = _reserved.Find(piece);
        if (id >= 0)
        {
            return id;
        }

        id = _pieces.Find(piece);
        return id >= 0 ? id : UnknownId;
    }

    /// <summary>The byte of a piece &lt;0xNN&gt; (upper-case hex, as SentencePiece writes it), or -1.</summary>
    public static int PieceToByte(string piece) =>
        piece is ['<', '0', 'x', var hi, var lo, '>'] && Hex(hi) is int h and >= 0 && Hex(lo) is int l and >= 0 ? (h << 4) | l : -1;

    private static int Hex(char c) => c switch
    {
        >= '0' and <= '9' => c - '0',
        >= 'A' and <= 'F' => c - 'A' + 10,
        _ => -1,
    };

    /// <summary>Exact lookup of UTF-8 piece texts: a double-array trie, plus a dictionary for the rare pieces holding NUL (the trie cannot).</summary>
    private sealed class PieceTable
    {
        private readonly DoubleArrayTrie? _trie;
        private readonly Dictionary<string, int>? _withNul;

        public PieceTable(List<(byte[] Key, int Id)> entries)
        {
            var plain = entries.Where(e => !e.Key.AsSpan().Contains((byte)0)).ToList();
            if (plain.Count > 0)
            {
                _trie = DoubleArrayTrie.Build(plain.Select(e => (e.Key, e.Id)));
            }

            if (plain.Count < entries.Count)
            {
                _withNul = entries.Where(e => e.Key.AsSpan().Contains((byte)0))
                    .ToDictionary(e => Encoding.UTF8.GetString(e.Key), e => e.Id, StringComparer.Ordinal);
            }
        }

        public DoubleArrayTrie? CompleteTrie => _withNul is null ? _trie : null;

        public int Find(ReadOnlySpan<byte> key)
        {
            int id = _trie?.ExactMatch(key) ?? -1;
            if (id < 0 && _withNul is not null && key.Contains((byte)0))
            {
                id = _withNul.GetValueOrDefault(Encoding.UTF8.GetString(key), -1);
            }

            return id;
        }
    }
}
