using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.IO;
using ModelSurgery.Surgery.Scoring;

namespace ModelSurgery.Surgery.Planning;

/// <summary>
/// Which parts of a teacher a student inherits (parameter inheritance, PanGu-pi Pro): kept layers, per kept layer the kept KV
/// heads, query heads and FFN neurons, one set of hidden channels shared by the embeddings, every norm, every projection and
/// the head, and optionally the kept vocabulary. Pure data: it is computed and validated from the teacher's
/// <see cref="LlamaConfig"/> alone, before any weight is read.
/// </summary>
/// <remarks>
/// <para>Ordering rules. Every index set (KV heads, query heads, neurons, hidden channels) is strictly ascending in teacher
/// indices, so plans have one canonical form and the student keeps the teacher's relative order (query heads then come
/// grouped under their KV heads). Layers are listed in teacher order (strictly ascending <c>teacher_layer</c>): layers are not
/// repeated or reordered. <c>kept_tokens</c> is the exception: its order defines the student's token ids (student id i is
/// teacher id <c>kept_tokens[i]</c>), as decided by vocabulary compression.</para>
/// <para>Widths. By default every layer keeps the same number of KV heads, query heads and neurons, and every kept KV head
/// keeps the same number of query heads, so the student is an ordinary Hugging Face Llama checkpoint. Per-layer widths are
/// accepted only with <see cref="AllowNonUniform"/>; such a student cannot be described by one <c>config.json</c> and is NOT
/// loadable by Hugging Face transformers or other Llama tools.</para>
/// <para>Head dimension is never cut: the student's <c>head_dim</c> is written explicitly as the teacher's, so the hidden
/// size need not equal heads * head_dim. Tied embeddings stay tied.</para>
/// </remarks>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
public sealed record SurgeryPlan
{
    /// <summary>The plan file format version written by this library.</summary>
    public const int CurrentFormatVersion = 1;

    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };

    /// <summary>Format version of the file this came from (<see cref="CurrentFormatVersion"/> for new plans).</summary>
    [JsonPropertyName("format_version")]
    [JsonPropertyOrder(0)]
    public int FormatVersion { get; init; } = CurrentFormatVersion;

    /// <summary>Free text: how the plan was made (metric, budget, options).</summary>
    [JsonPropertyName("description")]
    [JsonPropertyOrder(1)]
    public string Description { get; init; } = string.Empty;

    /// <summary>The teacher's config, embedded as its Hugging Face <c>config.json</c> object.</summary>
    [JsonPropertyName("teacher")]
    [JsonPropertyOrder(2)]
    [JsonConverter(typeof(LlamaConfigJsonConverter))]
    public required LlamaConfig Teacher { get; init; }

    /// <summary>Accept per-layer widths. The resulting student is not a standard checkpoint (see the remarks).</summary>
    [JsonPropertyName("allow_non_uniform")]
    [JsonPropertyOrder(3)]
    public bool AllowNonUniform { get; init; }

    /// <summary>Kept hidden channels (teacher indices, ascending), shared by embeddings, norms, projections and head.</summary>
    [JsonPropertyName("hidden_channels")]
    [JsonPropertyOrder(4)]
    [JsonConverter(typeof(OneLineIntListConverter))]
    public required IReadOnlyList<int> HiddenChannels { get; init; }

    /// <summary>Kept token ids (teacher ids; position = student id), or null to keep the whole vocabulary.</summary>
    [JsonPropertyName("kept_tokens")]
    [JsonPropertyOrder(5)]
    [JsonConverter(typeof(OneLineIntListConverter))]
    public IReadOnlyList<int>? KeptTokens { get; init; }

    /// <summary>The student's layers, in teacher order.</summary>
    [JsonPropertyName("layers")]
    [JsonPropertyOrder(6)]
    public required IReadOnlyList<LayerPlan> Layers { get; init; }

    /// <summary>True when every layer keeps the same number of KV heads, query heads and neurons.</summary>
    [JsonIgnore]
    public bool IsUniform => Layers.Count == 0 || Layers.All(l =>
        l.KvHeads.Count == Layers[0].KvHeads.Count
        && l.QueryHeads.Count == Layers[0].QueryHeads.Count
        && l.Neurons.Count == Layers[0].Neurons.Count);

    /// <summary>
    /// The student's config: hidden = #hidden channels, intermediate = #neurons, layers, heads and KV heads as kept,
    /// head_dim explicitly the teacher's, vocab = #kept tokens (special token ids remapped), each layer's attention window
    /// its teacher layer's, everything else the teacher's.
    /// </summary>
    /// <exception cref="InvalidDataException">The plan is invalid.</exception>
    /// <exception cref="InvalidOperationException">The plan is non-uniform: no single config describes it.</exception>
    [JsonIgnore]
    public LlamaConfig Student
    {
        get
        {
            EnsureValid();
            if (!IsUniform)
            {
                throw new InvalidOperationException("A non-uniform plan (allow_non_uniform) has no single student config.json; use StudentTensors() and ParameterCount.");
            }

            return DeriveConfig(Layers[0]);
        }
    }

    /// <summary>The student's parameters by component (per-layer widths are honoured for non-uniform plans).</summary>
    /// <exception cref="InvalidDataException">The plan is invalid.</exception>
    [JsonIgnore]
    public ParameterCount ParameterCount => LlamaTensorLayout.CountParameters(StudentTensors());

    /// <summary>
    /// Every tensor of the student checkpoint in state-dict order (names and shapes from <see cref="LlamaTensorLayout"/>),
    /// with per-layer shapes for non-uniform plans. Student layer j is cut from teacher layer <c>Layers[j].TeacherLayer</c>.
    /// </summary>
    /// <exception cref="InvalidDataException">The plan is invalid.</exception>
    public IReadOnlyList<TensorSpec> StudentTensors()
    {
        EnsureValid();
        if (IsUniform)
        {
            return LlamaTensorLayout.Tensors(DeriveConfig(Layers[0]));
        }

        IReadOnlyList<TensorSpec> outer = LlamaTensorLayout.Tensors(DeriveConfig(Layers[0]) with { NumHiddenLayers = 0 });
        var specs = new List<TensorSpec> { outer[0] };
        for (int j = 0; j < Layers.Count; j++)
        {
            specs.AddRange(LlamaTensorLayout.Tensors(DeriveConfig(Layers[j]) with { NumHiddenLayers = j + 1 }).Where(s => s.Layer == j));
        }

        specs.AddRange(outer.Skip(1));
        return specs;
    }

    /// <summary>
    /// Every problem with the plan, each naming the JSON field at fault (e.g. <c>layers[3].query_heads[2]</c>). Empty when
    /// the plan is valid. Needs only the teacher config.
    /// </summary>
    public IReadOnlyList<PlanError> Validate()
    {
        var errors = new List<PlanError>();
        if (FormatVersion != CurrentFormatVersion)
        {
            errors.Add(new("format_version", $"version {FormatVersion} is not supported (expected {CurrentFormatVersion})."));
        }

        if (Teacher is null)
        {
            errors.Add(new("teacher", "missing."));
            return errors;
        }

        try
        {
            Teacher.Validate("teacher");
        }
        catch (InvalidDataException ex)
        {
            errors.Add(new("teacher", ex.Message));
            return errors;
        }

        CheckIndexSet(HiddenChannels, "hidden_channels", Teacher.HiddenSize, "hidden_size", errors);
        if (KeptTokens is not null)
        {
            CheckTokens(errors);
        }

        if (Layers is null || Layers.Count == 0)
        {
            errors.Add(new("layers", "at least one layer must be kept."));
            return errors;
        }

        int groupSize = Teacher.QueryGroupSize;
        for (int j = 0; j < Layers.Count; j++)
        {
            string path = $"layers[{j}]";
            LayerPlan layer = Layers[j];
            if (layer is null)
            {
                errors.Add(new(path, "is null."));
                continue;
            }

            if (layer.TeacherLayer < 0 || layer.TeacherLayer >= Teacher.NumHiddenLayers)
            {
                errors.Add(new($"{path}.teacher_layer", $"index {layer.TeacherLayer} out of range 0..{Teacher.NumHiddenLayers - 1}."));
            }
            else if (j > 0 && Layers[j - 1] is { } previous && layer.TeacherLayer <= previous.TeacherLayer)
            {
                errors.Add(new($"{path}.teacher_layer", $"teacher layer {layer.TeacherLayer} follows teacher layer {previous.TeacherLayer}; layers must be kept in teacher order without repeats."));
            }

            bool kvOk = CheckIndexSet(layer.KvHeads, $"{path}.kv_heads", Teacher.NumKeyValueHeads, "num_key_value_heads", errors);
            bool queryOk = CheckIndexSet(layer.QueryHeads, $"{path}.query_heads", Teacher.NumAttentionHeads, "num_attention_heads", errors);
            CheckIndexSet(layer.Neurons, $"{path}.neurons", Teacher.IntermediateSize, "intermediate_size", errors);
            if (kvOk && queryOk)
            {
                CheckGrouping(layer, path, groupSize, errors);
            }
        }

        if (!AllowNonUniform && Layers.All(l => l is { KvHeads: not null, QueryHeads: not null, Neurons: not null }))
        {
            CheckUniform(errors);
        }

        return errors;
    }

    /// <summary>Throws when <see cref="Validate"/> finds any problem.</summary>
    /// <param name="source">Where the plan came from, for the message (a file path or a description).</param>
    /// <exception cref="InvalidDataException">The plan is invalid; the message lists every problem with its field path (see <see cref="Validate"/>).</exception>
    public void EnsureValid(string source = "plan")
    {
        IReadOnlyList<PlanError> errors = Validate();
        if (errors.Count > 0)
        {
            throw PlanErrors.ToException(source, errors);
        }
    }

    /// <summary>
    /// Indented JSON with stable snake_case field names in a fixed order: format_version, description, teacher,
    /// allow_non_uniform, hidden_channels, kept_tokens, layers (each: teacher_layer, kv_heads, query_heads, neurons).
    /// Index lists are written one per line.
    /// </summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Parses and validates a plan written by <see cref="ToJson"/>. Unknown fields are rejected, so a misspelt optional field is not silently ignored.</summary>
    /// <param name="json">The JSON text.</param>
    /// <param name="source">Where the text came from, for error messages.</param>
    /// <exception cref="InvalidDataException">The text is not plan JSON, or the plan is invalid.</exception>
    public static SurgeryPlan FromJson(string json, string source = "plan.json")
    {
        SurgeryPlan plan;
        try
        {
            plan = JsonSerializer.Deserialize<SurgeryPlan>(json, JsonOptions)
                ?? throw new InvalidDataException("a plan must be a JSON object, got null.");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{source}: invalid plan JSON at {ex.Path ?? "$"} ({ex.Message}).", ex);
        }
        catch (InvalidDataException ex)
        {
            throw new InvalidDataException($"{source}: {ex.Message}", ex);
        }

        plan.EnsureValid(source);
        return plan;
    }

    /// <summary>Validates the plan, then writes <see cref="ToJson"/> to <paramref name="path"/> atomically.</summary>
    /// <exception cref="InvalidDataException">The plan is invalid; nothing is written.</exception>
    public void Save(string path)
    {
        EnsureValid(path);
        AtomicFile.WriteAllText(path, ToJson());
    }

    /// <summary>Reads and validates a plan saved by <see cref="Save"/>. To edit a plan: load, change it with <c>with</c>, <see cref="EnsureValid"/>.</summary>
    /// <exception cref="InvalidDataException">The file cannot be read, is not plan JSON, or the plan is invalid; the message names the file.</exception>
    public static SurgeryPlan Load(string path) => FromJson(DataFile.ReadAllText(path, "plan"), path);

    /// <summary>One line per fact: teacher and student shapes and parameter counts.</summary>
    public string Summary()
    {
        EnsureValid();
        ParameterCount teacher = LlamaTensorLayout.CountParameters(Teacher);
        ParameterCount student = ParameterCount;
        LayerPlan first = Layers[0];
        string widths = IsUniform
            ? $"{first.QueryHeads.Count} heads / {first.KvHeads.Count} KV heads of {Teacher.HeadDim}, FFN {first.Neurons.Count}"
            : "per-layer widths (non-uniform)";
        return string.Create(CultureInfo.InvariantCulture, $"""
            teacher: {Teacher.NumHiddenLayers} layers, hidden {Teacher.HiddenSize}, {Teacher.NumAttentionHeads} heads / {Teacher.NumKeyValueHeads} KV heads of {Teacher.HeadDim}, FFN {Teacher.IntermediateSize}, vocab {Teacher.VocabSize}: {teacher.Total:N0} parameters
            student: {Layers.Count} layers (teacher {string.Join(",", Layers.Select(l => l.TeacherLayer))}), hidden {HiddenChannels.Count}, {widths}, vocab {KeptTokens?.Count ?? Teacher.VocabSize}: {student.Total:N0} parameters ({100.0 * student.Total / teacher.Total:0.0}% of the teacher)
            """);
    }

    /// <inheritdoc/>
    public bool Equals(SurgeryPlan? other) =>
        other is not null
        && FormatVersion == other.FormatVersion
        && Description == other.Description
        && AllowNonUniform == other.AllowNonUniform
        && (ReferenceEquals(Teacher, other.Teacher) || Teacher?.ToJson() == other.Teacher?.ToJson())
        && HiddenChannels.SequenceEqual(other.HiddenChannels)
        && (KeptTokens is null ? other.KeptTokens is null : other.KeptTokens is not null && KeptTokens.SequenceEqual(other.KeptTokens))
        && Layers.SequenceEqual(other.Layers);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(FormatVersion, Description, AllowNonUniform, HiddenChannels.Count, KeptTokens?.Count, Layers.Count);

    /// <summary>
    /// The student config for the widths of <paramref name="layer"/> (all layers, for uniform plans). Every student layer
    /// keeps the attention window of its teacher layer: the sliding-window keys are rewritten for the kept layers (see
    /// <see cref="LlamaConfig.WithLayerAttentionWindows"/>), so transformers reads the same per-layer windows.
    /// </summary>
    private LlamaConfig DeriveConfig(LayerPlan layer) => (Teacher with
    {
        HiddenSize = HiddenChannels.Count,
        IntermediateSize = layer.Neurons.Count,
        NumHiddenLayers = Layers.Count,
        NumAttentionHeads = layer.QueryHeads.Count,
        NumKeyValueHeads = layer.KvHeads.Count,
        ExplicitHeadDim = Teacher.HeadDim,
        VocabSize = KeptTokens?.Count ?? Teacher.VocabSize,
        BosTokenId = RemapToken(Teacher.BosTokenId),
        PadTokenId = RemapToken(Teacher.PadTokenId),
        EosTokenIds = [.. Teacher.EosTokenIds.Select(id => RemapToken(id)!.Value)],
        ExtraProperties = (JsonObject)Teacher.ExtraProperties.DeepClone(),
    }).WithLayerAttentionWindows([.. Layers.Select(l => Teacher.AttentionWindow(l.TeacherLayer))]);

    private int? RemapToken(int? teacherId)
    {
        if (teacherId is null || KeptTokens is null)
        {
            return teacherId;
        }

        for (int i = 0; i < KeptTokens.Count; i++)
        {
            if (KeptTokens[i] == teacherId)
            {
                return i;
            }
        }

        // Validation rejects plans that drop a special token, so this is unreachable for valid plans.
        throw new InvalidOperationException($"Special token {teacherId} is not in kept_tokens.");
    }

    /// <summary>Checks a sorted index set; returns true when it is usable for further checks.</summary>
    private static bool CheckIndexSet(IReadOnlyList<int>? indices, string path, int size, string sizeKey, List<PlanError> errors)
    {
        if (indices is null || indices.Count == 0)
        {
            errors.Add(new(path, $"must keep at least one index (teacher {sizeKey} is {size})."));
            return false;
        }

        int before = errors.Count;
        for (int i = 0; i < indices.Count; i++)
        {
            int index = indices[i];
            if (index < 0 || index >= size)
            {
                errors.Add(new($"{path}[{i}]", $"index {index} out of range 0..{size - 1} (teacher {sizeKey} is {size})."));
            }
            else if (i > 0 && indices[i - 1] == index)
            {
                errors.Add(new($"{path}[{i}]", $"index {index} appears twice."));
            }
            else if (i > 0 && indices[i - 1] > index && indices[i - 1] < size)
            {
                errors.Add(new($"{path}[{i}]", $"index {index} follows {indices[i - 1]}; indices must be strictly ascending."));
            }
        }

        return errors.Count == before;
    }

    private void CheckTokens(List<PlanError> errors)
    {
        IReadOnlyList<int> tokens = KeptTokens!;
        if (tokens.Count == 0)
        {
            errors.Add(new("kept_tokens", "must keep at least one token (or be null to keep the whole vocabulary)."));
            return;
        }

        var seen = new Dictionary<int, int>();
        for (int i = 0; i < tokens.Count; i++)
        {
            int id = tokens[i];
            if (id < 0 || id >= Teacher.VocabSize)
            {
                errors.Add(new($"kept_tokens[{i}]", $"token id {id} out of range 0..{Teacher.VocabSize - 1} (teacher vocab_size is {Teacher.VocabSize})."));
            }
            else if (!seen.TryAdd(id, i))
            {
                errors.Add(new($"kept_tokens[{i}]", $"token id {id} appears twice (first at kept_tokens[{seen[id]}])."));
            }
        }

        var special = new List<(string Key, int Id)>();
        if (Teacher.BosTokenId is int bos)
        {
            special.Add(("bos_token_id", bos));
        }

        special.AddRange(Teacher.EosTokenIds.Select(id => ("eos_token_id", id)));
        if (Teacher.PadTokenId is int pad)
        {
            special.Add(("pad_token_id", pad));
        }

        foreach (var (key, id) in special)
        {
            if (!seen.ContainsKey(id))
            {
                errors.Add(new("kept_tokens", $"the teacher's {key} {id} is not kept; the student's special tokens must survive."));
            }
        }
    }

    private static void CheckGrouping(LayerPlan layer, string path, int groupSize, List<PlanError> errors)
    {
        var perKv = layer.KvHeads.ToDictionary(kv => kv, _ => 0);
        for (int i = 0; i < layer.QueryHeads.Count; i++)
        {
            int kv = layer.QueryHeads[i] / groupSize;
            if (perKv.TryGetValue(kv, out int count))
            {
                perKv[kv] = count + 1;
            }
            else
            {
                errors.Add(new($"{path}.query_heads[{i}]", $"query head {layer.QueryHeads[i]} belongs to KV head {kv}, which is not in kv_heads."));
            }
        }

        int expected = perKv[layer.KvHeads[0]];
        foreach (var (kv, count) in perKv)
        {
            if (count != expected || count == 0)
            {
                errors.Add(new($"{path}.query_heads", $"KV head {kv} keeps {count} query heads but KV head {layer.KvHeads[0]} keeps {expected}; every kept KV head must keep the same number (at least one) so the student is a standard GQA model."));
                break;
            }
        }
    }

    private void CheckUniform(List<PlanError> errors)
    {
        LayerPlan first = Layers[0];
        for (int j = 1; j < Layers.Count; j++)
        {
            Compare(Layers[j].KvHeads.Count, first.KvHeads.Count, j, "kv_heads", "KV heads");
            Compare(Layers[j].QueryHeads.Count, first.QueryHeads.Count, j, "query_heads", "query heads");
            Compare(Layers[j].Neurons.Count, first.Neurons.Count, j, "neurons", "neurons");
        }

        void Compare(int count, int firstCount, int j, string field, string what)
        {
            if (count != firstCount)
            {
                errors.Add(new($"layers[{j}].{field}", $"keeps {count} {what} but layers[0] keeps {firstCount}; per-layer widths need allow_non_uniform = true, and such a student is not a standard Hugging Face Llama checkpoint."));
            }
        }
    }
}

/// <summary>Embeds a <see cref="LlamaConfig"/> as its Hugging Face <c>config.json</c> object.</summary>
internal sealed class LlamaConfigJsonConverter : JsonConverter<LlamaConfig>
{
    public override LlamaConfig Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        JsonNode node = JsonNode.Parse(ref reader) ?? throw new JsonException("teacher must be a config.json object, not null.");
        return LlamaConfig.Parse(node.ToJsonString(), "teacher");
    }

    public override void Write(Utf8JsonWriter writer, LlamaConfig value, JsonSerializerOptions options) =>
        JsonNode.Parse(value.ToJson())!.WriteTo(writer, options);
}
