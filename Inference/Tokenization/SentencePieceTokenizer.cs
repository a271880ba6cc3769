namespace ModelSurgery.Inference.Tokenization;

/// <summary>A SentencePiece <c>.model</c> (any model type) as a <see cref="ModelTokenizer"/>, run by <see cref="SentencePieceProcessor"/>.</summary>
public sealed class SentencePieceModelTokenizer : ModelTokenizer
{
    /// <summary>Wraps <paramref name="processor"/>.</summary>
    public SentencePieceModelTokenizer(SentencePieceProcessor processor)
    {
        ArgumentNullException.ThrowIfNull(processor);
        Processor = processor;
    }

    /// <summary>The SentencePiece engine.</summary>
    public SentencePieceProcessor Processor { get; }

    /// <inheritdoc/>
    public override int VocabularySize => Processor.VocabularySize;

    /// <inheritdoc/>
    public override int? BosId => NullIfMissing(Processor.BosId);

    /// <inheritdoc/>
    public override int? EosId => NullIfMissing(Processor.EosId);

    /// <inheritdoc/>
    public override int? UnknownId => NullIfMissing(Processor.UnknownId);

    /// <inheritdoc/>
    public override int? PadId => NullIfMissing(Processor.PadId);

    /// <summary>Loads a <c>.model</c> file.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid SentencePiece model; the message names it.</exception>
    public static SentencePieceModelTokenizer Load(string path) => new(SentencePieceProcessor.Load(path));

    /// <summary>SentencePiece's ids; with <paramref name="addSpecialTokens"/> the BOS id (when the model has one) goes first, as Llama's tokenizers add it.</summary>
    public override int[] Encode(string text, bool addSpecialTokens)
    {
        int[] ids = Processor.Encode(text);
        return addSpecialTokens && BosId is int bos ? [bos, .. ids] : ids;
    }

    /// <summary>SentencePiece's decoding, which never writes control pieces (BOS/EOS/PAD), whatever <paramref name="skipSpecialTokens"/> says.</summary>
    public override string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false) => Processor.Decode(ids);

    /// <inheritdoc/>
    public override int? TokenToId(string token)
    {
        int id = Processor.PieceToId(token);
        return id == Processor.UnknownId && token != Processor.IdToPiece(id) ? null : id;
    }

    /// <inheritdoc/>
    public override string? IdToToken(int id) => (uint)id < (uint)Processor.VocabularySize ? Processor.IdToPiece(id) : null;

    private static int? NullIfMissing(int id) => id < 0 ? null : id;
}
