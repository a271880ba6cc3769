namespace ModelSurgery.Inference.Configuration;

/// <summary>
/// Architectures of well-known public checkpoints, with the values of their Hugging Face <c>config.json</c>: handy for
/// parameter accounting and planning without downloading anything. Each call returns a fresh config.
/// </summary>
public static class ModelPresets
{
    // Values from the config.json of each Hugging Face repository named in the comment.
    private static readonly (string Name, Func<LlamaConfig> Create)[] Presets =
    [
        // TinyLlama/TinyLlama-1.1B-Chat-v1.0 (same architecture as TinyLlama-1.1B-intermediate-step-1431k-3T).
        ("tinyllama-1.1b", () => new LlamaConfig
        {
            ModelType = "llama",
            VocabSize = 32000,
            HiddenSize = 2048,
            IntermediateSize = 5632,
            NumHiddenLayers = 22,
            NumAttentionHeads = 32,
            NumKeyValueHeads = 4,
            MaxPositionEmbeddings = 2048,
            RmsNormEps = 1e-5,
            RopeTheta = 10000.0,
            TieWordEmbeddings = false,
            BosTokenId = 1,
            EosTokenIds = [2],
            TorchDtype = "bfloat16",
        }),

        // meta-llama/Llama-3.2-1B.
        ("llama-3.2-1b", () => new LlamaConfig
        {
            ModelType = "llama",
            VocabSize = 128256,
            HiddenSize = 2048,
            IntermediateSize = 8192,
            NumHiddenLayers = 16,
            NumAttentionHeads = 32,
            NumKeyValueHeads = 8,
            ExplicitHeadDim = 64,
            MaxPositionEmbeddings = 131072,
            RmsNormEps = 1e-5,
            RopeTheta = 500000.0,
            RopeScaling = new RopeScaling("llama3", Factor: 32.0, LowFreqFactor: 1.0, HighFreqFactor: 4.0, OriginalMaxPositionEmbeddings: 8192),
            TieWordEmbeddings = true,
            BosTokenId = 128000,
            EosTokenIds = [128001],
            TorchDtype = "bfloat16",
        }),

        // meta-llama/Llama-2-7b-hf.
        ("llama-2-7b", () => new LlamaConfig
        {
            ModelType = "llama",
            VocabSize = 32000,
            HiddenSize = 4096,
            IntermediateSize = 11008,
            NumHiddenLayers = 32,
            NumAttentionHeads = 32,
            NumKeyValueHeads = 32,
            MaxPositionEmbeddings = 4096,
            RmsNormEps = 1e-5,
            RopeTheta = 10000.0,
            TieWordEmbeddings = false,
            BosTokenId = 1,
            EosTokenIds = [2],
            TorchDtype = "float16",
        }),

        // Qwen/Qwen2.5-0.5B.
        ("qwen2.5-0.5b", () => new LlamaConfig
        {
            ModelType = "qwen2",
            VocabSize = 151936,
            HiddenSize = 896,
            IntermediateSize = 4864,
            NumHiddenLayers = 24,
            NumAttentionHeads = 14,
            NumKeyValueHeads = 2,
            MaxPositionEmbeddings = 32768,
            RmsNormEps = 1e-6,
            RopeTheta = 1000000.0,
            TieWordEmbeddings = true,
            BosTokenId = 151643,
            EosTokenIds = [151643],
            TorchDtype = "bfloat16",
        }),

        // HuggingFaceTB/SmolLM2-135M.
        ("smollm2-135m", () => new LlamaConfig
        {
            ModelType = "llama",
            VocabSize = 49152,
            HiddenSize = 576,
            IntermediateSize = 1536,
            NumHiddenLayers = 30,
            NumAttentionHeads = 9,
            NumKeyValueHeads = 3,
            MaxPositionEmbeddings = 8192,
            RmsNormEps = 1e-5,
            RopeTheta = 100000.0,
            TieWordEmbeddings = true,
            BosTokenId = 0,
            EosTokenIds = [0],
            TorchDtype = "bfloat16",
        }),
    ];

    /// <summary>The preset names: tinyllama-1.1b, llama-3.2-1b, llama-2-7b, qwen2.5-0.5b, smollm2-135m.</summary>
    public static IReadOnlyList<string> Names { get; } = [.. Presets.Select(p => p.Name)];

    /// <summary>Returns a fresh config for a preset name (case-insensitive).</summary>
    /// <exception cref="ArgumentException">No preset has that name; the message lists the names.</exception>
    public static LlamaConfig Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        foreach (var (presetName, create) in Presets)
        {
            if (presetName.Equals(name.Trim(), StringComparison.OrdinalIgnoreCase))
            {
                return create();
            }
        }

        throw new ArgumentException($"Unknown model preset '{name}'. Known presets: {string.Join(", ", Names)}.", nameof(name));
    }
}
