using System.Text.Json;
using System.Text.Json.Nodes;

namespace ModelSurgery.Inference.Configuration;

/// <summary>Reads and writes <c>generation_config.json</c>, keeping keys this library does not use.</summary>
public static class GenerationConfigFile
{
    /// <summary>The file name inside a checkpoint folder.</summary>
    public const string FileName = "generation_config.json";

    /// <summary>
    /// Writes <c>generation_config.json</c> for <paramref name="config"/> into <paramref name="directory"/>: the special token
    /// ids come from the config; other keys come from <paramref name="template"/> (an existing file's object) when given.
    /// </summary>
    public static void Write(string directory, LlamaConfig config, JsonObject? template = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        var root = template?.DeepClone().AsObject() ?? [];
        root["bos_token_id"] = config.BosTokenId;
        root["eos_token_id"] = config.EosTokenIds.Count switch
        {
            0 => null,
            1 => JsonValue.Create(config.EosTokenIds[0]),
            _ => new JsonArray([.. config.EosTokenIds.Select(id => (JsonNode?)JsonValue.Create(id))]),
        };
        if (config.PadTokenId is int pad)
        {
            root["pad_token_id"] = pad;
        }

        IO.AtomicFile.WriteAllText(Path.Combine(directory, FileName), root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>Reads the file in <paramref name="directory"/>, or null when there is none.</summary>
    /// <exception cref="InvalidDataException">The file is not a JSON object; the message names it.</exception>
    public static JsonObject? TryRead(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: expected a JSON object.");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path}: invalid JSON ({ex.Message}).", ex);
        }
    }
}
