using System.Text;
using System.Text.Json;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.IO;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;

namespace ModelSurgery.Samples;

/// <summary>
/// A JSON-lines corpus split by document into a training file and a held-out file: every
/// <c>holdOutEvery</c>-th document (the last of each group) is held out, so both parts sample the whole corpus.
/// </summary>
/// <param name="TrainPath">The training documents (JSON lines, same objects as the source).</param>
/// <param name="HeldOutPath">The held-out documents.</param>
/// <param name="TrainDocuments">Documents in <paramref name="TrainPath"/>.</param>
/// <param name="HeldOutDocuments">Documents in <paramref name="HeldOutPath"/>.</param>
/// <param name="TrainTextBytes">UTF-8 bytes of the training documents' text field (what bits per byte and equal-bytes budgets count).</param>
public sealed record CorpusSplit(string TrainPath, string HeldOutPath, int TrainDocuments, int HeldOutDocuments, long TrainTextBytes)
{
    /// <summary>Splits <paramref name="corpusPath"/> into <c>train.jsonl</c> and <c>heldout.jsonl</c> in <paramref name="outputDirectory"/>.</summary>
    /// <param name="corpusPath">JSON lines, one document per line; blank lines are skipped.</param>
    /// <param name="outputDirectory">Where the two files are written (created if needed; atomically).</param>
    /// <param name="holdOutEvery">Every this many documents, the last one is held out (at least 2).</param>
    /// <param name="maxDocuments">Use only the first this many documents; null for all.</param>
    /// <param name="field">The JSON string field holding the text.</param>
    /// <returns>The split.</returns>
    /// <exception cref="FileNotFoundException">The corpus is missing.</exception>
    /// <exception cref="InvalidDataException">A line is not a JSON object with the text field, or nothing is left for one of the parts.</exception>
    public static CorpusSplit Create(string corpusPath, string outputDirectory, int holdOutEvery = 10, int? maxDocuments = null, string field = "text")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(corpusPath);
        ArgumentException.ThrowIfNullOrWhiteSpace(outputDirectory);
        ArgumentOutOfRangeException.ThrowIfLessThan(holdOutEvery, 2);
        if (maxDocuments is < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(maxDocuments), $"maxDocuments must be positive; got {maxDocuments}.");
        }

        if (!File.Exists(corpusPath))
        {
            throw new FileNotFoundException($"{corpusPath}: corpus not found.", corpusPath);
        }

        string[] lines = [.. File.ReadLines(corpusPath).Where(l => !string.IsNullOrWhiteSpace(l)).Take(maxDocuments ?? int.MaxValue)];
        var train = new List<string>();
        var heldOut = new List<string>();
        long trainBytes = 0;
        for (int i = 0; i < lines.Length; i++)
        {
            string text = TextOf(lines[i], field, corpusPath, i + 1);
            if (i % holdOutEvery == holdOutEvery - 1)
            {
                heldOut.Add(lines[i]);
            }
            else
            {
                train.Add(lines[i]);
                trainBytes += Encoding.UTF8.GetByteCount(text);
            }
        }

        if (train.Count == 0 || heldOut.Count == 0)
        {
            throw new InvalidDataException($"{corpusPath}: {lines.Length} documents leave {train.Count} for training and {heldOut.Count} held out (one in {holdOutEvery}); both need at least one.");
        }

        Directory.CreateDirectory(outputDirectory);
        string trainPath = Path.Combine(outputDirectory, "train.jsonl");
        string heldOutPath = Path.Combine(outputDirectory, "heldout.jsonl");
        AtomicFile.WriteAllText(trainPath, string.Join('\n', train) + "\n");
        AtomicFile.WriteAllText(heldOutPath, string.Join('\n', heldOut) + "\n");
        return new CorpusSplit(trainPath, heldOutPath, train.Count, heldOut.Count, trainBytes);
    }

    /// <summary>Writes the first <paramref name="count"/> non-blank lines of a JSON-lines file to <paramref name="destination"/> (atomically), e.g. an evaluation subset.</summary>
    /// <param name="source">JSON lines.</param>
    /// <param name="destination">The file to write.</param>
    /// <param name="count">Documents to keep (fewer when the source is shorter).</param>
    /// <returns>Documents written.</returns>
    public static int WriteFirstDocuments(string source, string destination, int count)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(source);
        ArgumentException.ThrowIfNullOrWhiteSpace(destination);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        if (!File.Exists(source))
        {
            throw new FileNotFoundException($"{source}: documents not found.", source);
        }

        string[] kept = [.. File.ReadLines(source).Where(l => !string.IsNullOrWhiteSpace(l)).Take(count)];
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(destination))!);
        AtomicFile.WriteAllText(destination, string.Join('\n', kept) + "\n");
        return kept.Length;
    }

    private static string TextOf(string line, string field, string path, int lineNumber)
    {
        try
        {
            using var document = JsonDocument.Parse(line);
            return document.RootElement.ValueKind == JsonValueKind.Object
                && document.RootElement.TryGetProperty(field, out JsonElement value)
                && value.ValueKind == JsonValueKind.String
                ? value.GetString()!
                : throw new InvalidDataException($"{path}:{lineNumber}: expected a JSON object with a string field '{field}'.");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path}:{lineNumber}: not valid JSON ({ex.Message}).", ex);
        }
    }
}

/// <summary>How <see cref="PreparedCorpus.PrepareAsync"/> compresses the vocabulary and cuts windows.</summary>
public sealed record CorpusPreparationOptions
{
    /// <summary>Tokens kept from the base vocabulary (the most frequent in the training part, with their merge closure).</summary>
    public required int VocabSize { get; init; }

    /// <summary>Inputs per training window (T); windows are cut every T tokens.</summary>
    public required int SeqLen { get; init; }

    /// <summary>The base tokenizer: a built-in name (<c>gpt2</c>) or a tokenizer file or folder.</summary>
    public string BaseTokenizer { get; init; } = "gpt2";

    /// <summary>The base tokenizer's id of the document separator (GPT-2's <c>&lt;|endoftext|&gt;</c> is 50256); it must survive compression.</summary>
    public int SeparatorBaseId { get; init; } = 50256;

    /// <summary>The JSON string field holding the text.</summary>
    public string Field { get; init; } = "text";

    /// <summary>Training tokens read into <see cref="PreparedCorpus.TrainSample"/> (calibration data for scoring).</summary>
    public int SampleTokens { get; init; } = 32_768;

    /// <summary>Throws when an option is out of range; the message names it.</summary>
    public void Validate()
    {
        if (VocabSize < 2)
        {
            throw new ArgumentException($"CorpusPreparationOptions.VocabSize must be at least 2; got {VocabSize}.", nameof(VocabSize));
        }

        if (SeqLen < 1)
        {
            throw new ArgumentException($"CorpusPreparationOptions.SeqLen must be positive; got {SeqLen}.", nameof(SeqLen));
        }

        if (SampleTokens < 1)
        {
            throw new ArgumentException($"CorpusPreparationOptions.SampleTokens must be positive; got {SampleTokens}.", nameof(SampleTokens));
        }

        ArgumentException.ThrowIfNullOrWhiteSpace(BaseTokenizer, nameof(BaseTokenizer));
        ArgumentException.ThrowIfNullOrWhiteSpace(Field, nameof(Field));
    }
}

/// <summary>
/// A corpus ready for training with a compressed vocabulary: the compressed tokenizer, one token file holding the
/// training documents followed by the held-out ones (its description, <c>corpus.tokens.json</c>, records where the held-out
/// part starts), and the windows of each part (no window straddles the boundary).
/// Owns the token file; dispose it when done.
/// </summary>
public sealed class PreparedCorpus : IDisposable
{
    private PreparedCorpus(
        CorpusSplit split, CompressionResult compression, ModelTokenizer tokenizer, int separatorId, TokenFile tokens, long trainTokens,
        IReadOnlyList<long> trainWindows, IReadOnlyList<long> validationWindows, int seqLen, int[] trainSample)
    {
        Split = split;
        Compression = compression;
        Tokenizer = tokenizer;
        SeparatorId = separatorId;
        Tokens = tokens;
        TrainTokens = trainTokens;
        TrainWindows = trainWindows;
        ValidationWindows = validationWindows;
        SeqLen = seqLen;
        TrainSample = trainSample;
    }

    /// <summary>The document split this corpus was made from.</summary>
    public CorpusSplit Split { get; }

    /// <summary>The compressed tokenizer's files and id map.</summary>
    public CompressionResult Compression { get; }

    /// <summary>Old (base) to new ids.</summary>
    public VocabularyMap Map => Compression.Map;

    /// <summary>The compressed tokenizer.</summary>
    public ModelTokenizer Tokenizer { get; }

    /// <summary>The new id of the document separator (also the BOS/EOS id of models trained on it).</summary>
    public int SeparatorId { get; }

    /// <summary>Training then held-out tokens.</summary>
    public TokenFile Tokens { get; }

    /// <summary>Tokens of the training part (the held-out part starts here).</summary>
    public long TrainTokens { get; }

    /// <summary>Training tokens per UTF-8 byte of training text: how much a budget in bytes costs in tokens with this vocabulary.</summary>
    public double TokensPerByte => (double)TrainTokens / Split.TrainTextBytes;

    /// <summary>Windows entirely inside the training part.</summary>
    public IReadOnlyList<long> TrainWindows { get; }

    /// <summary>Windows entirely inside the held-out part.</summary>
    public IReadOnlyList<long> ValidationWindows { get; }

    /// <summary>Inputs per window.</summary>
    public int SeqLen { get; }

    /// <summary>The first training tokens (calibration data for scoring).</summary>
    public IReadOnlyList<int> TrainSample { get; }

    /// <summary>
    /// The config of a model trained from scratch on this corpus: float32 Llama with tied embeddings, this corpus's
    /// vocabulary, a context of <see cref="SeqLen"/>, and the separator as BOS and EOS (head size hidden / heads).
    /// </summary>
    /// <param name="layers">Decoder layers.</param>
    /// <param name="hidden">Hidden size.</param>
    /// <param name="heads">Query heads.</param>
    /// <param name="kvHeads">Key/value heads.</param>
    /// <param name="ffn">MLP width.</param>
    /// <returns>The config.</returns>
    public LlamaConfig ModelConfig(int layers, int hidden, int heads, int kvHeads, int ffn) => new()
    {
        VocabSize = Map.NewVocabSize,
        HiddenSize = hidden,
        IntermediateSize = ffn,
        NumHiddenLayers = layers,
        NumAttentionHeads = heads,
        NumKeyValueHeads = kvHeads,
        MaxPositionEmbeddings = SeqLen,
        RmsNormEps = 1e-5,
        TieWordEmbeddings = true,
        BosTokenId = SeparatorId,
        EosTokenIds = [SeparatorId],
        TorchDtype = "float32",
    };

    /// <summary>The trainer's view: this token file, its training and validation windows.</summary>
    public TrainingData TrainingData(bool shuffle = true) => new(Tokens, TrainWindows, ValidationWindows, shuffle);

    /// <summary>
    /// Compresses the base tokenizer to <see cref="CorpusPreparationOptions.VocabSize"/> tokens by their frequency in the
    /// training part and tokenizes both parts into <c>corpus.tokens</c>. Writes the tokenizer to <c>tokenizer/</c> in
    /// <paramref name="outputDirectory"/>.
    /// </summary>
    /// <param name="split">The documents.</param>
    /// <param name="statistics">Base-tokenizer counts over <see cref="CorpusSplit.TrainPath"/> (see <see cref="CountTokensAsync"/>); reuse them across vocabulary sizes.</param>
    /// <param name="options">Vocabulary size, window length, base tokenizer.</param>
    /// <param name="outputDirectory">Where the tokenizer and token files go.</param>
    /// <param name="cancellationToken">Cancels the work.</param>
    /// <returns>The corpus; dispose it.</returns>
    /// <exception cref="InvalidDataException">The separator did not survive compression, or a part has no complete window.</exception>
    public static async Task<PreparedCorpus> PrepareAsync(
        CorpusSplit split, VocabularyStatistics statistics, CorpusPreparationOptions options, string outputDirectory, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(split);
        ArgumentNullException.ThrowIfNull(statistics);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrWhiteSpace(outputDirectory);
        options.Validate();
        Directory.CreateDirectory(outputDirectory);
        CompressionResult compressed = await VocabularyCompressor.CompressAsync(
            options.BaseTokenizer, statistics, CompressionTarget.Keep(options.VocabSize), Path.Combine(outputDirectory, "tokenizer"),
            cancellationToken: cancellationToken).ConfigureAwait(false);
        ModelTokenizer tokenizer = TokenizerFiles.Load(compressed.TokenizerPath);
        int separator = compressed.Map.NewId(options.SeparatorBaseId)
            ?? throw new InvalidDataException($"{compressed.MapPath}: the separator (base id {options.SeparatorBaseId}) was not kept.");

        // Both parts in one file, training first; the held-out part tokenized alone tells where it starts.
        var tokenizeOptions = new TokenizeOptions(compressed.Map.NewVocabSize, separator, options.Field);
        string tokensPath = Path.Combine(outputDirectory, "corpus.tokens");
        TokenizeResult all = await Tokenization.TokenizeAsync(tokenizer, [split.TrainPath, split.HeldOutPath], tokensPath, tokenizeOptions, cancellationToken: cancellationToken).ConfigureAwait(false);
        TokenizeResult heldOut = await Tokenization.TokenizeAsync(tokenizer, [split.HeldOutPath], Path.Combine(outputDirectory, "heldout.tokens"), tokenizeOptions, cancellationToken: cancellationToken).ConfigureAwait(false);
        long boundary = all.Tokens - heldOut.Tokens;
        if (boundary <= 0 || boundary >= all.Tokens)
        {
            throw new InvalidDataException($"{tokensPath}: {all.Tokens} tokens of which {boundary} training; both parts need tokens.");
        }

        // The description records the split, so that a run reading the token file (CheckpointTraining, StudentPipeline)
        // trains and validates on exactly these windows.
        new TokenFileInfo
        {
            Tokens = all.Tokens,
            Documents = all.Documents,
            VocabSize = compressed.Map.NewVocabSize,
            SeparatorId = separator,
            ValidationStartToken = boundary,
            Tokenizer = compressed.TokenizerPath,
        }.Save(tokensPath);
        var file = TokenFile.Open(tokensPath);
        DatasetSplit windows = DatasetSplit.AtToken(all.Tokens, boundary, options.SeqLen);
        if (windows.Train.Count == 0 || windows.Validation.Count == 0)
        {
            file.Dispose();
            throw new InvalidDataException($"{tokensPath}: {all.Tokens} tokens ({boundary} training) give {windows.Train.Count} training and {windows.Validation.Count} held-out windows of {options.SeqLen}; both need at least one.");
        }

        int[] sample = [.. file.Read(0, (int)Math.Min(boundary, options.SampleTokens)).Select(t => (int)t)];
        return new PreparedCorpus(split, compressed, tokenizer, separator, file, boundary, windows.Train, windows.Validation, options.SeqLen, sample);
    }

    /// <summary>Counts the base tokenizer's tokens over the training part (the input of <see cref="PrepareAsync"/>).</summary>
    /// <param name="split">The documents.</param>
    /// <param name="baseTokenizer">A built-in name (<c>gpt2</c>) or a tokenizer file or folder.</param>
    /// <param name="field">The JSON string field holding the text.</param>
    /// <param name="cancellationToken">Cancels the work.</param>
    /// <returns>Counts indexed by base id.</returns>
    public static Task<VocabularyStatistics> CountTokensAsync(CorpusSplit split, string baseTokenizer = "gpt2", string field = "text", CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(split);
        ModelTokenizer tokenizer = TokenizerFiles.Load(baseTokenizer);
        return TokenFrequencyCounter.ComputeAsync(
            tokenizer, [split.TrainPath], field, new CountingOptions { TokenizerName = baseTokenizer, VocabSize = tokenizer.VocabularySize },
            cancellationToken: cancellationToken);
    }

    /// <inheritdoc />
    public void Dispose() => Tokens.Dispose();
}
