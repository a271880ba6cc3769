using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// Layer redundancy measured on hidden states: ShortGPT's Block Influence and the angular distance of Gromov et al.
/// ("The Unreasonable Ineffectiveness of the Deeper Layers").
/// </summary>
public static class LayerSimilarity
{
    /// <summary>
    /// Block Influence of a layer: 1 - cos(input, output) averaged over tokens. Inputs are hidden states [..., D] of equal
    /// shape; 0 means the layer leaves the residual stream's direction unchanged, so it can go first.
    /// </summary>
    public static double BlockInfluence(Tensor layerInput, Tensor layerOutput)
    {
        (double sum, long count) = CosineSum(layerInput, layerOutput);
        return 1.0 - (sum / count);
    }

    /// <summary>
    /// Angular distance arccos(cos(a, b)) / π averaged over tokens, between hidden states [..., D] of equal shape
    /// (the inputs of layer l and of layer l + n); in [0, 1].
    /// </summary>
    public static double AngularDistance(Tensor a, Tensor b)
    {
        (double sum, long count) = AngleSum(a, b);
        return sum / count;
    }

    /// <summary>
    /// Angular distances between the states entering layer l and layer l + <paramref name="span"/>, for l = 0 .. L - span,
    /// given the L + 1 hidden states <paramref name="states"/> (embedding output, then every layer's output).
    /// </summary>
    /// <exception cref="ArgumentException">The span is not in [1, L].</exception>
    public static double[] AngularDistances(IReadOnlyList<Tensor> states, int span)
    {
        ArgumentNullException.ThrowIfNull(states);
        int layers = states.Count - 1;
        CheckSpan(span, layers);
        var distances = new double[layers - span + 1];
        for (int l = 0; l < distances.Length; l++)
        {
            distances[l] = AngularDistance(states[l], states[l + span]);
        }

        return distances;
    }

    /// <summary>
    /// Turns window distances (window l covers layers l .. l + span - 1) into per-layer scores, higher = more important:
    /// each layer gets the smallest distance of any window containing it, so the layers of the most redundant block
    /// rank lowest together.
    /// </summary>
    /// <exception cref="ArgumentException">The number of windows does not match <paramref name="layers"/> and <paramref name="span"/>.</exception>
    public static double[] LayerScoresFromWindows(IReadOnlyList<double> windowDistances, int layers, int span)
    {
        ArgumentNullException.ThrowIfNull(windowDistances);
        CheckSpan(span, layers);
        if (windowDistances.Count != layers - span + 1)
        {
            throw new ArgumentException($"{layers} layers with span {span} have {layers - span + 1} windows, got {windowDistances.Count} distances.", nameof(windowDistances));
        }

        var scores = Enumerable.Repeat(double.PositiveInfinity, layers).ToArray();
        for (int l = 0; l < windowDistances.Count; l++)
        {
            for (int j = l; j < l + span; j++)
            {
                scores[j] = Math.Min(scores[j], windowDistances[l]);
            }
        }

        return scores;
    }

    /// <summary>Sum over tokens of cos(a, b) and the token count; states are [..., D].</summary>
    internal static (double Sum, long Count) CosineSum(Tensor a, Tensor b)
    {
        using var scope = torch.NewDisposeScope();
        Tensor cosines = Cosines(a, b); // [...]
        return (cosines.sum().item<double>(), cosines.numel());
    }

    /// <summary>Sum over tokens of arccos(cos(a, b)) / π and the token count; states are [..., D].</summary>
    internal static (double Sum, long Count) AngleSum(Tensor a, Tensor b)
    {
        using var scope = torch.NewDisposeScope();
        Tensor angles = Cosines(a, b).clamp(-1.0, 1.0).arccos() / Math.PI; // [...]
        return (angles.sum().item<double>(), angles.numel());
    }

    private static Tensor Cosines(Tensor a, Tensor b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (!a.shape.SequenceEqual(b.shape))
        {
            throw new ArgumentException($"Hidden states differ in shape: [{string.Join(", ", a.shape)}] vs [{string.Join(", ", b.shape)}].", nameof(b));
        }

        // float64 so that near-identical states give a distance near 0 rather than rounding noise.
        return nn.functional.cosine_similarity(a.to_type(ScalarType.Float64), b.to_type(ScalarType.Float64), -1, 1e-12); // [...]
    }

    private static void CheckSpan(int span, int layers)
    {
        if (span < 1 || span > layers)
        {
            throw new ArgumentException($"Angular distance span must be in [1, {layers}] (the layer count), got {span}.", nameof(span));
        }
    }
}
