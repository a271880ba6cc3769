using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Surgery.Scoring;
using TorchSharp;

namespace ModelSurgery.Tests.Scoring;

/// <summary>The scoring memory estimate against hand counts, and its refusal before any weight is read.</summary>
public sealed class ScoringMemoryTests
{
    // 1 layer, hidden 4, FFN 6, 2 query heads sharing 1 KV head, vocab 10. One layer: norms 8 + q 16 + k 8 + v 8 + o 16 +
    // gate/up/down 3*24 = 128 parameters, its largest tensor 24.
    private static LlamaConfig Tiny() => LlamaConfig.Parse("""
        {"model_type": "llama", "vocab_size": 10, "hidden_size": 4, "intermediate_size": 6, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64, "torch_dtype": "float32"}
        """);

    [Test]
    public void Weight_metrics_stream_one_layer_and_its_read_buffer()
    {
        MemoryEstimate e = ScoringMemory.Estimate(Tiny(), new ScoringOptions { Metrics = [ScoringMetrics.L2] }, 0, 0);

        // max(layer 128 + buffer 24, embedding or head 10 x 4) float32; nothing runs forward.
        Assert.That(e.Weights, Is.EqualTo(152 * 4));
        Assert.That(e.Gradients, Is.Zero);
        Assert.That(e.Activations, Is.Zero);
    }

    [Test]
    public void Forward_metrics_add_the_hidden_states_of_every_window_and_one_batch()
    {
        var options = new ScoringOptions { Metrics = [ScoringMetrics.BlockInfluence], BatchSize = 4 };
        MemoryEstimate e = ScoringMemory.Estimate(Tiny(), options, sequences: 6, length: 5);

        // Hidden states before and after the layer: 2 x N x T x D; one batch: B x T x (6D + 3F + H x T).
        long hidden = 2 * 6 * 5 * 4;
        long batch = 4 * 5 * ((6 * 4) + (3 * 6) + (2 * 5));
        Assert.That(e.Activations, Is.EqualTo((hidden + batch) * 4));
        Assert.That(e.Weights, Is.EqualTo(152 * 4));

        // Fewer windows than the batch size: the batch holds them all.
        MemoryEstimate small = ScoringMemory.Estimate(Tiny(), options, sequences: 2, length: 5);
        Assert.That(small.Activations, Is.EqualTo(((2 * 2 * 5 * 4) + (2 * 5 * 52)) * 4));
    }

    [Test]
    public void Whole_model_metrics_hold_the_model_and_its_gradients()
    {
        var options = new ScoringOptions { Metrics = [ScoringMetrics.L2, ScoringMetrics.Taylor], BatchSize = 2 };
        MemoryEstimate e = ScoringMemory.Estimate(Tiny(), options, sequences: 4, length: 5);
        MemoryEstimate resident = WholeModelScoring.Estimate(Tiny(), 2, 5, backward: true, parameterGradients: true, modelInMemory: false);

        Assert.That(e, Is.EqualTo(resident));
        Assert.That(e.Gradients, Is.EqualTo(LlamaTensorLayout.CountParameters(Tiny()).Total * 4));
    }

    [Test]
    public void A_budget_below_the_estimate_is_refused_with_both_numbers_and_the_callers_hint()
    {
        var options = new ScoringOptions { Metrics = [ScoringMetrics.L2], MemoryBudgetBytes = (152 * 4) - 1 };
        var refused = Assert.Throws<MemoryPreflightException>(() => ScoringMemory.EnsureFits(Tiny(), options, 0, 0, DeviceType.CPU, "lower --batch-size"))!;
        Assert.That(refused.NeededBytes, Is.EqualTo(152 * 4));
        Assert.That(refused.AvailableBytes, Is.EqualTo((152 * 4) - 1));
        Assert.That(refused.Message, Does.Contain("l2").And.Contain("lower --batch-size"));

        Assert.DoesNotThrow(() => ScoringMemory.EnsureFits(Tiny(), options with { MemoryBudgetBytes = 152 * 4 }, 0, 0, DeviceType.CPU));
    }

    [Test]
    public void The_scorer_refuses_before_reading_a_weight()
    {
        // A source whose reads fail: the refusal must come first.
        var options = new ScoringOptions { Metrics = [ScoringMetrics.L2], MemoryBudgetBytes = 100 };
        var source = new UnreadableSource(Tiny());
        Assert.ThrowsAsync<MemoryPreflightException>(() => ImportanceScorer.ScoreAsync((IWeightSource)source, null, options));
        Assert.That(source.Reads, Is.Zero);
    }

    private sealed class UnreadableSource(LlamaConfig config) : IWeightSource
    {
        public int Reads { get; private set; }

        public LlamaConfig Config => config;

        public string Location => "unreadable";

        public torch.Tensor ReadTensor(string name)
        {
            Reads++;
            throw new IOException("read");
        }
    }
}
