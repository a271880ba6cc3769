namespace ModelSurgery.Inference.Tokenization;

/// <summary>
/// A tokenizer as this library uses it: text to ids and back, with the vocabulary's size, token lookups and the
/// special tokens a model needs. <see cref="TokenizerFiles.Load"/> returns one for every supported file format;
/// implementations are immutable and safe for concurrent use.
/// </summary>
public abstract class ModelTokenizer
{
    /// <summary>
    /// One more than the largest id the tokenizer can produce or decode (vocabulary plus added/special tokens).
    /// </summary>
    public abstract int VocabularySize { get; }

    /// <summary>The beginning-of-sequence id, or null when the tokenizer has none.</summary>
    public virtual int? BosId => null;

    /// <summary>The end-of-sequence id, or null when the tokenizer has none.</summary>
    public virtual int? EosId => null;

    /// <summary>The unknown-token id, or null when the tokenizer has none.</summary>
    public virtual int? UnknownId => null;

    /// <summary>The padding id, or null when the tokenizer has none.</summary>
    public virtual int? PadId => null;

    /// <summary>The ids of <paramref name="text"/> without the special tokens a post-processor would add.</summary>
    public int[] Encode(string text) => Encode(text, addSpecialTokens: false);

    /// <summary>
    /// The ids of <paramref name="text"/>; with <paramref name="addSpecialTokens"/> the file's post-processor adds its
    /// special tokens (BOS and the like), as Hugging Face's <c>add_special_tokens=True</c> does.
    /// </summary>
    public abstract int[] Encode(string text, bool addSpecialTokens);

    /// <summary>The text of <paramref name="ids"/>; special tokens are written out unless <paramref name="skipSpecialTokens"/>.</summary>
    public abstract string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false);

    /// <summary>The id of a token spelled as in the vocabulary, or null when there is none.</summary>
    public abstract int? TokenToId(string token);

    /// <summary>The vocabulary spelling of <paramref name="id"/>, or null when the id is unused.</summary>
    public abstract string? IdToToken(int id);

    /// <summary>How many ids <paramref name="text"/> encodes to (no post-processor specials).</summary>
    public int CountTokens(string text) => Encode(text).Length;
}
