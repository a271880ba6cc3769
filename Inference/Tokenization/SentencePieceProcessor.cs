using System.Text;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>
/// Encodes and decodes text exactly as Google's SentencePiece does for a <c>.model</c> file (Unigram, BPE, word and
/// char models): its normalizer (precompiled chars map, user-defined symbols, whitespace options), its segmentation
/// (BPE merges by score with the leftmost pair first on ties, UNUSED pieces split back; Unigram Viterbi with the
/// unknown penalty), unknown handling (runs of unknown characters become one unknown id, or UTF-8 byte pieces with
/// byte fallback) and its decoder. Pure managed code; an instance is immutable and safe for concurrent use.
/// </summary>
public sealed class SentencePieceProcessor
{
    private readonly SentencePieceVocabulary _vocabulary;
    private readonly SentencePieceEncoder _encoder;
    private readonly SentencePieceNormalizer? _denormalizer;
    private readonly byte[] _unknownSurface;
    private readonly bool _stripLeadingSpace;
    private readonly bool _removeExtraWhitespaces;

    /// <summary>Prepares <paramref name="model"/> for encoding.</summary>
    /// <exception cref="InvalidDataException">
    /// The model breaks a rule SentencePiece checks when loading (an empty or duplicate piece, no or two UNKNOWN pieces,
    /// byte pieces without byte fallback or byte fallback without all 256 byte pieces, an unknown model type, a
    /// malformed chars map); the message names the file and the piece or field.
    /// </exception>
    public SentencePieceProcessor(SentencePieceModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        Model = model;
        _vocabulary = new SentencePieceVocabulary(model);
        _encoder = SentencePieceEncoder.Create(model, _vocabulary);
        Normalizer = new SentencePieceNormalizer(model.NormalizerSpec, model.TreatWhitespaceAsSuffix,
            _vocabulary.UserDefinedMatcher.IsEmpty ? null : _vocabulary.UserDefinedMatcher, $"{model.Source}: normalizer_spec");
        if (model.DenormalizerSpec is { PrecompiledCharsMap.Length: > 0 } denormalizer)
        {
            _denormalizer = new SentencePieceNormalizer(denormalizer, false, null, $"{model.Source}: denormalizer_spec");
        }

        _unknownSurface = Encoding.UTF8.GetBytes(model.UnknownSurface);
        _removeExtraWhitespaces = model.NormalizerSpec.RemoveExtraWhitespaces;
        _stripLeadingSpace = model.NormalizerSpec.AddDummyPrefix || _removeExtraWhitespaces;
        UnknownId = ReservedId(model.UnknownPiece, SentencePieceType.Unknown);
        BosId = ReservedId(model.BosPiece, SentencePieceType.Control);
        EosId = ReservedId(model.EosPiece, SentencePieceType.Control);
        PadId = ReservedId(model.PadPiece, SentencePieceType.Control);
        RunSelfTest();
    }

    /// <summary>The model.</summary>
    public SentencePieceModel Model { get; }

    /// <summary>The normalizer applied before segmentation.</summary>
    public SentencePieceNormalizer Normalizer { get; }

    /// <summary>Number of pieces (ids are 0 .. VocabularySize - 1).</summary>
    public int VocabularySize => _vocabulary.Count;

    /// <summary>The id of trainer_spec.unk_piece when it is the UNKNOWN piece, else -1 (SentencePiece's <c>unk_id()</c>).</summary>
    public int UnknownId { get; }

    /// <summary>The id of trainer_spec.bos_piece when it is a control piece, else -1 (SentencePiece's <c>bos_id()</c>).</summary>
    public int BosId { get; }

    /// <summary>The id of trainer_spec.eos_piece when it is a control piece, else -1.</summary>
    public int EosId { get; }

    /// <summary>The id of trainer_spec.pad_piece when it is a control piece, else -1.</summary>
    public int PadId { get; }

    /// <summary>Loads a <c>.model</c> file.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid SentencePiece model; the message names it.</exception>
    public static SentencePieceProcessor Load(string path) => new(SentencePieceModel.Load(path));

    /// <summary>The ids of <paramref name="text"/>, without BOS or EOS (SentencePiece's <c>EncodeAsIds</c>).</summary>
    /// <exception cref="InvalidOperationException">
    /// The model segments the text into a control piece (possible only when a control piece's text is also a
    /// character or a mergeable piece); SentencePiece reports an error for such text too.
    /// </exception>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        Encode(text.AsSpan(), ids);
        return [.. ids];
    }

    /// <summary>Appends the ids of <paramref name="text"/> to <paramref name="ids"/> (no BOS or EOS).</summary>
    public void Encode(ReadOnlySpan<char> text, List<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        SentencePieceScratch scratch = SentencePieceScratch.Current;
        ToUtf8(text, ref scratch.Input);
        EncodeCore(scratch.Input.Span, scratch, ids, null);
    }

    /// <summary>
    /// The ids of UTF-8 bytes, which may be malformed: SentencePiece turns each malformed byte into U+FFFD.
    /// </summary>
    public int[] EncodeUtf8(ReadOnlySpan<byte> utf8)
    {
        var ids = new List<int>(utf8.Length / 3 + 4);
        EncodeCore(utf8, SentencePieceScratch.Current, ids, null);
        return [.. ids];
    }

    /// <summary>
    /// The pieces of <paramref name="text"/> (SentencePiece's <c>EncodeAsPieces</c>): piece texts with U+2581 for
    /// spaces, unknown runs as their normalized text, byte-fallback pieces as &lt;0xNN&gt;.
    /// </summary>
    public IReadOnlyList<string> EncodeToPieces(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        SentencePieceScratch scratch = SentencePieceScratch.Current;
        ToUtf8(text, ref scratch.Input);
        var ids = new List<int>();
        var pieces = new List<string>();
        EncodeCore(scratch.Input.Span, scratch, ids, pieces);
        return pieces;
    }

    /// <summary>The text of <paramref name="ids"/> (SentencePiece's <c>DecodeIds</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside 0 .. VocabularySize - 1.</exception>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        return Decode(ids is int[] array ? array : [.. ids]);
    }

    /// <summary>The text of <paramref name="ids"/> (SentencePiece's <c>DecodeIds</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside 0 .. VocabularySize - 1.</exception>
    public string Decode(ReadOnlySpan<int> ids)
    {
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)_vocabulary.Count)
            {
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"Invalid id {id}: {Model.Source} has ids 0..{_vocabulary.Count - 1}.");
            }
        }

        var text = new ByteBuffer(ids.Length * 4 + 16);
        var bytes = new ByteBuffer(16);
        bool isBosSpace = true, bosSpaceSeen = false;
        foreach (int original in ids)
        {
            // SentencePiece decodes ids through their piece text, so a piece text defined twice resolves as PieceToId does.
            int id = _vocabulary.PieceToId(_vocabulary.Utf8[original]);
            if (_vocabulary.Types[id] == SentencePieceType.Byte)
            {
                bytes.Append((byte)SentencePieceVocabulary.PieceToByte(_vocabulary.Text[id]));
                continue;
            }

            FlushBytes(ref bytes, ref text);
            if (bosSpaceSeen || text.Length > 0)
            {
                isBosSpace = false;
            }

            bosSpaceSeen = AppendDecodedPiece(original, id, isBosSpace, ref text);
        }

        FlushBytes(ref bytes, ref text);
        if (_denormalizer is not null)
        {
            var denormalized = new ByteBuffer(text.Length * 2 + 16);
            _denormalizer.Normalize(text.Span, ref denormalized);
            return Encoding.UTF8.GetString(denormalized.Span);
        }

        return Encoding.UTF8.GetString(text.Span);
    }

    /// <summary>The text of piece <paramref name="id"/>.</summary>
    public string IdToPiece(int id)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(id);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(id, _vocabulary.Count);
        return _vocabulary.Text[id];
    }

    /// <summary>The id of <paramref name="piece"/>, or the unknown id (SentencePiece's <c>PieceToId</c>).</summary>
    public int PieceToId(string piece)
    {
        ArgumentNullException.ThrowIfNull(piece);
        return _vocabulary.PieceToId(Encoding.UTF8.GetBytes(piece));
    }

    /// <summary>The score of piece <paramref name="id"/>.</summary>
    public float GetScore(int id) => _vocabulary.Scores[CheckId(id)];

    /// <summary>The type of piece <paramref name="id"/>.</summary>
    public SentencePieceType GetPieceType(int id) => _vocabulary.Types[CheckId(id)];

    /// <summary>The normalized form of <paramref name="text"/> the model segments (spaces as U+2581 when escaped).</summary>
    public string Normalize(string text) => Normalizer.Normalize(text);

    private void EncodeCore(ReadOnlySpan<byte> utf8, SentencePieceScratch scratch, List<int> ids, List<string>? pieces)
    {
        Normalizer.Normalize(utf8, ref scratch.Normalized);
        ReadOnlySpan<byte> normalized = scratch.Normalized.Span;
        List<SentencePieceSegment> segments = scratch.Segments;
        _encoder.Encode(normalized, scratch, segments);
        // SentencePieceProcessor::PopulateSentencePieceText.
        bool byteFallback = Model.ByteFallback;
        int consumed = 0;
        bool previousUnknown = false;
        foreach (SentencePieceSegment segment in segments)
        {
            SentencePieceType type = _vocabulary.Types[segment.Id];
            bool unknown = type == SentencePieceType.Unknown;
            ReadOnlySpan<byte> piece = normalized.Slice(segment.Start, segment.Length);
            if (type == SentencePieceType.Control)
            {
                // A control piece has no surface, so it consumes nothing (and SentencePiece then reports an error below).
                ids.Add(segment.Id);
                pieces?.Add(Encoding.UTF8.GetString(piece));
            }
            else
            {
                if (unknown && byteFallback)
                {
                    foreach (byte b in piece)
                    {
                        ids.Add(_vocabulary.ByteIds[b]);
                        pieces?.Add(_vocabulary.Text[_vocabulary.ByteIds[b]]);
                    }
                }
                else if (unknown && previousUnknown)
                {
                    // A run of unknown pieces stays one unknown piece.
                    if (pieces is not null)
                    {
                        pieces[^1] += Encoding.UTF8.GetString(piece);
                    }
                }
                else
                {
                    ids.Add(segment.Id);
                    pieces?.Add(Encoding.UTF8.GetString(piece));
                }

                consumed += segment.Length;
            }

            previousUnknown = unknown;
        }

        SentencePieceScratch.ReleaseIfLarge(utf8.Length);
        if (consumed != normalized.Length)
        {
            throw new InvalidOperationException(
                $"{Model.Source}: the text segments into a control piece, which SentencePiece rejects (all normalized characters are not consumed).");
        }
    }

    /// <summary>One non-byte piece of DecodeIds; returns whether it consumed the leading space of the text.</summary>
    private bool AppendDecodedPiece(int original, int id, bool isBosSpace, ref ByteBuffer text)
    {
        SentencePieceType type = _vocabulary.Types[id];
        if (type == SentencePieceType.Control)
        {
            return false;
        }

        ReadOnlySpan<byte> piece = _vocabulary.Utf8[original];
        if (type == SentencePieceType.Unknown)
        {
            text.Append(_vocabulary.Text[id] == _vocabulary.Text[original] ? _unknownSurface : piece);
            return false;
        }

        bool hasBosSpace = false;
        if (isBosSpace && _stripLeadingSpace && piece.StartsWith(SentencePieceUtf8.SpaceSymbol))
        {
            piece = piece[SentencePieceUtf8.SpaceSymbol.Length..];
            // With remove_extra_whitespaces every leading space goes, so the next piece may strip one too.
            hasBosSpace = !_removeExtraWhitespaces;
        }

        while (!piece.IsEmpty)
        {
            int next = piece.IndexOf(SentencePieceUtf8.SpaceSymbol);
            if (next < 0)
            {
                text.Append(piece);
                break;
            }

            text.Append(piece[..next]);
            text.Append((byte)' ');
            piece = piece[(next + SentencePieceUtf8.SpaceSymbol.Length)..];
        }

        return hasBosSpace;
    }

    /// <summary>ProcessBytePieces: byte pieces become their bytes, a byte that does not start a well-formed character becomes U+FFFD.</summary>
    private static void FlushBytes(ref ByteBuffer bytes, ref ByteBuffer text)
    {
        ReadOnlySpan<byte> rest = bytes.Span;
        while (!rest.IsEmpty)
        {
            if (SentencePieceUtf8.IsValidDecode(rest, out int length))
            {
                text.Append(rest[..length]);
            }
            else
            {
                text.Append(SentencePieceUtf8.ReplacementCharacter);
            }

            rest = rest[length..];
        }

        bytes.Clear();
    }

    private static void ToUtf8(ReadOnlySpan<char> text, ref ByteBuffer buffer)
    {
        // Lone surrogates become U+FFFD, as in any UTF-8 conversion of .NET strings.
        buffer.Clear();
        int max = Encoding.UTF8.GetMaxByteCount(text.Length);
        buffer.Reserve(max);
        buffer.Length = Encoding.UTF8.GetBytes(text, buffer.Writable);
    }

    /// <summary>SentencePiece's load-time self-test: the model must segment its self_test_data as recorded.</summary>
    private void RunSelfTest()
    {
        var failures = new List<string>();
        IReadOnlyList<(string Input, string Expected)> samples = Model.SelfTestSamples;
        foreach ((string input, string expected) in samples)
        {
            string actual = string.Join(" ", EncodeToPieces(input));
            if (!_encoder.Equivalent(expected, actual))
            {
                failures.Add($"'{input}': expected '{expected}', got '{actual}'");
            }
        }

        if (failures.Count > 0)
        {
            throw new InvalidDataException(
                $"{Model.Source}: {failures.Count}/{samples.Count} self_test_data samples did not pass; SentencePiece refuses such a model. First: {failures[0]}");
        }
    }

    private int ReservedId(string piece, SentencePieceType type)
    {
        int id = _vocabulary.PieceToId(Encoding.UTF8.GetBytes(piece));
        return _vocabulary.Types[id] == type ? id : -1;
    }

    private int CheckId(int id)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(id);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(id, _vocabulary.Count);
        return id;
    }
}
