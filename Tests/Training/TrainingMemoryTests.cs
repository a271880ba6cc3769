using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Training;
using TorchSharp;

namespace ModelSurgery.Tests.Training;

/// <summary>The training memory estimate, part by part, against hand counts on a model small enough to count by hand.</summary>
public sealed class TrainingMemoryTests
{
    // 1 layer, hidden 4, FFN 6, 2 query heads sharing 1 KV head, vocab 10, untied. Parameters: embed 40 + head 40 +
    // norms 3*4 + q 16 + k 8 + v 8 + o 16 + gate/up/down 3*24 = 212.
    private const string TinyJson = """
        {"model_type": "llama", "vocab_size": 10, "hidden_size": 4, "intermediate_size": 6, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64, "torch_dtype": "float32"}
        """;

    private static LlamaConfig Tiny() => LlamaConfig.Parse(TinyJson);

    private static readonly TrainingOptions Options = new() { BatchSize = 3, SeqLen = 5 };

    [TearDown]
    public void ResetLimit() => MemoryPreflight.Limit = null;

    [Test]
    public void Fp32_parts_match_a_hand_count()
    {
        TrainingMemoryEstimate e = TrainingMemory.Estimate(Tiny(), Options);

        Assert.That(LlamaTensorLayout.CountParameters(Tiny()).Total, Is.EqualTo(212));
        Assert.That(TrainingMemory.ActivationsPerLayerToken(Tiny()), Is.EqualTo((12 * 4) + (5 * 6)));
        Assert.That(e.Weights, Is.EqualTo(212 * 4));
        Assert.That(e.MasterWeights, Is.Zero);
        Assert.That(e.Gradients, Is.EqualTo(212 * 4));
        Assert.That(e.OptimizerStates, Is.EqualTo(2 * 212 * 4));
        Assert.That(e.Activations, Is.EqualTo(3 * 5 * 1 * 78 * 4), "B x T tokens x layers x 78 elements x float32");
        Assert.That(e.AttentionScores, Is.Zero, "causal layers use the fused kernel");
        Assert.That(e.Logits, Is.EqualTo(2 * 3 * 5 * 10 * 4), "B x T x V float32, twice for backward");
        Assert.That(e.Teacher, Is.Zero);
        Assert.That(e.Total, Is.EqualTo(848 + 848 + 1696 + 4680 + 1200));
    }

    [Test]
    public void Bf16_adds_master_weights_and_halves_the_compute_tensors()
    {
        TrainingMemoryEstimate e = TrainingMemory.Estimate(Tiny(), Options with { Precision = TrainingPrecision.Bf16 });

        Assert.That(e.Weights, Is.EqualTo(212 * 2));
        Assert.That(e.MasterWeights, Is.EqualTo(212 * 4));
        Assert.That(e.Gradients, Is.EqualTo((212 * 2) + (212 * 4)));
        Assert.That(e.OptimizerStates, Is.EqualTo(2 * 212 * 4));
        Assert.That(e.Activations, Is.EqualTo(3 * 5 * 78 * 2));
        Assert.That(e.Logits, Is.EqualTo(2 * 3 * 5 * 10 * 4));
    }

    [Test]
    public void Bf16_training_on_the_cpu_over_short_sequences_keeps_eager_attention_scores_in_every_layer()
    {
        TrainingOptions bf16 = Options with { Precision = TrainingPrecision.Bf16 };

        // The float32 softmax and the bf16 probabilities: B x H x T x T x (4 + 2) bytes per layer.
        Assert.That(TrainingMemory.Estimate(Tiny(), bf16).AttentionScores, Is.EqualTo(3 * 2 * 5 * 5 * 1 * (4 + 2)));
        Assert.That(TrainingMemory.Estimate(Tiny(), bf16, device: DeviceType.CUDA).AttentionScores, Is.Zero, "the fused kernel on a GPU");
        Assert.That(TrainingMemory.Estimate(Tiny(), bf16 with { SeqLen = EagerAttention.MaxKeys + 1 }).AttentionScores, Is.Zero, "and past the eager path's length");
        Assert.That(TrainingMemory.Estimate(Tiny(), Options).AttentionScores, Is.Zero, "float32 keeps the fused kernel");
    }

    [Test]
    public void Sliding_window_layers_count_their_attention_scores()
    {
        LlamaConfig windowed = LlamaConfig.Parse(TinyJson.Replace("\"llama\"", "\"mistral\"", StringComparison.Ordinal).Replace("\"torch_dtype\"", "\"sliding_window\": 2, \"torch_dtype\"", StringComparison.Ordinal));
        Assert.That(windowed.LayerAttentionWindows, Is.EqualTo(new int?[] { 2 }));

        // Scores and probabilities: 2 x B x H x T x T float32 per windowed layer.
        Assert.That(TrainingMemory.Estimate(windowed, Options).AttentionScores, Is.EqualTo(2 * 3 * 2 * 5 * 5 * 4));

        // A window no shorter than the sequence keeps the fused path.
        Assert.That(TrainingMemory.Estimate(windowed, Options with { SeqLen = 2 }).AttentionScores, Is.Zero);
    }

    [Test]
    public void A_live_teacher_adds_its_weights_logits_and_one_layers_transients()
    {
        // Teacher with 2 layers: 212 + one more layer (norms 8 + attention 48 + MLP 72) = 340 parameters.
        LlamaConfig teacher = Tiny() with { NumHiddenLayers = 2 };
        Assert.That(LlamaTensorLayout.CountParameters(teacher).Total, Is.EqualTo(340));

        TrainingMemoryEstimate e = TrainingMemory.Estimate(Tiny(), Options, teacher);
        long transients = 3 * 5 * ((7 * 4) + (3 * 6)) * 4;
        Assert.That(e.Teacher, Is.EqualTo((340 * 4) + transients + (2 * 3 * 5 * 10 * 4)));
        Assert.That(TrainingMemory.Estimate(Tiny(), Options, teacher, teacherElementSize: 2).Teacher, Is.EqualTo((340 * 2) + (transients / 2) + (2 * 3 * 5 * 10 * 4)));
    }

    [Test]
    public void The_check_refuses_one_byte_over_the_limit_and_names_the_options()
    {
        long total = TrainingMemory.Estimate(Tiny(), Options).Total;
        MemoryPreflight.Limit = total - 1;
        var refused = Assert.Throws<MemoryPreflightException>(() => TrainingMemory.EnsureFits("student", Tiny(), Options, DeviceType.CPU))!;
        Assert.That(refused.NeededBytes, Is.EqualTo(total));
        Assert.That(refused.Message, Does.Contain("--batch-size").And.Contain("--seq-len").And.Contain("optimizer"));

        MemoryPreflight.Limit = total;
        Assert.DoesNotThrow(() => TrainingMemory.EnsureFits("student", Tiny(), Options, DeviceType.CPU));
    }
}
