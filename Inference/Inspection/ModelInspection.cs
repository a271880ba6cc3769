using System.Text.Json;
using System.Text.Json.Serialization;
using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Inference.Inspection;

/// <summary>Tensors of one dtype in a checkpoint.</summary>
/// <param name="DType">The safetensors dtype name (F32, BF16, ...).</param>
/// <param name="Tensors">How many tensors have it.</param>
/// <param name="Bytes">Their total size in bytes.</param>
public sealed record DTypeUsage(string DType, int Tensors, long Bytes);

/// <summary>One file of a checkpoint.</summary>
/// <param name="File">File name relative to the checkpoint folder.</param>
/// <param name="Bytes">Size on disk.</param>
/// <param name="Tensors">Tensors stored in it.</param>
public sealed record ShardUsage(string File, long Bytes, int Tensors);

/// <summary>What <c>modelsurgery inspect</c> reports about a model: architecture, parameters by component, storage.</summary>
/// <param name="Source">The path that was inspected.</param>
/// <param name="Config">The architecture.</param>
/// <param name="Parameters">Parameter accounting by component, from the config alone.</param>
/// <param name="DTypes">Storage by dtype; empty when only a config was given.</param>
/// <param name="Shards">Checkpoint files; empty when only a config was given.</param>
/// <param name="Problems">Tensors the config calls for that are missing, have another shape, or are unexpected.</param>
public sealed record ModelInspection(
    string Source,
    [property: JsonIgnore] LlamaConfig Config,
    ParameterCount Parameters,
    IReadOnlyList<DTypeUsage> DTypes,
    IReadOnlyList<ShardUsage> Shards,
    IReadOnlyList<string> Problems)
{
    /// <summary>Total bytes of tensor data (0 when only a config was given).</summary>
    public long TensorBytes => DTypes.Sum(d => d.Bytes);

    /// <summary>Renders the inspection as indented JSON (the config included as its config.json object).</summary>
    public string ToJson()
    {
        var options = new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
        var node = JsonSerializer.SerializeToNode(this, options)!.AsObject();
        node["config"] = System.Text.Json.Nodes.JsonNode.Parse(Config.ToJson());
        node["parameters"]!.AsObject()["total"] = Parameters.Total;
        node["parameters"]!.AsObject()["non_embedding"] = Parameters.NonEmbedding;
        return node.ToJsonString(options);
    }
}
