using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.IO;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Training.Recipes;

/// <summary>
/// Saves a <see cref="LlamaForCausalLM"/> (or the one inside a <see cref="LlamaHiddenStates"/>) as a Hugging Face
/// checkpoint folder with <see cref="ModelCheckpoint.SaveAsync"/>, and copies the tokenizer and vocabulary files of a
/// source folder next to it so that a trained checkpoint can be used with text right away.
/// </summary>
/// <param name="saveOptions">Stored dtype and sharding; null stores the model's own dtype in one file.</param>
/// <param name="companionSource">Folder whose <see cref="CompanionFiles"/> are copied into every checkpoint; null copies nothing.</param>
/// <param name="logger">Optional logger.</param>
public sealed class SafetensorsModelCheckpointer(ModelSaveOptions? saveOptions = null, string? companionSource = null, ILogger? logger = null) : IModelCheckpointer
{
    /// <summary>Files copied from the companion source when present: tokenizer files and the vocabulary map.</summary>
    public static IReadOnlyList<string> CompanionFiles { get; } = [.. ModelFolderTokenizer.FileNames, "vocab_map.json"];

    /// <summary>The Llama model inside <paramref name="model"/>.</summary>
    /// <param name="model">A <see cref="LlamaForCausalLM"/> or <see cref="LlamaHiddenStates"/>.</param>
    /// <returns>The model to save.</returns>
    /// <exception cref="ArgumentException">The module is neither.</exception>
    public static LlamaForCausalLM Unwrap(nn.Module<Tensor, Tensor> model) => model switch
    {
        LlamaForCausalLM llama => llama,
        LlamaHiddenStates wrapped => wrapped.Llama,
        null => throw new ArgumentNullException(nameof(model)),
        _ => throw new ArgumentException($"Cannot save a {model.GetType().Name} as a safetensors checkpoint: expected LlamaForCausalLM or LlamaHiddenStates.", nameof(model)),
    };

    /// <inheritdoc />
    public async Task SaveAsync(nn.Module<Tensor, Tensor> model, string directory, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        LlamaForCausalLM llama = Unwrap(model);
        await ModelCheckpoint.SaveAsync(llama, directory, saveOptions, logger, cancellationToken).ConfigureAwait(false);
        if (companionSource is null || Path.GetFullPath(companionSource) == Path.GetFullPath(directory))
        {
            return;
        }

        ModelFolderTokenizer.CopyInto(companionSource, directory, llama.Config);
        string map = Path.Combine(companionSource, "vocab_map.json");
        if (File.Exists(map))
        {
            // Copy under a temporary name first so a reader never sees a half-copied file.
            AtomicFile.Copy(map, Path.Combine(directory, "vocab_map.json"));
        }
    }
}
