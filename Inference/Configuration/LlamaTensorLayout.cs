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

/// <summary>One tensor of a Llama-family checkpoint: its Hugging Face name, shape and role.</summary>
/// <param name="Name">State-dict key, e.g. <c>model.layers.3.self_attn.q_proj.weight</c>.</param>
/// <param name="Shape">Shape in the checkpoint (PyTorch layout: Linear weights are [out, in]).</param>
/// <param name="Component">What the tensor counts towards.</param>
/// <param name="Layer">Decoder layer index, or null for embeddings, the final norm and the head.</param>
public sealed record TensorSpec(string Name, long[] Shape, ParameterComponent Component, int? Layer)
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
        var specs = new List<TensorSpec> { new(EmbedTokens, [config.VocabSize, d], ParameterComponent.Embeddings, null) };
        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            string p = LayerPrefix(i);
            specs.Add(new(p + "input_layernorm.weight", [d], ParameterComponent.Norms, i));
            AddLinear(p + "self_attn.q_proj", q, d, config.HasQkvBias, ParameterComponent.Attention, i);
            AddLinear(p + "self_attn.k_proj", kv, d, config.HasQkvBias, ParameterComponent.Attention, i);
            AddLinear(p + "self_attn.v_proj", kv, d, config.HasQkvBias, ParameterComponent.Attention, i);
            AddLinear(p + "self_attn.o_proj", d, q, config.HasOutputBias, ParameterComponent.Attention, i);
            specs.Add(new(p + "post_attention_layernorm.weight", [d], ParameterComponent.Norms, i));
            AddLinear(p + "mlp.gate_proj", ffn, d, config.MlpBias, ParameterComponent.Mlp, i);
            AddLinear(p + "mlp.up_proj", ffn, d, config.MlpBias, ParameterComponent.Mlp, i);
            AddLinear(p + "mlp.down_proj", d, ffn, config.MlpBias, ParameterComponent.Mlp, i);
        }

        specs.Add(new(FinalNorm, [d], ParameterComponent.Norms, null));
        if (!config.TieWordEmbeddings)
        {
            specs.Add(new(LmHead, [config.VocabSize, d], ParameterComponent.Head, null));
        }

        return specs;

        void AddLinear(string name, long outFeatures, long inFeatures, bool bias, ParameterComponent component, int layer)
        {
            specs.Add(new(name + ".weight", [outFeatures, inFeatures], component, layer));
            if (bias)
            {
                specs.Add(new(name + ".bias", [outFeatures], component, layer));
            }
        }
    }

    /// <summary>Counts the parameters of <paramref name="config"/> by component, without allocating any weight.</summary>
    public static ParameterCount CountParameters(LlamaConfig config)
    {
        long embeddings = 0, attention = 0, mlp = 0, norms = 0, head = 0;
        foreach (TensorSpec spec in Tensors(config))
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
