using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Cli;

/// <summary>The tokenizer that sits in a model folder, if any.</summary>
internal static class CliTokenizer
{
    /// <summary>Loads the folder's tokenizer.json or tokenizer.model, or returns null when it has neither.</summary>
    public static ModelTokenizer? TryLoad(string modelDir)
    {
        return TokenizerFiles.IsInFolder(modelDir) ? TokenizerFiles.Load(modelDir) : null;
    }

    /// <summary>Encodes prompt text, starting with the model's BOS token as Llama models expect.</summary>
    public static int[] Encode(ModelTokenizer? tokenizer, string modelDir, string text, int? bosTokenId)
    {
        if (tokenizer is null)
        {
            throw new UsageException($"{modelDir} has no tokenizer (tokenizer.json or tokenizer.model): give the prompt as --prompt-ids.");
        }

        int[] ids = tokenizer.Encode(text);
        return bosTokenId is int bos && (ids.Length == 0 || ids[0] != bos) ? [bos, .. ids] : ids;
    }
}
