using System.Text.Json.Nodes;

namespace ModelSurgery.Inference.Configuration;

/// <summary>Sliding-window attention: which layers attend to a window of recent positions, read as transformers reads it.</summary>
/// <remarks>
/// <para>Semantics (transformers' <c>masking_utils</c>): in a layer with window W, the query at absolute position i attends
/// to the keys j with <c>i - W &lt; j &lt;= i</c>, that is the W most recent positions including its own; a full-attention
/// layer attends to every <c>j &lt;= i</c>.</para>
/// <para>Which layers are windowed depends on <c>model_type</c>, as in transformers' configuration and modeling classes:</para>
/// <list type="bullet">
/// <item><c>llama</c>: never (LlamaModel has no window; the keys are ignored).</item>
/// <item><c>mistral</c>: every layer when <c>sliding_window</c> is an integer, none when it is null; a missing key means
/// 4096 (MistralConfig's default). MistralModel builds one mask for all layers, so <c>layer_types</c> is ignored.</item>
/// <item><c>qwen2</c>: the window is <c>sliding_window</c> (4096 when missing) only if <c>use_sliding_window</c> is true
/// (false when missing), else there is none. Layer i is windowed when <c>layer_types[i]</c> is
/// <c>"sliding_attention"</c>; without <c>layer_types</c>, when there is a window and i &gt;= <c>max_window_layers</c>
/// (28 when missing). When both are present, <c>layer_types</c> decides and <c>max_window_layers</c> is not read.</item>
/// </list>
/// </remarks>
public sealed partial record LlamaConfig
{
    /// <summary>The <c>layer_types</c> entry of a layer with full causal attention.</summary>
    public const string FullAttentionLayerType = "full_attention";

    /// <summary>The <c>layer_types</c> entry of a layer with sliding-window attention.</summary>
    public const string SlidingAttentionLayerType = "sliding_attention";

    // transformers' defaults for missing keys: MistralConfig.sliding_window and Qwen2Config.sliding_window are 4096,
    // Qwen2Config.use_sliding_window is False and Qwen2Config.max_window_layers is 28.
    private const int DefaultSlidingWindow = 4096;
    private const int DefaultMaxWindowLayers = 28;

    private const string SlidingWindowKey = "sliding_window";
    private const string UseSlidingWindowKey = "use_sliding_window";
    private const string MaxWindowLayersKey = "max_window_layers";
    private const string LayerTypesKey = "layer_types";

    /// <summary>
    /// The window of the windowed layers as transformers resolves it from the config (see the type's remarks), or null
    /// when no layer can be windowed. Whether a given layer is windowed: <see cref="LayerAttentionWindows"/>.
    /// </summary>
    public int? SlidingWindow => ModelType switch
    {
        "mistral" => WrittenSlidingWindow("config"),
        "qwen2" => (GetBool(ExtraProperties, UseSlidingWindowKey, "config") ?? false) ? WrittenSlidingWindow("config") : null,
        _ => null,
    };

    /// <summary>The <c>layer_types</c> list as written, or null when the config has none.</summary>
    public IReadOnlyList<string>? LayerTypes => ReadLayerTypes("config");

    /// <summary>
    /// The attention window of every decoder layer, in layer order: null for full causal attention, W for a layer whose
    /// queries see only the W most recent positions (their own included). Derived from <c>model_type</c> and the
    /// sliding-window keys exactly as transformers derives it (see the type's remarks).
    /// </summary>
    /// <exception cref="InvalidDataException">The sliding-window keys are malformed or inconsistent.</exception>
    public IReadOnlyList<int?> LayerAttentionWindows => ResolveWindows("config");

    /// <summary>True when at least one layer has a window.</summary>
    public bool HasSlidingWindowLayers => LayerAttentionWindows.Any(w => w is not null);

    /// <summary>The attention window of layer <paramref name="layer"/>: null for full attention (see <see cref="LayerAttentionWindows"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="layer"/> is not a layer of this config.</exception>
    public int? AttentionWindow(int layer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, NumHiddenLayers);
        return LayerAttentionWindows[layer];
    }

    /// <summary>
    /// This config with <c>num_hidden_layers</c> = <paramref name="windows"/>.Count and the sliding-window keys rewritten
    /// so that transformers (and <see cref="LayerAttentionWindows"/>) read exactly <paramref name="windows"/>; keys that
    /// already say so are left as written. For qwen2, <c>max_window_layers</c> carries a pattern of full layers followed by
    /// windowed ones; any other pattern is written as an explicit <c>layer_types</c> and <c>max_window_layers</c> is
    /// removed, because no value of it describes that pattern (transformers would ignore it anyway). An existing
    /// <c>layer_types</c> is always rewritten to the new layers, and a kept <c>max_window_layers</c> agrees with it.
    /// </summary>
    /// <param name="windows">Per layer, null for full attention or the window size.</param>
    /// <exception cref="ArgumentException">The model type cannot express the pattern: llama has no windows, mistral
    /// windows all layers or none, and a config has one <c>sliding_window</c>, so all windows must be equal.</exception>
    public LlamaConfig WithLayerAttentionWindows(IReadOnlyList<int?> windows)
    {
        ArgumentNullException.ThrowIfNull(windows);
        if (windows.Count == 0)
        {
            throw new ArgumentException("At least one layer is needed.", nameof(windows));
        }

        int[] sizes = [.. windows.Where(w => w is not null).Select(w => w!.Value).Distinct()];
        if (sizes.Length > 1 || sizes.Any(s => s <= 0))
        {
            throw new ArgumentException($"A config has one positive sliding_window, but the layers ask for windows {string.Join(", ", sizes)}.", nameof(windows));
        }

        int? size = sizes.Length == 1 ? sizes[0] : null;
        bool[] sliding = [.. windows.Select(w => w is not null)];
        var extra = (JsonObject)ExtraProperties.DeepClone();
        LlamaConfig result = this with { NumHiddenLayers = windows.Count, ExtraProperties = extra };
        bool hadLayerTypes = extra.TryGetPropertyValue(LayerTypesKey, out JsonNode? types) && types is not null;
        if (hadLayerTypes)
        {
            // Any model type: transformers checks that layer_types has one entry per layer.
            extra[LayerTypesKey] = LayerTypesNode(sliding);
        }

        switch (ModelType)
        {
            case "mistral":
                if (sliding.Distinct().Count() > 1)
                {
                    throw new ArgumentException("Mistral windows every layer or none (MistralModel ignores layer_types); this pattern mixes full and windowed layers.", nameof(windows));
                }

                if (result.SlidingWindow != size)
                {
                    extra[SlidingWindowKey] = size;
                }

                break;

            case "qwen2":
                // result shares extra, so each check below sees the keys written before it.
                if (size is int window && result.SlidingWindow != window)
                {
                    if (!(GetBool(extra, UseSlidingWindowKey, "config") ?? false))
                    {
                        extra[UseSlidingWindowKey] = true;
                    }

                    if (result.SlidingWindow != window)
                    {
                        extra[SlidingWindowKey] = window;
                    }
                }

                int leadingFull = sliding.TakeWhile(s => !s).Count();
                bool fullThenWindowed = sliding.Skip(leadingFull).All(s => s);
                if (!WindowsFromMaxWindowLayers(result, extra).SequenceEqual(windows))
                {
                    if (fullThenWindowed)
                    {
                        extra[MaxWindowLayersKey] = leadingFull;
                    }
                    else
                    {
                        extra[LayerTypesKey] = LayerTypesNode(sliding);
                        extra.Remove(MaxWindowLayersKey);
                    }
                }

                break;

            default:
                if (size is not null)
                {
                    throw new ArgumentException($"model_type '{ModelType}' has no sliding-window attention.", nameof(windows));
                }

                break;
        }

        result.Validate("config with rewritten attention windows");
        if (!result.LayerAttentionWindows.SequenceEqual(windows))
        {
            // The rewrite above is meant to be exact; a disagreement is a bug here, not a property of the input.
            throw new InvalidOperationException($"Rewriting the sliding-window keys did not give the requested windows [{string.Join(", ", windows)}].");
        }

        return result;
    }

    /// <summary>The windows qwen2's max_window_layers rule gives for <paramref name="config"/>'s keys (layer_types aside).</summary>
    private static IEnumerable<int?> WindowsFromMaxWindowLayers(LlamaConfig config, JsonObject extra)
    {
        int? window = config.SlidingWindow;
        int maxWindowLayers = GetInt(extra, MaxWindowLayersKey, "config") ?? DefaultMaxWindowLayers;
        return Enumerable.Range(0, config.NumHiddenLayers).Select(i => window is not null && i >= maxWindowLayers ? window : null);
    }

    private static JsonArray LayerTypesNode(bool[] sliding) =>
        [.. sliding.Select(s => (JsonNode?)JsonValue.Create(s ? SlidingAttentionLayerType : FullAttentionLayerType))];

    /// <summary>sliding_window as written, with MistralConfig/Qwen2Config's default when the key is missing.</summary>
    private int? WrittenSlidingWindow(string source) =>
        ExtraProperties.ContainsKey(SlidingWindowKey) ? GetInt(ExtraProperties, SlidingWindowKey, source) : DefaultSlidingWindow;

    private IReadOnlyList<string>? ReadLayerTypes(string source)
    {
        if (!ExtraProperties.TryGetPropertyValue(LayerTypesKey, out JsonNode? node) || node is null)
        {
            return null;
        }

        if (node is not JsonArray array)
        {
            throw new InvalidDataException($"{source}: layer_types must be a list of strings, got {node.ToJsonString()}.");
        }

        return [.. array.Select((item, i) => item is JsonValue v && v.TryGetValue(out string? type)
            ? type
            : throw new InvalidDataException($"{source}: layer_types[{i}] must be a string, got {item?.ToJsonString() ?? "null"}."))];
    }

    private int?[] ResolveWindows(string source)
    {
        IReadOnlyList<string>? types = ReadLayerTypes(source);
        if (types is not null && types.Count != NumHiddenLayers)
        {
            // transformers' PreTrainedConfig.validate_layer_type rejects this for every model type.
            throw new InvalidDataException($"{source}: layer_types has {types.Count} entries but num_hidden_layers is {NumHiddenLayers}.");
        }

        int layers = Math.Max(0, NumHiddenLayers);
        switch (ModelType)
        {
            case "mistral":
            {
                int? window = WrittenSlidingWindow(source);
                RequirePositiveWindow(window, source);
                return [.. Enumerable.Repeat(window, layers)];
            }

            case "qwen2":
            {
                if (ExtraProperties.ContainsKey(SlidingWindowKey))
                {
                    RequirePositiveWindow(GetInt(ExtraProperties, SlidingWindowKey, source), source);
                }

                int? window = (GetBool(ExtraProperties, UseSlidingWindowKey, source) ?? false) ? WrittenSlidingWindow(source) : null;
                if (types is null)
                {
                    int maxWindowLayers = GetInt(ExtraProperties, MaxWindowLayersKey, source) ?? DefaultMaxWindowLayers;
                    return [.. Enumerable.Range(0, layers).Select(i => window is not null && i >= maxWindowLayers ? window : null)];
                }

                var windows = new int?[layers];
                for (int i = 0; i < layers; i++)
                {
                    windows[i] = types[i] switch
                    {
                        FullAttentionLayerType => null,
                        SlidingAttentionLayerType => window ?? throw new InvalidDataException(
                            $"{source}: layer_types[{i}] is sliding_attention but there is no window (use_sliding_window is not true or sliding_window is null); transformers cannot build this layer's mask either."),
                        _ => throw new InvalidDataException(
                            $"{source}: layer_types[{i}] is '{types[i]}'; qwen2 layers here are '{FullAttentionLayerType}' or '{SlidingAttentionLayerType}'."),
                    };
                }

                return windows;
            }

            default:
                return [.. Enumerable.Repeat((int?)null, layers)];
        }
    }

    private static void RequirePositiveWindow(int? window, string source)
    {
        if (window is <= 0)
        {
            throw new InvalidDataException($"{source}: sliding_window must be a positive integer or null, got {window}.");
        }
    }

    private void ValidateAttentionWindows(string source) => _ = ResolveWindows(source);
}
