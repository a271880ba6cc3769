using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// The one pass over the layers that every <see cref="ILayerPassMetric"/> shares: layer l's weights are loaded (streamed
/// from a <see cref="IWeightSource"/>, or taken from a model in memory), every calibration sequence goes through its own
/// forward pass, and the observers see the weights, the activations and the hidden states before moving on. Memory: one
/// layer's weights and the hidden states [N, T, D] of all calibration sequences, plus whatever states observers hold.
/// </summary>
internal static partial class CalibrationRunner
{
    /// <summary>Runs the pass, with calibration data going forward when <paramref name="forward"/>.</summary>
    public static void Run(ModelAccess access, CalibrationData? data, bool forward, IReadOnlyList<LayerPassObserver> observers, int batchSize, IProgress<ScoringProgress>? progress, ILogger logger, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        if (forward && data is null)
        {
            throw new ArgumentException("The layer pass needs calibration data to run forward, but none was given.", nameof(data));
        }

        int layers = access.Config.NumHiddenLayers;
        using var noGrad = torch.no_grad();
        LogStarted(logger, access.Location, layers, data?.SequenceCount ?? 0, data?.SequenceLength ?? 0);
        Tensor? hidden = null; // [N, T, D]
        RotaryTables? rope = null;
        using var masks = new AttentionMasks(); // every batch of every layer has the same shape: one mask per window
        try
        {
            using (Tensor embedding = access.ReadEmbedding())
            {
                Each(observers, o => o.OnEmbedding(embedding));
                if (forward)
                {
                    hidden = EmbedAll(embedding, data!, access.Device); // [N, T, D]
                    rope = access.Rotary.CreateTables(0, data!.SequenceLength, hidden.dtype, access.Device);
                    Each(observers, o => o.OnHiddenStates(0, hidden));
                }
            }

            for (int l = 0; l < layers; l++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                LlamaDecoderLayer layer = access.Layer(l);
                if (hidden is not null)
                {
                    Tensor next = Forward(l, layer, hidden, data!, batchSize, rope!, masks, observers, cancellationToken); // [N, T, D]
                    hidden.Dispose();
                    hidden = next;
                    Each(observers, o => o.OnHiddenStates(l + 1, next));
                }

                Each(observers, o => o.OnLayer(l, layer));
                LogLayer(logger, l + 1, layers);
                progress?.Report(new ScoringProgress("forward statistics", l + 1, layers));
            }

            using (Tensor finalNorm = access.ReadFinalNorm())
            {
                Each(observers, o => o.OnFinalNorm(finalNorm, hidden));
            }

            using Tensor? head = access.ReadUntiedHead();
            if (head is not null)
            {
                Each(observers, o => o.OnHead(head));
            }
        }
        finally
        {
            rope?.Dispose();
            hidden?.Dispose();
        }
    }

    internal static void CheckTokens(CalibrationData data, LlamaConfig config)
    {
        if (data.MaxTokenId >= config.VocabSize)
        {
            throw new ArgumentException($"Calibration data holds token id {data.MaxTokenId}, outside the model's vocabulary of {config.VocabSize}.", nameof(data));
        }
    }

    /// <summary>Every calibration batch through layer <paramref name="l"/>, the observers watching; returns the layer's output [N, T, D].</summary>
    private static Tensor Forward(int l, LlamaDecoderLayer layer, Tensor hidden, CalibrationData data, int batchSize, RotaryTables rope, AttentionMasks masks, IReadOnlyList<LayerPassObserver> observers, CancellationToken cancellationToken)
    {
        var taps = new LayerTaps(Observer: activations => Each(observers, o => o.OnActivations(l, activations)));
        Tensor next = torch.empty_like(hidden); // [N, T, D]
        try
        {
            foreach (var (start, count) in data.Batches(batchSize))
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                Tensor input = hidden.narrow(0, start, count); // [B, T, D]
                Tensor output = layer.forward(input, rope, null, masks, taps); // [B, T, D]
                next.narrow(0, start, count).copy_(output);
                Each(observers, o => o.OnBatch(l, input, output));
            }

            return next;
        }
        catch
        {
            next.Dispose();
            throw;
        }
    }

    private static Tensor EmbedAll(Tensor embedding, CalibrationData data, Device device)
    {
        using var scope = torch.NewDisposeScope();
        Tensor ids = data.Batch(0, data.SequenceCount, device); // [N, T]
        Tensor rows = embedding.index_select(0, ids.reshape(-1)); // [N*T, D]
        return rows.view(data.SequenceCount, data.SequenceLength, -1).contiguous().MoveToOuterDisposeScope(); // [N, T, D]
    }

    private static void Each(IReadOnlyList<LayerPassObserver> observers, Action<LayerPassObserver> call)
    {
        foreach (LayerPassObserver observer in observers)
        {
            call(observer);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Collecting forward statistics of {Location}: {Layers} layers, {Sequences} x {Length} calibration tokens")]
    private static partial void LogStarted(ILogger logger, string location, int layers, int sequences, int length);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Layer {Done}/{Total} done")]
    private static partial void LogLayer(ILogger logger, int done, int total);
}
