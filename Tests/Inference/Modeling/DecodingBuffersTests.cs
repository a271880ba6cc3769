using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Generation;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Tests.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Inference;

/// <summary>
/// A decoding step of <see cref="LlamaForCausalLM.NextTokenLogits"/> runs in the cache's preallocated one-row buffers:
/// the same logits and ids, bit for bit, as the same modules computing into tensors of their own, and no tensor made per
/// layer.
/// </summary>
[NonParallelizable]
public sealed class DecodingBuffersTests
{
    public static IEnumerable<TestCaseData> Shapes()
    {
        foreach (ScalarType dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            // Grouped heads and a tied head; q/k/v biases and an untied head; a window the steps run past.
            yield return new TestCaseData(dtype, TinyModels.Config("llama", heads: 4, kvHeads: 2, tied: true)).SetArgDisplayNames(dtype.ToString(), "llama");
            yield return new TestCaseData(dtype, TinyModels.Config("qwen2", heads: 4, kvHeads: 4)).SetArgDisplayNames(dtype.ToString(), "qwen2");
            var mistral = TinyModels.Config("mistral", heads: 4, kvHeads: 2);
            yield return new TestCaseData(dtype, mistral with { ExtraProperties = new JsonObject { ["sliding_window"] = 5 } }).SetArgDisplayNames(dtype.ToString(), "mistral window 5");
        }
    }

    [TestCaseSource(nameof(Shapes))]
    public void Steps_in_the_buffers_give_the_logits_and_ids_of_the_modules_own_tensors_bit_for_bit(ScalarType dtype, LlamaConfig config)
    {
        using var model = TinyModels.Create(config, seed: 5, dtype);
        using var noGrad = torch.no_grad();
        using KvCache buffered = model.CreateKvCache(32), plain = model.CreateKvCache(32);
        long[] prompt = TinyModels.RandomIds(4, config.VocabSize, seed: 9);
        long next;
        using (var scope = NewDisposeScope())
        {
            // The prompt pass (many rows) takes no buffers and fills both caches alike (its head over every position
            // here is a many-row product, so only the caches are compared, through the steps that read them).
            next = model.NextTokenLogits(TinyModels.Ids(prompt), buffered).argmax().item<long>();
            _ = model.forward(TinyModels.Ids(prompt), plain);
        }

        for (int step = 0; step < 12; step++)
        {
            // Each step in its own scope, as TextGenerator runs it: a buffer freed by a scope would fail the next step.
            using var scope = NewDisposeScope();
            Tensor logits = model.NextTokenLogits(TinyModels.Ids([next]), buffered); // [1, V], through the buffers
            Tensor reference = model.forward(TinyModels.Ids([next]), plain)[.., -1]; // [1, V], every module's own tensors
            Assert.That(logits.dtype, Is.EqualTo(ScalarType.Float32));
            Assert.That(TinyModels.AreEqual(logits, reference), Is.True, $"step {step}");
            long chosen = TokenSampler.ArgMax(logits.data<float>().ToArray());
            Assert.That(chosen, Is.EqualTo(reference.argmax().item<long>()), $"step {step}");
            next = chosen;
        }

        Assert.That(buffered.Length, Is.EqualTo(plain.Length));
    }

    [TestCase(ScalarType.Float32)]
    [TestCase(ScalarType.BFloat16)]
    public void A_decoding_step_makes_no_tensor_and_allocates_nothing_per_layer(ScalarType dtype)
    {
        // Counted after warm-up on this thread: the same for 2 and 4 layers, and only the step's logits besides the ids;
        // managed bytes too (the ids, the logits and their copy are the same size at any depth).
        _ = PerStep(TinyModels.Config(layers: 2), dtype); // the first steps in a process also make one-time objects
        (double twoTensors, long twoBytes) = PerStep(TinyModels.Config(layers: 2), dtype);
        (double fourTensors, long fourBytes) = PerStep(TinyModels.Config(layers: 4), dtype);
        Assert.That(fourTensors, Is.EqualTo(twoTensors), "tensors per step grow with the layers");
        Assert.That(twoTensors, Is.LessThanOrEqualTo(2), "the ids and the logits");
        Assert.That(fourBytes, Is.EqualTo(twoBytes), "managed bytes per step grow with the layers");
    }

    [Test]
    public void Greedy_choice_in_managed_code_is_torchs_argmax()
    {
        // The first of equal largest values, and the first NaN, which LibTorch's argmax takes as the largest.
        float[][] rows =
        [
            [1f, 3f, 2f, 3f],
            [-5f, -1f, -1f, -7f],
            [0f, float.NaN, 9f, float.NaN],
            [float.NegativeInfinity, float.NegativeInfinity],
            [2f],
        ];
        foreach (float[] row in rows)
        {
            using Tensor values = torch.tensor(row);
            using Tensor expected = values.argmax();
            Assert.That(TokenSampler.ArgMax(row), Is.EqualTo(expected.item<long>()), string.Join(", ", row));
        }
    }

    // Tensors created and managed bytes allocated on this thread per decoding step, after warm-up.
    private static (double Tensors, long Bytes) PerStep(LlamaConfig config, ScalarType dtype)
    {
        using var model = TinyModels.Create(config, seed: 3, dtype);
        using var noGrad = torch.no_grad();
        using KvCache cache = model.CreateKvCache(40);
        using (var scope = NewDisposeScope())
        {
            _ = model.NextTokenLogits(TinyModels.Ids([1, 2, 3]), cache);
        }

        long next = 4;
        void Step()
        {
            using var scope = NewDisposeScope();
            Tensor logits = model.NextTokenLogits(torch.tensor(new[] { next }, [1, 1]), cache); // [1, V]
            next = TokenSampler.ArgMax(logits.data<float>().ToArray());
        }

        Step(); // warm-up: the buffers and the rotary table are made here
        Step();
        const int Steps = 8;
        long before = Created(), bytesBefore = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < Steps; i++)
        {
            Step();
        }

        return ((double)(Created() - before) / Steps, GC.GetAllocatedBytesForCurrentThread() - bytesBefore);
    }

    private static long Created() =>
        DisposeScopeManager.Statistics.CreatedInScopeCount + DisposeScopeManager.Statistics.CreatedOutsideScopeCount;
}
