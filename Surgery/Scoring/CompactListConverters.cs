using System.Text.Json;
using System.Text.Json.Serialization;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>Writes a list of numbers on one line inside an indented document (index sets and score vectors stay readable).</summary>
internal sealed class OneLineDoubleListConverter : JsonConverter<IReadOnlyList<double>>
{
    public override IReadOnlyList<double> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        JsonSerializer.Deserialize<double[]>(ref reader, options) ?? throw new JsonException("Expected an array of numbers, got null.");

    public override void Write(Utf8JsonWriter writer, IReadOnlyList<double> value, JsonSerializerOptions options) =>
        writer.WriteRawValue(JsonSerializer.Serialize(value, CompactJson.NamedFloats));
}

/// <summary>Writes a list of integers on one line inside an indented document.</summary>
internal sealed class OneLineIntListConverter : JsonConverter<IReadOnlyList<int>>
{
    public override IReadOnlyList<int> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        JsonSerializer.Deserialize<int[]>(ref reader, options) ?? throw new JsonException("Expected an array of integers, got null.");

    public override void Write(Utf8JsonWriter writer, IReadOnlyList<int> value, JsonSerializerOptions options) =>
        writer.WriteRawValue(JsonSerializer.Serialize(value, CompactJson.Strict));
}
