using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Inference.Inspection;

/// <summary>Reads what a model is and what it costs without loading any weight.</summary>
public static class ModelInspector
{
    /// <summary>
    /// Inspects a checkpoint folder, any <c>.safetensors</c> file (tensors, dtypes, bytes and metadata; plus the
    /// architecture, parameter accounting and a check against the config when <c>config.json</c> lies beside it) or a
    /// bare <c>config.json</c> (parameter accounting only). Only headers are read.
    /// </summary>
    /// <exception cref="FileNotFoundException">The path does not exist.</exception>
    /// <exception cref="InvalidDataException">A file is malformed; the message names it.</exception>
    public static ModelInspection Inspect(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (File.Exists(path) && path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)
            && !path.EndsWith(CheckpointReader.IndexFileName, StringComparison.OrdinalIgnoreCase))
        {
            LlamaConfig config = LlamaConfig.Load(path);
            return new ModelInspection(path, config, LlamaTensorLayout.CountParameters(config), [], [], [], new Dictionary<string, string>(), []);
        }

        string folder;
        if (Directory.Exists(path))
        {
            folder = path;
        }
        else if (File.Exists(path))
        {
            folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        }
        else
        {
            throw new FileNotFoundException($"{path}: no such file or folder.", path);
        }

        string configPath = Path.Combine(folder, "config.json");
        LlamaConfig? modelConfig = File.Exists(configPath) ? LlamaConfig.Load(configPath) : null;
        using CheckpointReader reader = CheckpointReader.Open(path);
        var dtypes = new SortedDictionary<string, (int Count, long Bytes)>(StringComparer.Ordinal);
        var tensorsPerShard = new Dictionary<string, int>(StringComparer.Ordinal);
        var tensors = new List<TensorUsage>(reader.TensorNames.Count);
        foreach (string name in reader.TensorNames)
        {
            SafetensorsTensorInfo info = reader.GetInfo(name);
            string dtype = info.DType.ToHeaderString();
            dtypes[dtype] = dtypes.TryGetValue(dtype, out var seen) ? (seen.Count + 1, seen.Bytes + info.ByteLength) : (1, info.ByteLength);
            string shard = reader.ShardOf(name);
            tensorsPerShard[shard] = tensorsPerShard.GetValueOrDefault(shard) + 1;
            tensors.Add(new TensorUsage(name, dtype, info.Shape, info.ByteLength, Path.GetFileName(shard)));
        }

        return new ModelInspection(
            path,
            modelConfig,
            modelConfig is null ? null : LlamaTensorLayout.CountParameters(modelConfig),
            [.. dtypes.Select(d => new DTypeUsage(d.Key, d.Value.Count, d.Value.Bytes))],
            [.. reader.Shards.Select(s => new ShardUsage(Path.GetFileName(s.Path), s.ByteSize, tensorsPerShard.GetValueOrDefault(s.Path)))],
            tensors,
            reader.Metadata,
            modelConfig is null ? [] : CompareWithLayout(modelConfig, reader));
    }

    /// <summary>Differences between the checkpoint's tensors and those its config calls for.</summary>
    private static List<string> CompareWithLayout(LlamaConfig config, CheckpointReader reader)
    {
        var problems = new List<string>();
        var expected = LlamaTensorLayout.Tensors(config).ToDictionary(s => s.Name, StringComparer.Ordinal);
        foreach (TensorSpec spec in expected.Values)
        {
            if (!reader.TryGetInfo(spec.Name, out SafetensorsTensorInfo? info))
            {
                problems.Add($"missing tensor {spec.Name} [{string.Join(", ", spec.Shape)}]");
            }
            else if (!info.Shape.SequenceEqual(spec.Shape))
            {
                problems.Add($"tensor {spec.Name} has shape [{string.Join(", ", info.Shape)}], config calls for [{string.Join(", ", spec.Shape)}]");
            }
        }

        foreach (string name in reader.TensorNames)
        {
            // A tied checkpoint may still carry lm_head.weight; loaders ignore it.
            if (!expected.ContainsKey(name) && !(config.TieWordEmbeddings && name == LlamaTensorLayout.LmHead))
            {
                problems.Add($"unexpected tensor {name}");
            }
        }

        return problems;
    }
}
