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

/// <summary>One tensor as its safetensors header describes it.</summary>
/// <param name="Name">The tensor name.</param>
/// <param name="DType">The safetensors dtype name (F32, BF16, ...).</param>
/// <param name="Shape">The shape (empty for a scalar).</param>
/// <param name="Bytes">Its size in bytes.</param>
/// <param name="File">The file holding it, relative to the checkpoint folder.</param>
public sealed record TensorUsage(string Name, string DType, IReadOnlyList<long> Shape, long Bytes, string File);

/// <summary>
/// What <c>modelsurgery inspect</c> reports: the tensors, dtypes, shards and metadata of the safetensors files, and, when
/// a <c>config.json</c> describes the model, its architecture, parameters by component and any tensor that does not
/// match the config.
/// </summary>
/// <param name="Source">The path that was inspected.</param>
/// <param name="Config">The architecture; null for a safetensors file without a config.json beside it.</param>
/// <param name="Parameters">Parameter accounting by component, from the config alone; null without a config.</param>
/// <param name="DTypes">Storage by dtype; empty when only a config was given.</param>
/// <param name="Shards">Checkpoint files; empty when only a config was given.</param>
/// <param name="Tensors">Every tensor in header order of each file; empty when only a config was given.</param>
/// <param name="Metadata">The <c>__metadata__</c> of the (first) safetensors file; empty when there is none.</param>
/// <param name="Problems">Tensors the config calls for that are missing, have another shape, or are unexpected.</param>
public sealed record ModelInspection(
    string Source,
    [property: JsonIgnore] LlamaConfig? Config,
    ParameterCount? Parameters,
    IReadOnlyList<DTypeUsage> DTypes,
    IReadOnlyList<ShardUsage> Shards,
    IReadOnlyList<TensorUsage> Tensors,
    IReadOnlyDictionary<string, string> Metadata,
    IReadOnlyList<string> Problems)
{
    /// <summary>Total bytes of tensor data (0 when only a config was given).</summary>
    public long TensorBytes => DTypes.Sum(d => d.Bytes);

    /// <summary>Total elements of the stored tensors (0 when only a config was given).</summary>
    public long TensorElements => Tensors.Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b));

    /// <summary>Renders the inspection as indented JSON (the config included as its config.json object).</summary>
    public string ToJson()
    {
        var options = new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
        var node = JsonSerializer.SerializeToNode(this, options)!.AsObject();
        node["config"] = Config is null ? null : System.Text.Json.Nodes.JsonNode.Parse(Config.ToJson());
        if (Parameters is not null)
        {
            node["parameters"]!.AsObject()["total"] = Parameters.Total;
            node["parameters"]!.AsObject()["non_embedding"] = Parameters.NonEmbedding;
        }

        node["tensor_elements"] = TensorElements;
        return node.ToJsonString(options);
    }
}
