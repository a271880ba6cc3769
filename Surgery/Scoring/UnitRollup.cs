using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// Element-wise importance of one decoder layer's matrices (e.g. |W|, W², |W|·‖X‖, |W·∂L/∂W|), each in the shape of its
/// weight ([out, in]); norms are [D] and may be null when a metric does not score them.
/// </summary>
/// <param name="Query">q_proj, [H*hd, D].</param>
/// <param name="Key">k_proj, [KV*hd, D].</param>
/// <param name="Value">v_proj, [KV*hd, D].</param>
/// <param name="Output">o_proj, [D, H*hd].</param>
/// <param name="Gate">gate_proj, [F, D].</param>
/// <param name="Up">up_proj, [F, D].</param>
/// <param name="Down">down_proj, [D, F].</param>
/// <param name="InputNorm">input_layernorm, [D], or null.</param>
/// <param name="PostAttentionNorm">post_attention_layernorm, [D], or null.</param>
public sealed record LayerElementScores(Tensor Query, Tensor Key, Tensor Value, Tensor Output, Tensor Gate, Tensor Up, Tensor Down, Tensor? InputNorm, Tensor? PostAttentionNorm)
{
    /// <summary>Maps every weight of <paramref name="layer"/> through <paramref name="score"/> (norms included when <paramref name="includeNorms"/>).</summary>
    public static LayerElementScores FromLayer(LlamaDecoderLayer layer, Func<Tensor, Tensor> score, bool includeNorms)
    {
        ArgumentNullException.ThrowIfNull(layer);
        ArgumentNullException.ThrowIfNull(score);
        LlamaAttention a = layer.Attention;
        LlamaMlp m = layer.Mlp;
        return new LayerElementScores(
            score(a.QueryProjection.Weight), score(a.KeyProjection.Weight), score(a.ValueProjection.Weight), score(a.OutputProjection.Weight),
            score(m.GateProjection.Weight), score(m.UpProjection.Weight), score(m.DownProjection.Weight),
            includeNorms ? score(layer.InputNorm.Weight) : null, includeNorms ? score(layer.PostAttentionNorm.Weight) : null);
    }
}

/// <summary>
/// Rolls element-wise importance up to the structures that surgery keeps or removes, so that every metric shares one
/// definition of what belongs to a unit.
/// </summary>
/// <remarks>
/// A query head owns its <c>hd</c> rows of q_proj and its <c>hd</c> columns of o_proj. A KV group owns its rows of
/// k_proj and v_proj plus all its query heads. An FFN neuron owns its row of gate_proj and up_proj and its column of
/// down_proj. A hidden channel owns, in every layer, its column of each projection that reads the residual stream
/// (q/k/v/gate/up), its row of each projection that writes it (o/down) and its norm weights; globally also its column of
/// the embedding and the untied head and its final-norm weight. Biases are not scored.
/// </remarks>
public static class UnitRollup
{
    /// <summary>Sum per query head, [H].</summary>
    public static double[] Heads(LayerElementScores scores, LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(scores);
        ArgumentNullException.ThrowIfNull(config);
        using var scope = torch.NewDisposeScope();
        return ToArray(HeadTensor(scores, config));
    }

    /// <summary>Sum per KV group (its k/v rows and its query heads), [KV].</summary>
    public static double[] KvGroups(LayerElementScores scores, LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(scores);
        ArgumentNullException.ThrowIfNull(config);
        using var scope = torch.NewDisposeScope();
        long kv = config.NumKeyValueHeads, hd = config.HeadDim;
        Tensor own = Sum(scores.Key.view(kv, hd, -1), 1, 2) + Sum(scores.Value.view(kv, hd, -1), 1, 2); // [KV]
        Tensor heads = HeadTensor(scores, config).view(kv, config.QueryGroupSize).sum(1); // [KV]
        return ToArray(own + heads);
    }

    /// <summary>Sum per FFN neuron, [F].</summary>
    public static double[] Neurons(LayerElementScores scores)
    {
        ArgumentNullException.ThrowIfNull(scores);
        using var scope = torch.NewDisposeScope();
        return ToArray(Sum(scores.Gate, 1) + Sum(scores.Up, 1) + Sum(scores.Down, 0)); // [F]
    }

    /// <summary>This layer's share of each hidden channel's sum, [D].</summary>
    public static double[] Channels(LayerElementScores scores)
    {
        ArgumentNullException.ThrowIfNull(scores);
        using var scope = torch.NewDisposeScope();
        Tensor reads = Sum(scores.Query, 0) + Sum(scores.Key, 0) + Sum(scores.Value, 0) + Sum(scores.Gate, 0) + Sum(scores.Up, 0); // [D]
        Tensor writes = Sum(scores.Output, 1) + Sum(scores.Down, 1); // [D]
        Tensor total = reads + writes; // [D]
        if (scores.InputNorm is not null)
        {
            total = total + scores.InputNorm.to_type(ScalarType.Float64); // [D]
        }

        if (scores.PostAttentionNorm is not null)
        {
            total = total + scores.PostAttentionNorm.to_type(ScalarType.Float64); // [D]
        }

        return ToArray(total);
    }

    /// <summary>Per-channel sum of a [rows, D] matrix that is indexed by channel in its columns (embedding, head), [D].</summary>
    public static double[] ColumnSums(Tensor rowsByChannel)
    {
        ArgumentNullException.ThrowIfNull(rowsByChannel);
        using var scope = torch.NewDisposeScope();
        return ToArray(Sum(rowsByChannel, 0));
    }

    /// <summary>A tensor's values as doubles (on the CPU).</summary>
    public static double[] ToArray(Tensor values)
    {
        ArgumentNullException.ThrowIfNull(values);
        using var scope = torch.NewDisposeScope();
        return values.detach().to_type(ScalarType.Float64).cpu().contiguous().data<double>().ToArray();
    }

    private static Tensor HeadTensor(LayerElementScores scores, LlamaConfig config)
    {
        long h = config.NumAttentionHeads, hd = config.HeadDim;
        Tensor rows = Sum(scores.Query.view(h, hd, -1), 1, 2); // [H]
        Tensor columns = Sum(scores.Output.view(-1, h, hd), 0, 2); // [H]
        return rows + columns;
    }

    private static Tensor Sum(Tensor x, params long[] dims) => x.to_type(ScalarType.Float64).sum(dims);
}
