using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Surgery.Planning;

/// <summary>Target sizes of a student (head_dim is always the teacher's), e.g. a <see cref="BudgetPlanner"/> candidate.</summary>
/// <param name="NumHiddenLayers">Decoder layers.</param>
/// <param name="HiddenSize">Hidden channels kept.</param>
/// <param name="IntermediateSize">FFN neurons kept per layer.</param>
/// <param name="NumAttentionHeads">Query heads per layer (a multiple of <paramref name="NumKeyValueHeads"/>).</param>
/// <param name="NumKeyValueHeads">KV heads per layer.</param>
/// <param name="VocabSize">Vocabulary size (the teacher's unless tokens are dropped by vocabulary compression).</param>
public sealed record StudentShape(int NumHiddenLayers, int HiddenSize, int IntermediateSize, int NumAttentionHeads, int NumKeyValueHeads, int VocabSize)
{
    /// <summary>The sizes of <paramref name="config"/> itself.</summary>
    public static StudentShape Of(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return new(config.NumHiddenLayers, config.HiddenSize, config.IntermediateSize, config.NumAttentionHeads, config.NumKeyValueHeads, config.VocabSize);
    }

    /// <summary>
    /// The config of a student of this shape cut from <paramref name="teacher"/> (explicit teacher head_dim). A shape does
    /// not say which layers are kept, so per-layer attention windows follow the teacher's first layers, which keeps the
    /// config valid (one <c>layer_types</c> entry per layer); a plan gives each kept layer its own teacher layer's window.
    /// </summary>
    public LlamaConfig ToConfig(LlamaConfig teacher)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        LlamaConfig layered = teacher.HasSlidingWindowLayers || teacher.LayerTypes is not null
            ? teacher.WithLayerAttentionWindows([.. Enumerable.Range(0, NumHiddenLayers).Select(i => teacher.LayerAttentionWindows[Math.Min(i, teacher.NumHiddenLayers - 1)])])
            : teacher;
        return layered with
        {
            NumHiddenLayers = NumHiddenLayers,
            HiddenSize = HiddenSize,
            IntermediateSize = IntermediateSize,
            NumAttentionHeads = NumAttentionHeads,
            NumKeyValueHeads = NumKeyValueHeads,
            VocabSize = VocabSize,
            ExplicitHeadDim = teacher.HeadDim,
        };
    }

    /// <summary>Parameters of a student of this shape cut from <paramref name="teacher"/>.</summary>
    public ParameterCount CountParameters(LlamaConfig teacher) => LlamaTensorLayout.CountParameters(ToConfig(teacher));

    /// <summary><c>L20 D1792 H14/KV14 FFN4864 V48000</c>.</summary>
    public override string ToString() =>
        $"L{NumHiddenLayers} D{HiddenSize} H{NumAttentionHeads}/KV{NumKeyValueHeads} FFN{IntermediateSize} V{VocabSize}";
}
