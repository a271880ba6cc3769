using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Planning;

namespace ModelSurgery.Reproduction;

/// <summary>
/// Shapes of models trained from scratch at a fixed total parameter count (embeddings tied to the head, so the
/// vocabulary costs vocab × hidden once). Built on <see cref="BudgetPlanner"/>: the candidates it lists for an envelope
/// config as large as any shape considered, filtered and ranked for each sweep.
/// </summary>
public static class ShapeSolver
{
    /// <summary>Width of every attention head of the sweeps' models (hidden = heads × this).</summary>
    public const int HeadDim = 16;

    /// <summary>The MLP / hidden ratio preferred when several widths fit a depth (Llama's SwiGLU 8/3).</summary>
    public const double PreferredFfnRatio = 8.0 / 3.0;

    /// <summary>Accepted relative distance from the budget.</summary>
    public const double Tolerance = 0.03;

    /// <summary>
    /// The tokenizer sweep's shape: hidden size fixed at <paramref name="hidden"/>, as many layers as the budget leaves
    /// room for once the vocabulary's embedding is paid (MLP ratio 2-4, MLP width a multiple of 16).
    /// </summary>
    /// <param name="budget">Total parameters.</param>
    /// <param name="vocab">Vocabulary size.</param>
    /// <param name="hidden">Hidden size (a multiple of <see cref="HeadDim"/>).</param>
    /// <param name="maxLayers">Deepest shape considered.</param>
    /// <returns>The deepest shape within <see cref="Tolerance"/> of the budget.</returns>
    /// <exception cref="ArgumentException">No shape fits, e.g. the embedding alone exceeds the budget; the message says why.</exception>
    public static ShapeCandidate ForVocabulary(long budget, int vocab, int hidden, int maxLayers = 32)
    {
        if (hidden <= 0 || hidden % HeadDim != 0)
        {
            throw new ArgumentException($"Hidden size {hidden} must be a positive multiple of {HeadDim}.", nameof(hidden));
        }

        IReadOnlyList<ShapeCandidate> candidates = BudgetPlanner.Candidates(Envelope(hidden, maxLayers, vocab), budget, Constraints(vocab));
        return candidates.FirstOrDefault(c => c.Shape.HiddenSize == hidden)
            ?? throw new ArgumentException(
                $"No shape with hidden {hidden} and vocab {vocab} comes within {Tolerance:P0} of {budget:N0} parameters (the embedding alone is {(long)vocab * hidden:N0}).", nameof(budget));
    }

    /// <summary>
    /// The depth/width sweep's shape for <paramref name="layers"/> layers: among hidden sizes up to
    /// <paramref name="maxHidden"/> whose MLP (ratio 2-4) brings the total within <see cref="Tolerance"/> of the budget,
    /// the one whose MLP ratio is closest to <see cref="PreferredFfnRatio"/> (then closest to the budget).
    /// </summary>
    /// <param name="budget">Total parameters.</param>
    /// <param name="layers">Decoder layers.</param>
    /// <param name="vocab">Vocabulary size.</param>
    /// <param name="maxHidden">Widest hidden size considered.</param>
    /// <returns>The shape.</returns>
    /// <exception cref="ArgumentException">No width fits the budget at this depth.</exception>
    public static ShapeCandidate ForDepth(long budget, int layers, int vocab, int maxHidden = 512)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(layers, 1);
        IReadOnlyList<ShapeCandidate> candidates = BudgetPlanner.Candidates(
            Envelope(maxHidden, layers, vocab), budget, Constraints(vocab) with { MinLayers = layers, MaxLayers = layers });
        return candidates
            .OrderBy(c => Math.Abs(c.FfnRatio - PreferredFfnRatio))
            .ThenBy(c => Math.Abs(c.BudgetDeviation))
            .FirstOrDefault()
            ?? throw new ArgumentException($"No width up to {maxHidden} gives {layers} layers with vocab {vocab} within {Tolerance:P0} of {budget:N0} parameters.", nameof(budget));
    }

    /// <summary>The config of a from-scratch model of <paramref name="shape"/> for a corpus whose separator is <paramref name="separatorId"/>.</summary>
    public static LlamaConfig ConfigOf(StudentShape shape, int seqLen, int separatorId)
    {
        ArgumentNullException.ThrowIfNull(shape);
        return shape.ToConfig(Envelope(shape.HiddenSize, shape.NumHiddenLayers, shape.VocabSize)) with
        {
            MaxPositionEmbeddings = seqLen,
            BosTokenId = separatorId,
            EosTokenIds = [separatorId],
        };
    }

    // The largest model considered: multi-head attention (one KV head per query head), MLP up to 4x.
    private static LlamaConfig Envelope(int hidden, int layers, int vocab) => new()
    {
        VocabSize = vocab,
        HiddenSize = hidden,
        IntermediateSize = 4 * hidden,
        NumHiddenLayers = layers,
        NumAttentionHeads = hidden / HeadDim,
        NumKeyValueHeads = hidden / HeadDim,
        MaxPositionEmbeddings = 128,
        RmsNormEps = 1e-5,
        TieWordEmbeddings = true,
        TorchDtype = "float32",
    };

    private static BudgetConstraints Constraints(int vocab) => new()
    {
        Tolerance = Tolerance,
        HiddenMultiple = HeadDim,
        IntermediateMultiple = 16,
        MinFfnRatio = 2.0,
        MaxFfnRatio = 4.0,
        VocabSize = vocab,
    };
}
