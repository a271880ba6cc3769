using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.IO;

namespace ModelSurgery.Inference.Tokenization;

/// <summary>
/// Puts a tokenizer beside the weights of a model folder, so every folder the library writes can be used with text
/// right away (tokenize, generate, evaluate). The tokenizer's files are copied as they are; a tiktoken vocabulary, which
/// Hugging Face tools do not read from a model folder, is written as the equivalent byte-level <c>tokenizer.json</c>.
/// A <c>tokenizer_config.json</c> naming the special tokens is written when the source has none.
/// </summary>
public static class ModelFolderTokenizer
{
    /// <summary>The tokenizer files of a Hugging Face model folder, copied when present.</summary>
    public static IReadOnlyList<string> FileNames { get; } =
    [
        "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
        "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt",
    ];

    private const string ConfigFileName = "tokenizer_config.json";

    /// <summary>
    /// Copies the tokenizer at <paramref name="source"/> into <paramref name="modelDirectory"/>: a model or tokenizer
    /// folder (its <see cref="FileNames"/>, or its single <c>.tiktoken</c> file), a <c>tokenizer.json</c> or SentencePiece
    /// <c>.model</c> file (with the companion files of its folder), a <c>.tiktoken</c> file, or <c>gpt2</c> (built in).
    /// </summary>
    /// <param name="source">Where the tokenizer is.</param>
    /// <param name="modelDirectory">The model folder to write into (created if needed).</param>
    /// <param name="config">The model's config, whose BOS/EOS ids name the special tokens of a written tokenizer_config.json; optional.</param>
    /// <returns>True when the folder now holds a tokenizer the library loads; false when <paramref name="source"/> held none.</returns>
    /// <exception cref="InvalidDataException">A tokenizer file is malformed; the message names it.</exception>
    public static bool CopyInto(string source, string modelDirectory, LlamaConfig? config = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(source);
        ArgumentException.ThrowIfNullOrWhiteSpace(modelDirectory);
        Directory.CreateDirectory(modelDirectory);
        if (Directory.Exists(source))
        {
            if (!SameFolder(source, modelDirectory))
            {
                CopyCompanions(source, modelDirectory, except: null);
            }

            if (!TokenizerFiles.IsInFolder(source) && Directory.GetFiles(source, "*.tiktoken") is [string single])
            {
                WriteFromTiktoken(TiktokenVocabulary.Load(single), modelDirectory);
            }
        }
        else if (string.Equals(source, TiktokenVocabulary.Gpt2Name, StringComparison.OrdinalIgnoreCase) && !File.Exists(source))
        {
            WriteFromTiktoken(TiktokenVocabulary.LoadGpt2(), modelDirectory);
        }
        else if (File.Exists(source))
        {
            switch (Path.GetExtension(source).ToLowerInvariant())
            {
                case ".tiktoken":
                    WriteFromTiktoken(TiktokenVocabulary.Load(source), modelDirectory);
                    break;
                case ".json":
                    CopyFile(source, Path.Combine(modelDirectory, "tokenizer.json"));
                    CopyCompanions(Path.GetDirectoryName(Path.GetFullPath(source))!, modelDirectory, except: "tokenizer.json");
                    break;
                case ".model":
                    CopyFile(source, Path.Combine(modelDirectory, "tokenizer.model"));
                    CopyCompanions(Path.GetDirectoryName(Path.GetFullPath(source))!, modelDirectory, except: "tokenizer.model");
                    break;
                default:
                    return false;
            }
        }
        else
        {
            return false;
        }

        EnsureConfig(modelDirectory, config);
        return TokenizerFiles.IsInFolder(modelDirectory);
    }

    /// <summary>
    /// Writes a <c>tokenizer_config.json</c> into <paramref name="modelDirectory"/> when it has a <c>tokenizer.json</c>
    /// but no config: the special tokens of tokenizer.json as <c>added_tokens_decoder</c>, and the tokens of the model's
    /// BOS and first EOS id as <c>bos_token</c> / <c>eos_token</c>. An existing config is left alone.
    /// </summary>
    /// <param name="modelDirectory">The model folder.</param>
    /// <param name="config">The model's config; optional.</param>
    public static void EnsureConfig(string modelDirectory, LlamaConfig? config = null)
    {
        string json = Path.Combine(modelDirectory, "tokenizer.json");
        string target = Path.Combine(modelDirectory, ConfigFileName);
        if (File.Exists(target) || !File.Exists(json))
        {
            return;
        }

        // Read as plain JSON: any tokenizer.json (BPE, Unigram, WordPiece) gets its config; one that is not JSON is left as it is.
        JsonObject? tokenizer;
        try
        {
            tokenizer = JsonNode.Parse(File.ReadAllText(json)) as JsonObject;
        }
        catch (JsonException)
        {
            return;
        }

        if (tokenizer is null)
        {
            return;
        }

        var tokens = new Dictionary<int, string>();
        if (tokenizer["model"]?["vocab"] is JsonObject vocab)
        {
            foreach ((string token, JsonNode? id) in vocab)
            {
                if (id is JsonValue value && value.TryGetValue(out int number))
                {
                    tokens[number] = token;
                }
            }
        }

        var decoder = new JsonObject();
        foreach (JsonObject added in (tokenizer["added_tokens"] as JsonArray ?? []).OfType<JsonObject>().OrderBy(t => (int?)t["id"] ?? -1))
        {
            if ((int?)added["id"] is not int id || (string?)added["content"] is not string content)
            {
                continue;
            }

            tokens[id] = content;
            decoder[id.ToString(CultureInfo.InvariantCulture)] = new JsonObject
            {
                ["content"] = content, ["lstrip"] = false, ["normalized"] = false, ["rstrip"] = false,
                ["single_word"] = false, ["special"] = (bool?)added["special"] ?? false,
            };
        }

        var root = new JsonObject
        {
            ["added_tokens_decoder"] = decoder,
            ["clean_up_tokenization_spaces"] = false,
            ["tokenizer_class"] = "PreTrainedTokenizerFast",
        };
        if (config is not null)
        {
            root["model_max_length"] = config.MaxPositionEmbeddings;
            if (config.BosTokenId is int bos && tokens.TryGetValue(bos, out string? bosText))
            {
                root["bos_token"] = bosText;
            }

            if (config.EosTokenIds.Count > 0 && tokens.TryGetValue(config.EosTokenIds[0], out string? eosText))
            {
                root["eos_token"] = eosText;
            }
        }

        AtomicFile.WriteAllText(target, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
    }

    private static void WriteFromTiktoken(TiktokenVocabulary vocabulary, string modelDirectory)
    {
        HuggingFaceTokenizerJson.FromTiktoken(vocabulary).Save(Path.Combine(modelDirectory, "tokenizer.json"));

        // A config copied along would describe another tokenizer; the written one gets its own.
        string stale = Path.Combine(modelDirectory, ConfigFileName);
        if (File.Exists(stale))
        {
            File.Delete(stale);
        }
    }

    private static void CopyCompanions(string sourceDirectory, string modelDirectory, string? except)
    {
        if (SameFolder(sourceDirectory, modelDirectory))
        {
            return;
        }

        foreach (string name in FileNames)
        {
            string file = Path.Combine(sourceDirectory, name);
            if (name != except && File.Exists(file))
            {
                CopyFile(file, Path.Combine(modelDirectory, name));
            }
        }
    }

    private static void CopyFile(string source, string destination)
    {
        if (Path.GetFullPath(source) != Path.GetFullPath(destination))
        {
            // Under a temporary name first, so a reader never sees a half-copied file.
            AtomicFile.Copy(source, destination);
        }
    }

    private static bool SameFolder(string a, string b) =>
        Path.TrimEndingDirectorySeparator(Path.GetFullPath(a)) == Path.TrimEndingDirectorySeparator(Path.GetFullPath(b));
}
