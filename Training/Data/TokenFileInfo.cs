using System.Text.Json;
using System.Text.Json.Serialization;

namespace ModelSurgery.Training.Data;

/// <summary>
/// The description written next to a token file as <c>&lt;tokens&gt;.json</c>: what produced it and how it is split
/// into training and validation windows, so that every later command (train, distill, cache-teacher) uses the same
/// split without repeating the options.
/// </summary>
public sealed record TokenFileInfo
{
    /// <summary>Tokens in the file, separators included.</summary>
    [JsonPropertyName("tokens")]
    public required long Tokens { get; init; }

    /// <summary>Documents in the file.</summary>
    [JsonPropertyName("documents")]
    public long Documents { get; init; }

    /// <summary>Vocabulary size of the tokenizer (every id is below it).</summary>
    [JsonPropertyName("vocab_size")]
    public required int VocabSize { get; init; }

    /// <summary>The document separator id.</summary>
    [JsonPropertyName("separator_id")]
    public required int SeparatorId { get; init; }

    /// <summary>Share of windows held out for validation (see <see cref="DatasetSplit.ByChunk"/>).</summary>
    [JsonPropertyName("val_fraction")]
    public double ValidationFraction { get; init; }

    /// <summary>
    /// The first token of a held-out part at the end of the file: validation is every window from this token on, training
    /// every window that ends before it (see <see cref="DatasetSplit.AtToken"/>); null splits by
    /// <see cref="ValidationFraction"/>. A file gives one or the other, so that held-out documents stay out of training.
    /// </summary>
    [JsonPropertyName("val_start_token")]
    public long? ValidationStartToken { get; init; }

    /// <summary>Seed of the train/validation split.</summary>
    [JsonPropertyName("split_seed")]
    public ulong SplitSeed { get; init; } = DefaultSplitSeed;

    /// <summary>The tokenizer the file was made with, as given on the command line; informational.</summary>
    [JsonPropertyName("tokenizer")]
    public string? Tokenizer { get; init; }

    /// <summary>Split seed used when none is recorded.</summary>
    public const ulong DefaultSplitSeed = 1234;

    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };

    /// <summary>The description path of a token file: the file name with <c>.json</c> appended.</summary>
    /// <param name="tokenFilePath">The token file.</param>
    /// <returns><c>tokenFilePath + ".json"</c>.</returns>
    public static string PathFor(string tokenFilePath)
    {
        ArgumentException.ThrowIfNullOrEmpty(tokenFilePath);
        return tokenFilePath + ".json";
    }

    /// <summary>Writes the description of <paramref name="tokenFilePath"/> atomically.</summary>
    /// <param name="tokenFilePath">The token file it describes.</param>
    public void Save(string tokenFilePath)
    {
        string path = Path.GetFullPath(PathFor(tokenFilePath));
        string temp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllText(temp, JsonSerializer.Serialize(this, JsonOptions));
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }

    /// <summary>Reads the description of a token file, or null when there is none.</summary>
    /// <param name="tokenFilePath">The token file.</param>
    /// <returns>The description, or null.</returns>
    /// <exception cref="InvalidDataException">The description exists but is not valid.</exception>
    public static TokenFileInfo? TryLoad(string tokenFilePath)
    {
        string path = PathFor(tokenFilePath);
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            TokenFileInfo info = JsonSerializer.Deserialize<TokenFileInfo>(File.ReadAllText(path), JsonOptions)
                ?? throw new InvalidDataException($"Token file description '{path}' is empty.");
            if (!(info.ValidationFraction >= 0 && info.ValidationFraction < 1) || info.VocabSize <= 0)
            {
                throw new InvalidDataException($"Token file description '{path}': val_fraction must be in [0, 1) and vocab_size positive.");
            }

            if (info.ValidationStartToken is long start)
            {
                if (info.ValidationFraction > 0)
                {
                    throw new InvalidDataException($"Token file description '{path}': val_start_token and val_fraction both set; give one split (val_fraction 0 with val_start_token).");
                }

                if (start <= 0 || start >= info.Tokens)
                {
                    throw new InvalidDataException($"Token file description '{path}': val_start_token must be inside the file's {info.Tokens} tokens (1 to {info.Tokens - 1}); got {start}.");
                }
            }

            return info;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Token file description '{path}' is not valid JSON: {e.Message}", e);
        }
    }
}
