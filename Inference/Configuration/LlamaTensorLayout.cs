namespace ModelSurgery.Inference.Configuration;

/// <summary>Which part of the model a parameter belongs to, for parameter accounting.</summary>
public enum ParameterComponent
{
    /// <summary>The token embedding matrix.</summary>
    Embeddings,

    /// <summary>q/k/v/o projections (and their biases).</summary>
    Attention,

    /// <summary>gate/up/down projections (and their biases).</summary>
    Mlp,

    /// <summary>RMSNorm weights.</summary>
    Norms,

    /// <summary>The untied LM head.</summary>
    Head,
}

/// <summary>What a tensor does in the network, so code that transforms weights never has to parse names.</summary>
public enum TensorRole
{
    /// <summary><c>model.embed_tokens</c>: [vocab, hidden].</summary>
    Embedding,

    /// <summary><c>input_layernorm</c>: [hidden].</summary>
    InputNorm,

    /// <summary><c>self_attn.q_proj</c>: [heads * head_dim, hidden].</summary>
    QueryProjection,

    /// <summary><c>self_attn.k_proj</c>: [kv_heads * head_dim, hidden].</summary>
    KeyProjection,

    /// <summary><c>self_attn.v_proj</c>: [kv_heads * head_dim, hidden].</summary>
    ValueProjection,

    /// <summary><c>self_attn.o_proj</c>: [hidden, heads * head_dim].</summary>
    OutputProjection,

    /// <summary><c>post_attention_layernorm</c>: [hidden].</summary>
    PostAttentionNorm,

    /// <summary><c>mlp.gate_proj</c>: [intermediate, hidden].</summary>
    GateProjection,

    /// <summary><c>mlp.up_proj</c>: [intermediate, hidden].</summary>
    UpProjection,

    /// <summary><c>mlp.down_proj</c>: [hidden, intermediate].</summary>
    DownProjection,

    /// <summary><c>model.norm</c>: [hidden].</summary>
    FinalNorm,

    /// <summary><c>lm_head</c>: [vocab, hidden].</summary>
    LmHead,
}

/// <summary>One tensor of a Llama-family checkpoint: its Hugging Face name, shape and role.</summary>
/// <param name="Name">State-dict key, e.g. <c>model.layers.3.self_attn.q_proj.weight</c>.</param>
/// <param name="Shape">Shape in the checkpoint (PyTorch layout: Linear weights are [out, in]).</param>
/// <param name="Component">What the tensor counts towards.</param>
/// <param name="Layer">Decoder layer index, or null for embeddings, the final norm and the head.</param>
/// <param name="Role">What the tensor does.</param>
/// <param name="IsBias">True for a projection's bias (its one dimension is the projection's output).</param>
public sealed record TensorSpec(string Name, long[] Shape, ParameterComponent Component, int? Layer, TensorRole Role, bool IsBias = false)
{
    /// <summary>Number of elements.</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>Parameters of a model split by component.</summary>
public sealed record ParameterCount(long Embeddings, long Attention, long Mlp, long Norms, long Head)
{
    /// <summary>All parameters.</summary>
    public long Total => Embeddings + Attention + Mlp + Norms + Head;

    /// <summary>Parameters outside the embedding matrix and the LM head.</summary>
    public long NonEmbedding => Attention + Mlp + Norms;

    /// <summary>Share of all parameters held by the embedding matrix and the LM head (tied or not).</summary>
    public double EmbeddingShare => Total == 0 ? 0 : (double)(Embeddings + Head) / Total;
}

/// <summary>
/// The one table that maps a <see cref="LlamaConfig"/> to the tensors of its Hugging Face checkpoint. Loaders, writers,
/// the model, synthetic checkpoints and surgery all use it, so names and shapes are defined in exactly one place.
/// </summary>
public static class LlamaTensorLayout
{
    /// <summary>Key of the token embedding.</summary>
    public const string EmbedTokens = "model.embed_tokens.weight";

    /// <summary>Key of the final RMSNorm.</summary>
    public const string FinalNorm = "model.norm.weight";

    /// <summary>Key of the LM head (absent when embeddings are tied).</summary>
    public const string LmHead = "lm_head.weight";

    /// <summary>Prefix of every key of decoder layer <paramref name="layer"/>.</summary>
    public static string LayerPrefix(int layer) => $"model.layers.{layer}.";

    /// <summary>Every tensor of a checkpoint for <paramref name="config"/>, in state-dict order.</summary>
    public static IReadOnlyList<TensorSpec> Tensors(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        long d = config.HiddenSize;
        long q = (long)config.NumAttentionHeads * config.HeadDim;
        long kv = (long)config.NumKeyValueHeads * config.HeadDim;
        long ffn = config.IntermediateSize;
        var specs = new List<TensorSpec> { new(EmbedTokens, [config.VocabSize, d], ParameterComponent.Embeddings, null, TensorRole.Embedding) };
        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            string p = LayerPrefix(i);
            specs.Add(new(p + "input_layernorm.weight", [d], ParameterComponent.Norms, i, TensorRole.InputNorm));
            AddLinear(p + "self_attn.q_proj", q, d, config.HasQkvBias, ParameterComponent.Attention, i, TensorRole.QueryProjection);
            AddLinear(p + "self_attn.k_proj", kv, d, config.HasQkvBias, ParameterComponent.Attention, i, TensorRole.KeyProjection);
            AddLinear(p + "self_attn.v_proj", kv, d, config.HasQkvBias, ParameterComponent.Attention, i, TensorRole.ValueProjection);
            AddLinear(p + "self_attn.o_proj", d, q, config.HasOutputBias, ParameterComponent.Attention, i, TensorRole.OutputProjection);
            specs.Add(new(p + "post_attention_layernorm.weight", [d], ParameterComponent.Norms, i, TensorRole.PostAttentionNorm));
            AddLinear(p + "mlp.gate_proj", ffn, d, config.MlpBias, ParameterComponent.Mlp, i, TensorRole.GateProjection);
            AddLinear(p + "mlp.up_proj", ffn, d, config.MlpBias, ParameterComponent.Mlp, i, TensorRole.UpProjection);
            AddLinear(p + "mlp.down_proj", d, ffn, config.MlpBias, ParameterComponent.Mlp, i, TensorRole.DownProjection);
        }

        specs.Add(new(FinalNorm, [d], ParameterComponent.Norms, null, TensorRole.FinalNorm));
        if (!config.TieWordEmbeddings)
        {
            specs.Add(new(LmHead, [config.VocabSize, d], ParameterComponent.Head, null, TensorRole.LmHead));
        }

        return specs;

        void AddLinear(string name, long outFeatures, long inFeatures, bool bias, ParameterComponent component, int layer, TensorRole role)
        {
            specs.Add(new(name + ".weight", [outFeatures, inFeatures], component, layer, role));
            if (bias)
            {
                specs.Add(new(name + ".bias", [outFeatures], component, layer, role, IsBias: true));
            }
        }
    }

    /// <summary>Counts the parameters of <paramref name="config"/> by component, without allocating any weight.</summary>
    public static ParameterCount CountParameters(LlamaConfig config) => CountParameters(Tensors(config));

    /// <summary>Counts the parameters of a list of tensors by component (e.g. a student with per-layer widths).</summary>
    public static ParameterCount CountParameters(IEnumerable<TensorSpec> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        long embeddings = 0, attention = 0, mlp = 0, norms = 0, head = 0;
        foreach (TensorSpec spec in tensors)
        {
            switch (spec.Component)
            {
                case ParameterComponent.Embeddings: embeddings += spec.ElementCount; break;
                case ParameterComponent.Attention: attention += spec.ElementCount; break;
                case ParameterComponent.Mlp: mlp += spec.ElementCount; break;
                case ParameterComponent.Norms: norms += spec.ElementCount; break;
                case ParameterComponent.Head: head += spec.ElementCount; break;
            }
        }

        return new ParameterCount(embeddings, attention, mlp, norms, head);
    }
}
