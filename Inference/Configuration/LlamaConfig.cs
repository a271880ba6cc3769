using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using ModelSurgery.Inference.IO;

namespace ModelSurgery.Inference.Configuration;

/// <summary>RoPE frequency scaling, as in the <c>rope_scaling</c> object of a Hugging Face config.</summary>
/// <param name="RopeType">Scaling kind; only <c>llama3</c> (Llama 3.1/3.2) changes the frequencies here.</param>
/// <param name="Factor">Overall scaling factor.</param>
/// <param name="LowFreqFactor">llama3: wavelengths longer than original/low_freq_factor are divided by <paramref name="Factor"/>.</param>
/// <param name="HighFreqFactor">llama3: wavelengths shorter than original/high_freq_factor are kept.</param>
/// <param name="OriginalMaxPositionEmbeddings">llama3: the context length the base model was trained with.</param>
public sealed record RopeScaling(string RopeType, double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings);

/// <summary>
/// The architecture of a Llama-family causal LM (<c>llama</c>, <c>mistral</c>, <c>qwen2</c>), read from and written to a
/// Hugging Face <c>config.json</c>. Keys this type does not model are kept in <see cref="ExtraProperties"/> and written back,
/// so a load/save round trip loses nothing. The sliding-window keys (<c>sliding_window</c>, <c>use_sliding_window</c>,
/// <c>max_window_layers</c>, <c>layer_types</c>) stay there as written and are read into
/// <see cref="LayerAttentionWindows"/> the way transformers reads them.
/// </summary>
public sealed partial record LlamaConfig
{
    /// <summary>The <c>model_type</c> values this library runs.</summary>
    public static readonly IReadOnlyList<string> SupportedModelTypes = ["llama", "mistral", "qwen2"];

    /// <summary><c>model_type</c>: llama, mistral or qwen2.</summary>
    public string ModelType { get; init; } = "llama";

    /// <summary><c>vocab_size</c>: rows of the embedding and the LM head.</summary>
    public int VocabSize { get; init; }

    /// <summary><c>hidden_size</c>: width of the residual stream.</summary>
    public int HiddenSize { get; init; }

    /// <summary><c>intermediate_size</c>: FFN neurons per layer.</summary>
    public int IntermediateSize { get; init; }

    /// <summary><c>num_hidden_layers</c>: decoder layers.</summary>
    public int NumHiddenLayers { get; init; }

    /// <summary><c>num_attention_heads</c>: query heads per layer.</summary>
    public int NumAttentionHeads { get; init; }

    /// <summary><c>num_key_value_heads</c>: KV heads per layer (grouped-query attention when fewer than query heads).</summary>
    public int NumKeyValueHeads { get; init; }

    /// <summary><c>head_dim</c> when given explicitly; null means hidden_size / num_attention_heads.</summary>
    public int? ExplicitHeadDim { get; init; }

    /// <summary><c>max_position_embeddings</c>: the longest context the model supports.</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <summary><c>rms_norm_eps</c>.</summary>
    public double RmsNormEps { get; init; } = 1e-6;

    /// <summary><c>rope_theta</c>: RoPE base.</summary>
    public double RopeTheta { get; init; } = 10000.0;

    /// <summary><c>rope_scaling</c>, or null for plain RoPE.</summary>
    public RopeScaling? RopeScaling { get; init; }

    /// <summary><c>tie_word_embeddings</c>: the LM head shares the embedding matrix (no <c>lm_head.weight</c> tensor).</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <summary><c>attention_bias</c>: q/k/v/o projections have biases (llama option).</summary>
    public bool AttentionBias { get; init; }

    /// <summary><c>mlp_bias</c>: gate/up/down projections have biases (llama option).</summary>
    public bool MlpBias { get; init; }

    /// <summary><c>hidden_act</c>; only <c>silu</c> is supported.</summary>
    public string HiddenAct { get; init; } = "silu";

    /// <summary><c>bos_token_id</c>, if any.</summary>
    public int? BosTokenId { get; init; }

    /// <summary><c>eos_token_id</c> (one id, or several as in Llama 3 instruct configs).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    /// <summary><c>pad_token_id</c>, if any.</summary>
    public int? PadTokenId { get; init; }

    /// <summary><c>torch_dtype</c> as written (float32, bfloat16, float16), if any.</summary>
    public string? TorchDtype { get; init; }

    /// <summary>Keys of <c>config.json</c> this type does not model, written back unchanged.</summary>
    public JsonObject ExtraProperties { get; init; } = [];

    /// <summary>Dimension of one attention head.</summary>
    public int HeadDim => ExplicitHeadDim ?? (NumAttentionHeads == 0 ? 0 : HiddenSize / NumAttentionHeads);

    /// <summary>Query heads that share one KV head.</summary>
    public int QueryGroupSize => NumKeyValueHeads == 0 ? 0 : NumAttentionHeads / NumKeyValueHeads;

    /// <summary>True when q/k/v projections carry biases (qwen2 always, llama with attention_bias).</summary>
    public bool HasQkvBias => AttentionBias || ModelType == "qwen2";

    /// <summary>True when the output projection carries a bias (only llama with attention_bias).</summary>
    public bool HasOutputBias => AttentionBias && ModelType != "qwen2";

    private static readonly HashSet<string> KnownKeys =
    [
        "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
        "tie_word_embeddings", "attention_bias", "mlp_bias", "hidden_act", "bos_token_id", "eos_token_id", "pad_token_id",
        "torch_dtype",
    ];

    /// <summary>Checks that the sizes are consistent; the error names the offending key.</summary>
    /// <param name="source">Where the config came from, for the message (a file path or a description).</param>
    /// <exception cref="InvalidDataException">A size is missing, non-positive or inconsistent.</exception>
    public void Validate(string source = "config")
    {
        if (!SupportedModelTypes.Contains(ModelType))
        {
            throw new InvalidDataException($"{source}: unsupported model_type '{ModelType}' (supported: {string.Join(", ", SupportedModelTypes)}).");
        }

        RequirePositive(VocabSize, "vocab_size");
        RequirePositive(HiddenSize, "hidden_size");
        RequirePositive(IntermediateSize, "intermediate_size");
        RequirePositive(NumHiddenLayers, "num_hidden_layers");
        RequirePositive(NumAttentionHeads, "num_attention_heads");
        RequirePositive(NumKeyValueHeads, "num_key_value_heads");
        RequirePositive(HeadDim, "head_dim");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
        {
            throw new InvalidDataException($"{source}: num_attention_heads ({NumAttentionHeads}) must be a multiple of num_key_value_heads ({NumKeyValueHeads}).");
        }

        if (ExplicitHeadDim is null && HiddenSize % NumAttentionHeads != 0)
        {
            throw new InvalidDataException($"{source}: hidden_size ({HiddenSize}) is not divisible by num_attention_heads ({NumAttentionHeads}) and no head_dim is given.");
        }

        if (HeadDim % 2 != 0)
        {
            throw new InvalidDataException($"{source}: head_dim ({HeadDim}) must be even for rotary embeddings.");
        }

        if (HiddenAct != "silu")
        {
            throw new InvalidDataException($"{source}: unsupported hidden_act '{HiddenAct}' (only silu).");
        }

        if (!(RmsNormEps > 0) || !double.IsFinite(RmsNormEps))
        {
            throw new InvalidDataException($"{source}: rms_norm_eps must be a positive number, got {RmsNormEps}.");
        }

        // rope_theta <= 0 turns every rotary angle into NaN; max_position_embeddings <= 0 leaves no window to evaluate.
        if (!(RopeTheta > 0) || !double.IsFinite(RopeTheta))
        {
            throw new InvalidDataException($"{source}: rope_theta must be a positive number, got {RopeTheta}.");
        }

        RequirePositive(MaxPositionEmbeddings, "max_position_embeddings");
        if (RopeScaling is { } scaling && (!(scaling.Factor > 0) || !double.IsFinite(scaling.Factor)))
        {
            throw new InvalidDataException($"{source}: rope_scaling.factor must be a positive number, got {scaling.Factor}.");
        }

        ValidateAttentionWindows(source);

        void RequirePositive(int value, string key)
        {
            if (value <= 0)
            {
                throw new InvalidDataException($"{source}: {key} must be a positive integer, got {value}.");
            }
        }
    }

    /// <summary>Reads and validates a <c>config.json</c> file.</summary>
    /// <exception cref="InvalidDataException">The file is not valid JSON or describes an unsupported or inconsistent model; the message names the file.</exception>
    public static LlamaConfig Load(string path) => Parse(DataFile.ReadAllText(path, "config"), path);

    /// <summary>Parses and validates <c>config.json</c> text.</summary>
    /// <param name="json">The JSON text.</param>
    /// <param name="source">Where the text came from, for error messages.</param>
    public static LlamaConfig Parse(string json, string source = "config.json")
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(json) as JsonObject ?? throw new InvalidDataException($"{source}: config must be a JSON object.");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{source}: invalid JSON ({ex.Message}).", ex);
        }

        var extra = new JsonObject();
        foreach (var (key, value) in root)
        {
            if (!KnownKeys.Contains(key))
            {
                extra[key] = value?.DeepClone();
            }
        }

        string modelType = GetString(root, "model_type", source) ?? throw new InvalidDataException($"{source}: missing model_type.");
        int heads = GetInt(root, "num_attention_heads", source) ?? 0;
        var config = new LlamaConfig
        {
            ModelType = modelType,
            VocabSize = GetInt(root, "vocab_size", source) ?? 0,
            HiddenSize = GetInt(root, "hidden_size", source) ?? 0,
            IntermediateSize = GetInt(root, "intermediate_size", source) ?? 0,
            NumHiddenLayers = GetInt(root, "num_hidden_layers", source) ?? 0,
            NumAttentionHeads = heads,
            NumKeyValueHeads = GetInt(root, "num_key_value_heads", source) ?? heads,
            ExplicitHeadDim = GetInt(root, "head_dim", source),
            MaxPositionEmbeddings = GetInt(root, "max_position_embeddings", source) ?? 2048,
            RmsNormEps = GetDouble(root, "rms_norm_eps", source) ?? 1e-6,
            RopeTheta = GetDouble(root, "rope_theta", source) ?? 10000.0,
            RopeScaling = ParseRopeScaling(root["rope_scaling"], source),
            TieWordEmbeddings = GetBool(root, "tie_word_embeddings", source) ?? false,
            AttentionBias = GetBool(root, "attention_bias", source) ?? false,
            MlpBias = GetBool(root, "mlp_bias", source) ?? false,
            HiddenAct = GetString(root, "hidden_act", source) ?? "silu",
            BosTokenId = GetInt(root, "bos_token_id", source),
            EosTokenIds = GetIntOrList(root, "eos_token_id", source),
            PadTokenId = GetInt(root, "pad_token_id", source),
            TorchDtype = GetString(root, "torch_dtype", source),
            ExtraProperties = extra,
        };
        config.Validate(source);
        return config;
    }

    /// <summary>Writes the config as Hugging Face <c>config.json</c> text, unknown keys included.</summary>
    public string ToJson()
    {
        var root = new JsonObject
        {
            ["model_type"] = ModelType,
            ["vocab_size"] = VocabSize,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_key_value_heads"] = NumKeyValueHeads,
        };
        if (ExplicitHeadDim is int headDim)
        {
            root["head_dim"] = headDim;
        }

        root["max_position_embeddings"] = MaxPositionEmbeddings;
        root["rms_norm_eps"] = RmsNormEps;
        root["rope_theta"] = RopeTheta;
        root["rope_scaling"] = RopeScaling is null
            ? null
            : new JsonObject
            {
                ["rope_type"] = RopeScaling.RopeType,
                ["factor"] = RopeScaling.Factor,
                ["low_freq_factor"] = RopeScaling.LowFreqFactor,
                ["high_freq_factor"] = RopeScaling.HighFreqFactor,
                ["original_max_position_embeddings"] = RopeScaling.OriginalMaxPositionEmbeddings,
            };
        root["tie_word_embeddings"] = TieWordEmbeddings;
        root["attention_bias"] = AttentionBias;
        root["mlp_bias"] = MlpBias;
        root["hidden_act"] = HiddenAct;
        root["bos_token_id"] = BosTokenId;
        root["eos_token_id"] = EosTokenIds.Count switch
        {
            0 => null,
            1 => JsonValue.Create(EosTokenIds[0]),
            _ => new JsonArray([.. EosTokenIds.Select(id => (JsonNode?)JsonValue.Create(id))]),
        };
        root["pad_token_id"] = PadTokenId;
        if (TorchDtype is not null)
        {
            root["torch_dtype"] = TorchDtype;
        }

        foreach (var (key, value) in ExtraProperties)
        {
            root[key] = value?.DeepClone();
        }

        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Writes <c>config.json</c> atomically (temp file, then rename).</summary>
    public void Save(string path) => IO.AtomicFile.WriteAllText(path, ToJson());

    private static RopeScaling? ParseRopeScaling(JsonNode? node, string source)
    {
        if (node is null)
        {
            return null;
        }

        if (node is not JsonObject scaling)
        {
            throw new InvalidDataException($"{source}: rope_scaling must be an object or null.");
        }

        string type = GetString(scaling, "rope_type", source) ?? GetString(scaling, "type", source)
            ?? throw new InvalidDataException($"{source}: rope_scaling has no rope_type.");
        if (type is not ("llama3" or "default"))
        {
            throw new InvalidDataException($"{source}: unsupported rope_scaling type '{type}' (supported: llama3, default).");
        }

        return new RopeScaling(
            type,
            GetDouble(scaling, "factor", source) ?? 1.0,
            GetDouble(scaling, "low_freq_factor", source) ?? 1.0,
            GetDouble(scaling, "high_freq_factor", source) ?? 4.0,
            GetInt(scaling, "original_max_position_embeddings", source) ?? 8192);
    }

    private static string? GetString(JsonObject obj, string key, string source) => obj[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        _ => throw new InvalidDataException($"{source}: {key} must be a string."),
    };

    private static int? GetInt(JsonObject obj, string key, string source) => obj[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out int i) => i,
        JsonValue v when v.TryGetValue(out double d) && d == Math.Floor(d) && d is >= int.MinValue and <= int.MaxValue => (int)d,
        var other => throw new InvalidDataException($"{source}: {key} must be an integer, got {other.ToJsonString()}."),
    };

    private static double? GetDouble(JsonObject obj, string key, string source) => obj[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out double d) => d,
        JsonValue v when v.TryGetValue(out string? s) && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double parsed) => parsed,
        var other => throw new InvalidDataException($"{source}: {key} must be a number, got {other.ToJsonString()}."),
    };

    private static bool? GetBool(JsonObject obj, string key, string source) => obj[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out bool b) => b,
        var other => throw new InvalidDataException($"{source}: {key} must be true or false, got {other.ToJsonString()}."),
    };

    private static IReadOnlyList<int> GetIntOrList(JsonObject obj, string key, string source) => obj[key] switch
    {
        null => [],
        JsonArray array => [.. array.Select((item, i) => item is JsonValue v && v.TryGetValue(out int id)
            ? id
            : throw new InvalidDataException($"{source}: {key}[{i}] must be an integer."))],
        _ => [GetInt(obj, key, source)!.Value],
    };
}
