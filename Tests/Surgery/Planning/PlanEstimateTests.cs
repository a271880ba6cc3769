using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Planning;

// Expected values read best as inline literal arrays in assertions.
#pragma warning disable CA1861

namespace ModelSurgery.Tests.Planning;

public sealed class PlanEstimateTests
{
    /// <summary>1 layer, hidden 4, 2 query heads of 2 sharing 1 KV head, FFN 6, vocab 10, untied.</summary>
    private static LlamaConfig Tiny() => new()
    {
        ModelType = "llama",
        VocabSize = 10,
        HiddenSize = 4,
        IntermediateSize = 6,
        NumHiddenLayers = 1,
        NumAttentionHeads = 2,
        NumKeyValueHeads = 1,
        TorchDtype = "float32",
    };

    /// <summary>Keeps hidden channels {1, 3}, query head 1 of the single KV head, neurons {0, 2, 5}.</summary>
    private static SurgeryPlan Plan() => new()
    {
        Teacher = Tiny(),
        HiddenChannels = [1, 3],
        Layers = [new LayerPlan { TeacherLayer = 0, KvHeads = [0], QueryHeads = [1], Neurons = [0, 2, 5] }],
    };

    [Test]
    public void Estimate_on_a_tiny_plan_matches_a_hand_count()
    {
        // Hand count. Teacher: embed 10*4 + norms 3*4 + q 4*4 + k 2*4 + v 2*4 + o 4*4 + gate/up/down 3*6*4 + head 10*4 = 212.
        // Student (hidden 2, one head of 2, FFN 3): embed 20 + norms 3*2 + q/k/v/o 4*(2*2) + gate/up/down 3*3*2 + head 20 = 80.
        PlanEstimate estimate = PlanEstimate.For(Plan(), studentDtype: "bfloat16", ioBufferBytes: 100);

        Assert.That(estimate.TeacherParameters, Is.EqualTo(212));
        Assert.That(estimate.StudentParameters, Is.EqualTo(80));
        Assert.That(estimate.TeacherBytes, Is.EqualTo(212 * 4));
        Assert.That(estimate.BytesToRead, Is.EqualTo(80 * 4), "only kept rows and columns are read, at float32");
        Assert.That(estimate.BytesToWrite, Is.EqualTo(80 * 2), "written as bfloat16");
        // The largest student tensor is the [10, 2] embedding: 20 elements held as float32 and bfloat16, plus the buffer.
        Assert.That(estimate.LargestTensor, Is.EqualTo(LlamaTensorLayout.EmbedTokens));
        Assert.That(estimate.PeakBytes, Is.EqualTo((20 * (4 + 2)) + 100));
        Assert.That(estimate.Summary(), Does.Contain("reads 320 B of the teacher's 848 B").And.Contain("writes 160 B").And.Contain("peak memory about 220 B"));
    }

    [Test]
    public void Dtype_defaults_to_the_teacher_torch_dtype_and_unknown_names_are_rejected()
    {
        SurgeryPlan plan = Plan() with { Teacher = Tiny() with { TorchDtype = "bfloat16" } };
        PlanEstimate estimate = PlanEstimate.For(plan, ioBufferBytes: 0);
        Assert.That((estimate.TeacherBytesPerElement, estimate.StudentBytesPerElement, estimate.BytesToWrite), Is.EqualTo((2, 2, 160)));
        Assert.That(Assert.Throws<ArgumentException>(() => PlanEstimate.For(plan, "int3"))!.Message, Does.Contain("'int3'"));
        Assert.That(ModelSurgery.Inference.Checkpoints.ByteSize.Format(3L << 30), Is.EqualTo("3.00 GiB"));
    }

    [Test]
    public void Memory_guard_refuses_a_build_that_does_not_fit_unless_overridden()
    {
        PlanEstimate estimate = PlanEstimate.For(Plan(), ioBufferBytes: 100); // peak 20 * 8 + 100 = 260 bytes
        var ex = Assert.Throws<InvalidOperationException>(() => MemoryGuard.EnsureFits(estimate, availableBytes: 259));
        Assert.That(ex!.Message, Does.Contain("260 bytes").And.Contain("259 bytes"));
        Assert.DoesNotThrow(() => MemoryGuard.EnsureFits(estimate, availableBytes: 260));
        Assert.DoesNotThrow(() => MemoryGuard.EnsureFits(estimate, allowOverride: true, availableBytes: 1));
        Assert.DoesNotThrow(() => MemoryGuard.EnsureFits(estimate), "a tiny build fits this machine");
        Assert.That(MemoryGuard.AvailableBytes(), Is.GreaterThan(0));
    }
}
