using ModelSurgery.Inference.Modeling;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// One metric's accumulator for one layer-by-layer pass (see <see cref="ILayerPassMetric"/>). The pass calls, in this
/// order: <see cref="OnEmbedding"/>; <see cref="OnHiddenStates"/> for the embedding output; then for every layer
/// <see cref="OnActivations"/> and <see cref="OnBatch"/> per calibration batch, <see cref="OnHiddenStates"/> for the
/// layer's output and <see cref="OnLayer"/>; finally <see cref="OnFinalNorm"/>, <see cref="OnHead"/> (untied heads
/// only) and <see cref="Finish"/>. The activation, batch and hidden-state calls happen only when calibration data runs
/// forward.
/// Tensors handed in belong to the pass (on the compute device, in the dtype it computes in: float32 when streaming, the
/// model's own when it is resident; no gradients) and are valid only during the call; keep a <c>detach()</c>ed handle to
/// hold on to one. Override only what the metric reads.
/// </summary>
public abstract class LayerPassObserver : IDisposable
{
    /// <summary>The embedding matrix, [V, D].</summary>
    public virtual void OnEmbedding(Tensor weight)
    {
    }

    /// <summary>The hidden states of all calibration sequences entering layer <paramref name="layer"/>, [N, T, D]; <paramref name="layer"/> = L for the last layer's output.</summary>
    public virtual void OnHiddenStates(int layer, Tensor states)
    {
    }

    /// <summary>The intermediate activations of one batch inside layer <paramref name="layer"/>'s own forward pass.</summary>
    public virtual void OnActivations(int layer, LayerActivations activations)
    {
    }

    /// <summary>One batch's input and output of layer <paramref name="layer"/>, both [B, T, D].</summary>
    public virtual void OnBatch(int layer, Tensor input, Tensor output)
    {
    }

    /// <summary>Layer <paramref name="layer"/> is done (every batch has gone through it); its weights are still loaded.</summary>
    public virtual void OnLayer(int layer, LlamaDecoderLayer weights)
    {
    }

    /// <summary>The final norm's weight [D] and, when calibration data ran forward, the last layer's output [N, T, D].</summary>
    public virtual void OnFinalNorm(Tensor weight, Tensor? states)
    {
    }

    /// <summary>The untied LM head, [V, D] (not called when the head is tied to the embedding).</summary>
    public virtual void OnHead(Tensor weight)
    {
    }

    /// <summary>The metric's scores once the pass is over.</summary>
    public abstract UnitScores Finish();

    /// <summary>Releases tensors the observer holds.</summary>
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases tensors the observer holds; override when it holds any.</summary>
    protected virtual void Dispose(bool disposing)
    {
    }
}
