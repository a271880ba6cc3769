using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Inference.Llama2C;

/// <summary>The layouts of a llama2.c <c>.bin</c> checkpoint.</summary>
public enum Llama2CVersion
{
    /// <summary>The original headerless-magic format: 7 int32 followed by fp32 tensors and the RoPE tables.</summary>
    Legacy = 0,

    /// <summary>Version 1: a 256-byte header with the <c>ak42</c> magic, then fp32 tensors with the norms first.</summary>
    Version1 = 1,

    /// <summary>Version 2: a 256-byte header, fp32 norms, then Q8_0 group-quantized matrices (read only).</summary>
    Version2 = 2,
}

/// <summary>The header of a llama2.c checkpoint, with the sizes every llama2.c format stores.</summary>
/// <param name="Version">Which layout the file uses.</param>
/// <param name="Dim">Width of the residual stream (<c>dim</c>).</param>
/// <param name="HiddenDim">FFN neurons per layer (<c>hidden_dim</c>).</param>
/// <param name="NumLayers">Decoder layers (<c>n_layers</c>).</param>
/// <param name="NumHeads">Query heads (<c>n_heads</c>).</param>
/// <param name="NumKvHeads">Key/value heads (<c>n_kv_heads</c>).</param>
/// <param name="VocabSize">Vocabulary size, always positive here (the legacy sign flag is in <paramref name="SharedClassifier"/>).</param>
/// <param name="SeqLen">Maximum sequence length (<c>seq_len</c>).</param>
/// <param name="SharedClassifier">True when the classifier is the token embedding (no separate classifier tensor).</param>
/// <param name="GroupSize">Q8_0 group size for <see cref="Llama2CVersion.Version2"/>; 0 for the fp32 layouts.</param>
public sealed record Llama2CHeader(
    Llama2CVersion Version,
    int Dim,
    int HiddenDim,
    int NumLayers,
    int NumHeads,
    int NumKvHeads,
    int VocabSize,
    int SeqLen,
    bool SharedClassifier,
    int GroupSize)
{
    /// <summary>The <c>ak42</c> magic that starts versioned files (read as a little-endian uint32).</summary>
    public const uint Magic = 0x616b3432;

    /// <summary>Bytes of the versioned header (the legacy header is 7 int32, 28 bytes).</summary>
    public const int VersionedHeaderBytes = 256;

    /// <summary>Bytes of the legacy header.</summary>
    public const int LegacyHeaderBytes = 7 * sizeof(int);

    /// <summary>RMSNorm epsilon that llama2.c's <c>run.c</c> hard-codes.</summary>
    public const double RmsNormEps = 1e-5;

    /// <summary>RoPE base that llama2.c's <c>run.c</c> and <c>model.py</c> hard-code.</summary>
    public const double RopeTheta = 10000.0;

    /// <summary>Dimension of one attention head: llama2.c has no separate head_dim, it is always dim / n_heads.</summary>
    public int HeadSize => Dim / NumHeads;

    /// <summary>Width of the key/value projections.</summary>
    public int KvDim => NumKvHeads * HeadSize;

    /// <summary>The Hugging Face config of the model this header describes.</summary>
    public LlamaConfig ToConfig() => new()
    {
        ModelType = "llama",
        VocabSize = VocabSize,
        HiddenSize = Dim,
        IntermediateSize = HiddenDim,
        NumHiddenLayers = NumLayers,
        NumAttentionHeads = NumHeads,
        NumKeyValueHeads = NumKvHeads,
        MaxPositionEmbeddings = SeqLen,
        RmsNormEps = RmsNormEps,
        RopeTheta = RopeTheta,
        TieWordEmbeddings = SharedClassifier,
        HiddenAct = "silu",

        // llama2.c models use the sentencepiece Llama ids: BOS 1, EOS 2.
        BosTokenId = 1,
        EosTokenIds = [2],
        TorchDtype = "float32",
    };

    /// <summary>The header that stores <paramref name="config"/> in <paramref name="version"/>.</summary>
    /// <exception cref="ArgumentException">The config cannot be expressed in a llama2.c checkpoint; the message names the field.</exception>
    public static Llama2CHeader FromConfig(LlamaConfig config, Llama2CVersion version)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.ModelType != "llama")
        {
            throw new ArgumentException($"llama2.c checkpoints hold only model_type 'llama', not '{config.ModelType}'.", nameof(config));
        }

        if (config.HasQkvBias || config.HasOutputBias || config.MlpBias)
        {
            throw new ArgumentException("llama2.c checkpoints have no attention_bias or mlp_bias.", nameof(config));
        }

        if (config.RopeScaling is not null)
        {
            throw new ArgumentException($"llama2.c checkpoints have no rope_scaling (config has '{config.RopeScaling.RopeType}').", nameof(config));
        }

        if (config.RopeTheta != RopeTheta)
        {
            throw new ArgumentException($"llama2.c hard-codes rope_theta {RopeTheta}; config has {config.RopeTheta}.", nameof(config));
        }

        if (config.RmsNormEps != RmsNormEps)
        {
            throw new ArgumentException($"llama2.c hard-codes rms_norm_eps {RmsNormEps}; config has {config.RmsNormEps}.", nameof(config));
        }

        if (config.NumAttentionHeads <= 0 || config.HeadDim * config.NumAttentionHeads != config.HiddenSize)
        {
            throw new ArgumentException(
                $"llama2.c requires head_dim = hidden_size / num_attention_heads; config has head_dim {config.HeadDim}, hidden_size {config.HiddenSize}, num_attention_heads {config.NumAttentionHeads}.",
                nameof(config));
        }

        var header = new Llama2CHeader(
            version,
            config.HiddenSize,
            config.IntermediateSize,
            config.NumHiddenLayers,
            config.NumAttentionHeads,
            config.NumKeyValueHeads,
            config.VocabSize,
            config.MaxPositionEmbeddings,
            config.TieWordEmbeddings,
            GroupSize: 0);
        string? problem = header.FindProblem();
        return problem is null ? header : throw new ArgumentException($"config cannot be written as llama2.c: {problem}.", nameof(config));
    }

    /// <summary>Describes the first inconsistency of the sizes, or returns null when they are usable.</summary>
    internal string? FindProblem()
    {
        (string Name, int Value)[] sizes =
        [
            ("dim", Dim), ("hidden_dim", HiddenDim), ("n_layers", NumLayers), ("n_heads", NumHeads),
            ("n_kv_heads", NumKvHeads), ("vocab_size", VocabSize), ("seq_len", SeqLen),
        ];
        foreach (var (name, value) in sizes)
        {
            if (value <= 0)
            {
                return $"{name} must be positive, got {value}";
            }
        }

        if (Dim % NumHeads != 0)
        {
            return $"dim ({Dim}) is not divisible by n_heads ({NumHeads})";
        }

        if (NumHeads % NumKvHeads != 0)
        {
            return $"n_heads ({NumHeads}) is not divisible by n_kv_heads ({NumKvHeads})";
        }

        if (HeadSize % 2 != 0)
        {
            return $"head size dim / n_heads ({HeadSize}) must be even for rotary embeddings";
        }

        if (Version == Llama2CVersion.Version2 && GroupSize <= 0)
        {
            return $"group_size must be positive, got {GroupSize}";
        }

        return null;
    }
}
