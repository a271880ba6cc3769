using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace ModelSurgery.Training.Recipes;

/// <summary>
/// Reads a recipe file as a JSON tree: JSON (<c>.json</c>) or YAML (<c>.yaml</c>, <c>.yml</c>), then applies
/// command-line overrides written <c>section.key=value</c> (as torchtune and mergekit users write them).
/// </summary>
public static class RecipeFile
{
    /// <summary>Reads <paramref name="path"/> and applies <paramref name="overrides"/> in order.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not valid JSON or YAML, or an override is malformed; the message names the file or the override.</exception>
    public static JsonObject Read(string path, IEnumerable<string>? overrides = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: recipe file not found.", path);
        }

        string text = File.ReadAllText(path);
        JsonObject root = IsYaml(path) ? FromYaml(text, path) : ParseJson(text, path);
        foreach (string assignment in overrides ?? [])
        {
            Apply(root, assignment);
        }

        return root;
    }

    /// <summary>Whether the file is read as YAML (by its extension).</summary>
    public static bool IsYaml(string path) =>
        Path.GetExtension(path).ToLowerInvariant() is ".yaml" or ".yml";

    /// <summary>
    /// Sets one value: <c>distillation.steps=200</c>, <c>plan.layer_selection=top-scores</c>,
    /// <c>data.corpus=["a.jsonl","b.jsonl"]</c>, <c>data.corpus.0=a.jsonl</c>. The value is read as JSON when it is JSON
    /// (a number, true, false, null, a list or an object) and as a string otherwise; missing sections are created.
    /// </summary>
    /// <exception cref="InvalidDataException">The override is not <c>key=value</c>, or its path runs through a value that is not a section or a list.</exception>
    public static void Apply(JsonObject root, string assignment)
    {
        ArgumentNullException.ThrowIfNull(root);
        int equals = assignment?.IndexOf('=', StringComparison.Ordinal) ?? -1;
        if (equals <= 0)
        {
            throw new InvalidDataException($"override '{assignment}': write it as key=value, e.g. distillation.steps=200.");
        }

        string key = assignment![..equals].Trim();
        string[] path = key.Split('.');
        if (path.Any(string.IsNullOrWhiteSpace))
        {
            throw new InvalidDataException($"override '{assignment}': '{key}' has an empty part.");
        }

        JsonNode node = root;
        for (int i = 0; i < path.Length; i++)
        {
            bool last = i == path.Length - 1;
            string part = path[i];
            string at = string.Join('.', path[..(i + 1)]);
            switch (node)
            {
                case JsonObject section when last:
                    section[part] = ParseValue(assignment[(equals + 1)..]);
                    break;
                case JsonObject section:
                    node = section[part] ??= new JsonObject();
                    break;
                case JsonArray list when int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int index) && index < list.Count:
                    if (last)
                    {
                        list[index] = ParseValue(assignment[(equals + 1)..]);
                    }
                    else
                    {
                        node = list[index] ?? throw new InvalidDataException($"override '{assignment}': {at} is null.");
                    }

                    break;
                case JsonArray list:
                    throw new InvalidDataException($"override '{assignment}': {string.Join('.', path[..i])} is a list of {list.Count}; '{part}' is not an index in it.");
                default:
                    throw new InvalidDataException($"override '{assignment}': {string.Join('.', path[..i])} is a value, not a section.");
            }
        }
    }

    private static JsonNode? ParseValue(string text)
    {
        string trimmed = text.Trim();
        try
        {
            return JsonNode.Parse(trimmed);
        }
        catch (JsonException)
        {
            return JsonValue.Create(trimmed);
        }
    }

    /// <summary>Recipe JSON (comments and trailing commas allowed) as a tree; errors name <paramref name="path"/> and the line.</summary>
    internal static JsonObject ParseJson(string text, string path)
    {
        try
        {
            return JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }) as JsonObject
                ?? throw new InvalidDataException($"{path}: a recipe is a JSON object ({{ \"teacher\": ..., \"plan\": ... }}).");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path}: not valid JSON at line {ex.LineNumber + 1}: {ex.Message.Split(" Path:")[0]}", ex);
        }
    }

    private static JsonObject FromYaml(string text, string path)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException ex)
        {
            throw new InvalidDataException($"{path}: not valid YAML at line {ex.Start.Line}: {ex.Message}", ex);
        }

        if (stream.Documents.Count != 1 || ToJson(stream.Documents[0].RootNode, path) is not JsonObject root)
        {
            throw new InvalidDataException($"{path}: a recipe is one YAML mapping (teacher: ..., plan: ...).");
        }

        return root;
    }

    /// <summary>YAML to JSON with YAML 1.2's core schema for plain scalars: null, booleans, integers and floats; quoted scalars stay strings.</summary>
    private static JsonNode? ToJson(YamlNode node, string path) => node switch
    {
        YamlMappingNode map => new JsonObject(map.Children.Select(kv => KeyValuePair.Create(
            (kv.Key as YamlScalarNode)?.Value ?? throw new InvalidDataException($"{path}: line {kv.Key.Start.Line}: keys must be plain names."),
            ToJson(kv.Value, path)))),
        YamlSequenceNode list => new JsonArray([.. list.Children.Select(c => ToJson(c, path))]),
        YamlScalarNode { Style: ScalarStyle.Plain } scalar => Plain(scalar.Value ?? string.Empty),
        YamlScalarNode scalar => JsonValue.Create(scalar.Value),
        _ => throw new InvalidDataException($"{path}: line {node.Start.Line}: aliases and tags are not supported in recipes."),
    };

    private static JsonValue? Plain(string value)
    {
        switch (value)
        {
            case "" or "~" or "null" or "Null" or "NULL":
                return null;
            case "true" or "True" or "TRUE":
                return JsonValue.Create(true);
            case "false" or "False" or "FALSE":
                return JsonValue.Create(false);
        }

        if (long.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long integer))
        {
            return JsonValue.Create(integer);
        }

        if (double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double number) && double.IsFinite(number))
        {
            return JsonValue.Create(number);
        }

        return JsonValue.Create(value);
    }
}
