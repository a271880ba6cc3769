using ModelSurgery.Inference.IO;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>The <c>type</c> of a SentencePiece piece (sentencepiece_model.proto numbering).</summary>
public enum SentencePieceType
{
    /// <summary>An ordinary piece learned from text.</summary>
    Normal = 1,

    /// <summary>The unknown-token piece.</summary>
    Unknown = 2,

    /// <summary>A control symbol such as &lt;s&gt; or &lt;/s&gt;; never produced from text.</summary>
    Control = 3,

    /// <summary>A piece the user forced into the vocabulary; always matched whole.</summary>
    UserDefined = 4,

    /// <summary>A piece that is never used.</summary>
    Unused = 5,

    /// <summary>A byte-fallback piece &lt;0x00&gt;..&lt;0xFF&gt;.</summary>
    Byte = 6,
}

/// <summary>The <c>model_type</c> of a SentencePiece trainer spec.</summary>
public enum SentencePieceModelType
{
    /// <summary>Unigram language model: pieces are independent.</summary>
    Unigram = 1,

    /// <summary>BPE: pieces are built by merging pairs, higher score first.</summary>
    Bpe = 2,

    /// <summary>Whitespace-delimited words.</summary>
    Word = 3,

    /// <summary>Single characters.</summary>
    Character = 4,
}

/// <summary>One vocabulary entry of a SentencePiece model; its id is its position in <see cref="SentencePieceModel.Pieces"/>.</summary>
/// <param name="Piece">The piece text (spaces are written as U+2581).</param>
/// <param name="Score">Log probability (unigram) or merge priority (BPE, higher first).</param>
/// <param name="Type">The piece type.</param>
public sealed record SentencePiece(string Piece, float Score, SentencePieceType Type)
{
    /// <summary>Fields of the piece message other than piece/score/type, written back unchanged.</summary>
    internal ProtoMessage? Extra { get; init; }
}

/// <summary>A SentencePiece <c>NormalizerSpec</c>: how text is normalized before it is split into pieces.</summary>
/// <param name="Name">The rule set's name (<c>nmt_nfkc</c>, <c>identity</c>, ...); informational, the chars map is what applies.</param>
/// <param name="PrecompiledCharsMap">The compiled rules (see <see cref="Tokenization.PrecompiledCharsMap"/>); empty for none.</param>
/// <param name="AddDummyPrefix">Put a space before the text, so the first word looks like every other word.</param>
/// <param name="RemoveExtraWhitespaces">Drop leading and trailing spaces and collapse runs of spaces into one.</param>
/// <param name="EscapeWhitespaces">Write spaces as U+2581.</param>
public sealed record SentencePieceNormalizerSpec(string? Name, byte[] PrecompiledCharsMap, bool AddDummyPrefix = true,
    bool RemoveExtraWhitespaces = true, bool EscapeWhitespaces = true)
{
    /// <summary>The spec of a model without normalization rules, with Llama 2's whitespace settings.</summary>
    public static SentencePieceNormalizerSpec Identity { get; } = new("identity", [], AddDummyPrefix: true, RemoveExtraWhitespaces: false);
}

/// <summary>
/// A SentencePiece <c>.model</c> file (a serialized <c>ModelProto</c>) read into its pieces and the trainer settings
/// vocabulary compression needs. Every other field, known or not, is kept as read and written back unchanged.
/// </summary>
public sealed class SentencePieceModel
{
    private const int PiecesField = 1, TrainerSpecField = 2, NormalizerSpecField = 3, SelfTestDataField = 4, DenormalizerSpecField = 5;
    private const int SampleField = 1, SampleInputField = 1, SampleExpectedField = 2;
    private const int PieceTextField = 1, PieceScoreField = 2, PieceTypeField = 3;
    private const int ModelTypeField = 3, ByteFallbackField = 35, UnkIdField = 40, BosIdField = 41, EosIdField = 42, PadIdField = 43;
    private const int TreatWhitespaceAsSuffixField = 24, UnkSurfaceField = 44, UnkPieceField = 45, BosPieceField = 46, EosPieceField = 47, PadPieceField = 48;
    private const int NameField = 1, PrecompiledCharsMapField = 2, AddDummyPrefixField = 3, RemoveExtraWhitespacesField = 4, EscapeWhitespacesField = 5;

    private readonly ProtoMessage _model;
    private readonly ProtoMessage _trainerSpec;

    private SentencePieceModel(ProtoMessage model, ProtoMessage trainerSpec, IReadOnlyList<SentencePiece> pieces, string source)
    {
        _model = model;
        _trainerSpec = trainerSpec;
        Pieces = pieces;
        Source = source;
        NormalizerSpec = ReadNormalizerSpec(model.Last(NormalizerSpecField), source) ?? new SentencePieceNormalizerSpec(null, []);
        DenormalizerSpec = ReadNormalizerSpec(model.Last(DenormalizerSpecField), source);
    }

    /// <summary>The file (or other origin) the model was read from, for error messages.</summary>
    public string Source { get; }

    /// <summary>The vocabulary; a piece's id is its index.</summary>
    public IReadOnlyList<SentencePiece> Pieces { get; }

    /// <summary>trainer_spec.model_type (unigram when absent, as in the proto default).</summary>
    public SentencePieceModelType ModelType => (SentencePieceModelType)(_trainerSpec.GetInt(ModelTypeField) ?? 1);

    /// <summary>trainer_spec.byte_fallback: unknown characters become &lt;0xNN&gt; byte pieces.</summary>
    public bool ByteFallback => (_trainerSpec.GetInt(ByteFallbackField) ?? 0) != 0;

    /// <summary>trainer_spec.unk_id (default 0).</summary>
    public int UnknownId => (int)(_trainerSpec.GetInt(UnkIdField) ?? 0);

    /// <summary>trainer_spec.bos_id (default 1; -1 means none).</summary>
    public int BosId => (int)(_trainerSpec.GetInt(BosIdField) ?? 1);

    /// <summary>trainer_spec.eos_id (default 2; -1 means none).</summary>
    public int EosId => (int)(_trainerSpec.GetInt(EosIdField) ?? 2);

    /// <summary>trainer_spec.pad_id (default -1 = none).</summary>
    public int PadId => (int)(_trainerSpec.GetInt(PadIdField) ?? -1);

    /// <summary>trainer_spec.treat_whitespace_as_suffix: the space marker ends a word instead of starting it.</summary>
    public bool TreatWhitespaceAsSuffix => (_trainerSpec.GetInt(TreatWhitespaceAsSuffixField) ?? 0) != 0;

    /// <summary>trainer_spec.unk_piece (an empty value means the default, as in SentencePiece).</summary>
    public string UnknownPiece => NonEmpty(_trainerSpec.GetString(UnkPieceField)) ?? "<unk>";

    /// <summary>trainer_spec.bos_piece (an empty value means the default).</summary>
    public string BosPiece => NonEmpty(_trainerSpec.GetString(BosPieceField)) ?? "<s>";

    /// <summary>trainer_spec.eos_piece (an empty value means the default).</summary>
    public string EosPiece => NonEmpty(_trainerSpec.GetString(EosPieceField)) ?? "</s>";

    /// <summary>trainer_spec.pad_piece (an empty value means the default).</summary>
    public string PadPiece => NonEmpty(_trainerSpec.GetString(PadPieceField)) ?? "<pad>";

    /// <summary>trainer_spec.unk_surface: what decoding writes for the unknown piece (default " \u2047 ").</summary>
    public string UnknownSurface => _trainerSpec.GetString(UnkSurfaceField) ?? " \u2047 ";

    /// <summary>normalizer_spec (SentencePiece's defaults when the model has none).</summary>
    public SentencePieceNormalizerSpec NormalizerSpec { get; }

    /// <summary>denormalizer_spec, applied to decoded text when it has rules; null when the model has none.</summary>
    public SentencePieceNormalizerSpec? DenormalizerSpec { get; }

    /// <summary>
    /// self_test_data: inputs with the pieces (joined by spaces) the trainer expected; SentencePiece refuses to load a
    /// model that does not reproduce them.
    /// </summary>
    internal IReadOnlyList<(string Input, string Expected)> SelfTestSamples
    {
        get
        {
            if (_model.Last(SelfTestDataField) is not { WireType: ProtoWireType.LengthDelimited } data)
            {
                return [];
            }

            var samples = new List<(string, string)>();
            foreach (ProtoField sample in ProtoMessage.Parse(data.Payload, Source).Fields.Where(f => f.Number == SampleField && f.WireType == ProtoWireType.LengthDelimited))
            {
                ProtoMessage message = ProtoMessage.Parse(sample.Payload, Source);
                samples.Add((message.GetString(SampleInputField) ?? "", message.GetString(SampleExpectedField) ?? ""));
            }

            return samples;
        }
    }

    /// <summary>Reads a <c>.model</c> file.</summary>
    /// <exception cref="InvalidDataException">The file is not a SentencePiece model; the message names the file.</exception>
    public static SentencePieceModel Load(string path) => Parse(File.ReadAllBytes(path), path);

    /// <summary>Parses serialized <c>ModelProto</c> bytes.</summary>
    /// <param name="data">The file contents.</param>
    /// <param name="source">The file name, for error messages.</param>
    public static SentencePieceModel Parse(ReadOnlySpan<byte> data, string source = "tokenizer.model")
    {
        ProtoMessage model = ProtoMessage.Parse(data, source);
        var pieces = new List<SentencePiece>();
        foreach (ProtoField field in model.Fields.Where(f => f.Number == PiecesField))
        {
            if (field.WireType != ProtoWireType.LengthDelimited)
            {
                throw new InvalidDataException($"{source}: field 'pieces' has the wrong wire type; this is not a SentencePiece model.");
            }

            ProtoMessage piece = ProtoMessage.Parse(field.Payload, source);
            string text = piece.GetString(PieceTextField)
                ?? throw new InvalidDataException($"{source}: piece {pieces.Count} has no text.");
            var type = (SentencePieceType)(piece.GetInt(PieceTypeField) ?? 1);
            if (!Enum.IsDefined(type))
            {
                throw new InvalidDataException($"{source}: piece {pieces.Count} ('{text}') has unknown type {(int)type}.");
            }

            float score = piece.GetFloat(PieceScoreField) ?? 0f;
            piece.Fields.RemoveAll(f => f.Number is PieceTextField or PieceScoreField or PieceTypeField);
            pieces.Add(new SentencePiece(text, score, type) { Extra = piece });
        }

        if (pieces.Count == 0)
        {
            throw new InvalidDataException($"{source}: no pieces found; this is not a SentencePiece model.");
        }

        ProtoField? trainer = model.Last(TrainerSpecField);
        ProtoMessage trainerSpec = trainer is null ? new ProtoMessage() : ProtoMessage.Parse(trainer.Payload, source);
        return new SentencePieceModel(model, trainerSpec, pieces, source);
    }

    /// <summary>Builds a model from scratch (used to express SentencePiece-style <c>tokenizer.json</c> files and in tests).</summary>
    /// <param name="pieces">The vocabulary in id order.</param>
    /// <param name="modelType">Unigram or BPE.</param>
    /// <param name="byteFallback">Whether unknown characters fall back to byte pieces.</param>
    /// <param name="unknownId">Id of the unknown piece.</param>
    /// <param name="bosId">Id of the beginning-of-sentence piece, or -1.</param>
    /// <param name="eosId">Id of the end-of-sentence piece, or -1.</param>
    /// <param name="padId">Id of the padding piece, or -1.</param>
    /// <param name="addDummyPrefix">Prepend a space (U+2581) to the input, as Llama 2 does (ignored when <paramref name="normalizer"/> is given).</param>
    /// <param name="normalizer">The normalizer spec; null for no rules, Llama 2's whitespace settings and <paramref name="addDummyPrefix"/>.</param>
    /// <param name="treatWhitespaceAsSuffix">trainer_spec.treat_whitespace_as_suffix.</param>
    /// <param name="denormalizer">denormalizer_spec, applied to decoded text; null for none.</param>
    public static SentencePieceModel Create(IReadOnlyList<SentencePiece> pieces, SentencePieceModelType modelType, bool byteFallback,
        int unknownId = 0, int bosId = 1, int eosId = 2, int padId = -1, bool addDummyPrefix = true,
        SentencePieceNormalizerSpec? normalizer = null, bool treatWhitespaceAsSuffix = false, SentencePieceNormalizerSpec? denormalizer = null)
    {
        ArgumentNullException.ThrowIfNull(pieces);
        var trainer = new ProtoMessage();
        trainer.SetInt(ModelTypeField, (int)modelType);
        if (treatWhitespaceAsSuffix)
        {
            trainer.SetInt(TreatWhitespaceAsSuffixField, 1);
        }

        trainer.SetInt(ByteFallbackField, byteFallback ? 1 : 0);
        trainer.SetInt(UnkIdField, unknownId);
        trainer.SetInt(BosIdField, bosId);
        trainer.SetInt(EosIdField, eosId);
        trainer.SetInt(PadIdField, padId);
        normalizer ??= SentencePieceNormalizerSpec.Identity with { AddDummyPrefix = addDummyPrefix };
        var model = new ProtoMessage();
        model.SetBytes(TrainerSpecField, trainer.ToBytes());
        model.SetBytes(NormalizerSpecField, WriteNormalizerSpec(normalizer));
        if (denormalizer is not null)
        {
            model.SetBytes(DenormalizerSpecField, WriteNormalizerSpec(denormalizer));
        }

        return new SentencePieceModel(model, trainer, [.. pieces], "created model");
    }

    /// <summary>
    /// A model with only the pieces at <paramref name="keptIds"/>, in that order (new id = position); the trainer's
    /// unk/bos/eos/pad ids are renumbered, and set to -1 where the piece was removed.
    /// </summary>
    /// <exception cref="ArgumentException">An id is out of range or repeated, or the unknown piece is removed.</exception>
    public SentencePieceModel WithPieces(IReadOnlyList<int> keptIds)
    {
        ArgumentNullException.ThrowIfNull(keptIds);
        var newIds = new Dictionary<int, int>();
        foreach (int id in keptIds)
        {
            if (id < 0 || id >= Pieces.Count || !newIds.TryAdd(id, newIds.Count))
            {
                throw new ArgumentException($"Piece id {id} is out of range (0..{Pieces.Count - 1}) or repeated.", nameof(keptIds));
            }
        }

        if (!newIds.ContainsKey(UnknownId))
        {
            throw new ArgumentException($"The unknown piece (id {UnknownId}) must be kept.", nameof(keptIds));
        }

        var trainer = ProtoMessage.Parse(_trainerSpec.ToBytes(), "trainer_spec");
        foreach ((int field, int old) in new[] { (UnkIdField, UnknownId), (BosIdField, BosId), (EosIdField, EosId), (PadIdField, PadId) })
        {
            if (old >= 0)
            {
                trainer.SetInt(field, newIds.TryGetValue(old, out int renumbered) ? renumbered : -1);
            }
        }

        var model = ProtoMessage.Parse(_model.ToBytes(), "model");
        model.SetBytes(TrainerSpecField, trainer.ToBytes());
        return new SentencePieceModel(model, trainer, [.. keptIds.Select(id => Pieces[id])], Source);
    }

    /// <summary>Serializes the model; pieces are written where the original had them, every other field as read.</summary>
    public byte[] ToBytes()
    {
        var output = new ProtoMessage();
        bool piecesWritten = false;
        foreach (ProtoField field in _model.Fields)
        {
            if (field.Number == PiecesField)
            {
                if (!piecesWritten)
                {
                    output.Fields.AddRange(PieceFields());
                    piecesWritten = true;
                }
            }
            else
            {
                output.Fields.Add(field);
            }
        }

        if (!piecesWritten)
        {
            output.Fields.InsertRange(0, PieceFields());
        }

        return output.ToBytes();
    }

    /// <summary>Writes the model to <paramref name="path"/> atomically.</summary>
    public void Save(string path) => AtomicFile.WriteAllBytes(path, ToBytes());

    private static string? NonEmpty(string? value) => string.IsNullOrEmpty(value) ? null : value;

    private static SentencePieceNormalizerSpec? ReadNormalizerSpec(ProtoField? field, string source)
    {
        if (field is null)
        {
            return null;
        }

        if (field.WireType != ProtoWireType.LengthDelimited)
        {
            throw new InvalidDataException($"{source}: field {field.Number} (normalizer spec) has the wrong wire type.");
        }

        // proto2 defaults: add_dummy_prefix, remove_extra_whitespaces and escape_whitespaces are true when absent.
        ProtoMessage spec = ProtoMessage.Parse(field.Payload, source);
        return new SentencePieceNormalizerSpec(
            spec.GetString(NameField),
            spec.Last(PrecompiledCharsMapField) is { WireType: ProtoWireType.LengthDelimited } map ? map.Payload : [],
            (spec.GetInt(AddDummyPrefixField) ?? 1) != 0,
            (spec.GetInt(RemoveExtraWhitespacesField) ?? 1) != 0,
            (spec.GetInt(EscapeWhitespacesField) ?? 1) != 0);
    }

    private static byte[] WriteNormalizerSpec(SentencePieceNormalizerSpec spec)
    {
        var message = new ProtoMessage();
        if (spec.Name is not null)
        {
            message.SetString(NameField, spec.Name);
        }

        if (spec.PrecompiledCharsMap.Length > 0)
        {
            message.SetBytes(PrecompiledCharsMapField, spec.PrecompiledCharsMap);
        }

        message.SetInt(AddDummyPrefixField, spec.AddDummyPrefix ? 1 : 0);
        message.SetInt(RemoveExtraWhitespacesField, spec.RemoveExtraWhitespaces ? 1 : 0);
        message.SetInt(EscapeWhitespacesField, spec.EscapeWhitespaces ? 1 : 0);
        return message.ToBytes();
    }

    private IEnumerable<ProtoField> PieceFields()
    {
        foreach (SentencePiece piece in Pieces)
        {
            var message = new ProtoMessage();
            message.SetString(PieceTextField, piece.Piece);
            message.SetFloat(PieceScoreField, piece.Score);
            if (piece.Type != SentencePieceType.Normal)
            {
                message.SetInt(PieceTypeField, (int)piece.Type);
            }

            if (piece.Extra is not null)
            {
                message.Fields.AddRange(piece.Extra.Fields);
            }

            yield return new ProtoField(PiecesField, ProtoWireType.LengthDelimited, 0, message.ToBytes());
        }
    }
}
