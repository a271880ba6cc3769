using System.Buffers.Binary;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Llama2C;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Llama2C;

public sealed class Llama2CCheckpointTests
{
    // Golden greedy continuations of Tests/Fixtures/stories260K.bin from llama2.c's own run.c (karpathy/llama2.c commit
    // 350e04fe35433e6d2941dce5a1f53308f87058eb, 2024-05-29), compiled with `gcc -O2 -o run run.c -lm`. The tokenizer was a
    // stand-in tokenizer file tok.bin for vocab 512 (max_token_length, then per id: score 0, length, bytes) whose piece for id i is
    // " <i>", except id 35 whose piece is " " so that encode()'s dummy-prefix lookup finds a token; the printed ids were read
    // back from stdout (run.c strips the leading space of the first piece after BOS).
    //   `./run stories260K.bin -t 0 -n 60 -z tok.bin`            starts from BOS (1) and prints 60 ids:
    private static readonly int[] GoldenFromBos =
    [
        461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264, 283, 452, 288, 13,
        431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 293, 430, 417, 363, 416, 315, 342,
        418, 424, 400, 442, 402, 303, 266, 299, 374, 466, 396, 303, 271, 362, 390, 469, 306, 469, 423, 314,
    ];

    //   `./run stories260K.bin -t 0 -n 40 -z tok.bin -i "Once"` encodes the prompt as BOS, the dummy prefix 35, then the
    //   byte-fallback ids of 'O', 'n', 'c', 'e' (byte + 3), forces them, and greedily continues with these 35 ids:
    private static readonly int[] GoldenPrompt = [1, 35, 82, 113, 102, 104];

    private static readonly int[] GoldenAfterPrompt =
    [
        465, 465, 466, 310, 310, 338, 283, 347, 472, 472, 466, 466, 466, 473, 473, 372, 304, 264, 264, 283,
        341, 341, 397, 462, 448, 473, 473, 473, 473, 456, 288, 362, 331, 347, 472,
    ];

    private static readonly long[] SampleTokens = [1, 461, 401, 35, 82, 113, 102, 104, 13, 431, 293, 500];

    private string tempDir = null!;

    private int savedThreads;

    private static string FixturePath => Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "stories260K.bin");

    // These models are tiny: intra-op threads only add synchronisation cost, which dominates on a busy machine.
    [OneTimeSetUp]
    public void UseOneThread()
    {
        savedThreads = get_num_threads();
        set_num_threads(1);
    }

    [OneTimeTearDown]
    public void RestoreThreads() => set_num_threads(savedThreads);

    [SetUp]
    public void CreateTempDir()
    {
        tempDir = Path.Combine(Path.GetTempPath(), "llama2c-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(tempDir);
    }

    [TearDown]
    public void DeleteTempDir() => Directory.Delete(tempDir, recursive: true);

    [Test]
    public void Read_stories260K_gives_the_config_and_every_layout_tensor_in_order()
    {
        using Llama2CWeights weights = Llama2CCheckpoint.Read(FixturePath);
        LlamaConfig c = weights.Config;
        Assert.Multiple(() =>
        {
            Assert.That(weights.Header.Version, Is.EqualTo(Llama2CVersion.Legacy));
            Assert.That(c.ModelType, Is.EqualTo("llama"));
            Assert.That(
                (c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads, c.VocabSize, c.MaxPositionEmbeddings),
                Is.EqualTo((64, 172, 5, 8, 4, 512, 512)));
            Assert.That(c.HeadDim, Is.EqualTo(8));
            Assert.That(c.RmsNormEps, Is.EqualTo(1e-5));
            Assert.That(c.RopeTheta, Is.EqualTo(10000.0));
            Assert.That(c.TieWordEmbeddings, Is.True);
        });
        c.Validate();
        Assert.That(Llama2CCheckpoint.ReadHeader(FixturePath), Is.EqualTo(weights.Header));

        IReadOnlyList<TensorSpec> specs = LlamaTensorLayout.Tensors(c);
        Assert.That(weights.Tensors.Select(t => t.Name), Is.EqualTo(specs.Select(s => s.Name)));
        foreach (var ((name, tensor), spec) in weights.Tensors.Zip(specs))
        {
            Assert.That(tensor.shape, Is.EqualTo(spec.Shape), name);
            Assert.That(tensor.dtype, Is.EqualTo(ScalarType.Float32), name);
        }
    }

    [Test]
    public void Converted_weights_with_rotate_half_match_the_raw_interleaved_forward()
    {
        using var reference = Llama2CReferenceForward.Load(FixturePath);
        using Llama2CWeights weights = Llama2CCheckpoint.Read(FixturePath);
        using Tensor expected = reference.Logits(SampleTokens);
        using Tensor actual = RotateHalfForward.Logits(weights.Config, weights.Get, SampleTokens);
        Assert.That(actual.shape, Is.EqualTo(new long[] { SampleTokens.Length, 512 }));
        Assert.That(MaxAbsDiff(actual, expected), Is.LessThan(1e-4));

        // The same forward without the permutation (raw q/k rows) must disagree, or this test proves nothing.
        string qName = weights.Tensors[2].Name, kName = weights.Tensors[3].Name;
        using Tensor rawQ = reference.Wq[0], rawK = reference.Wk[0];
        Tensor Unpermuted(string name) => name == qName ? rawQ : name == kName ? rawK : weights.Get(name);
        using Tensor wrong = RotateHalfForward.Logits(weights.Config, Unpermuted, SampleTokens);
        Assert.That(MaxAbsDiff(wrong, expected), Is.GreaterThan(1e-2));
    }

    [Test]
    public void Reference_forward_reproduces_run_c_greedy_from_bos()
    {
        using var reference = Llama2CReferenceForward.Load(FixturePath);
        List<int> generated = Llama2CReferenceForward.GreedyGenerate(reference.Logits, [1], steps: 60);
        Assert.That(generated, Is.EqualTo(GoldenFromBos));
    }

    [Test]
    public void Reference_forward_reproduces_run_c_greedy_after_a_prompt()
    {
        using var reference = Llama2CReferenceForward.Load(FixturePath);
        List<int> printed = Llama2CReferenceForward.GreedyGenerate(reference.Logits, GoldenPrompt, steps: 40);
        Assert.That(printed, Is.EqualTo(GoldenPrompt.Skip(1).Concat(GoldenAfterPrompt)));
    }

    [Test]
    public void Converted_weights_reproduce_run_c_greedy_from_bos()
    {
        using Llama2CWeights weights = Llama2CCheckpoint.Read(FixturePath);
        List<int> generated = Llama2CReferenceForward.GreedyGenerate(
            tokens => RotateHalfForward.Logits(weights.Config, weights.Get, tokens), [1], steps: 60);
        Assert.That(generated, Is.EqualTo(GoldenFromBos));
    }

    [Test]
    public void Legacy_re_export_of_stories260K_is_byte_identical()
    {
        string output = Path.Combine(tempDir, "copy.bin");
        using (Llama2CWeights weights = Llama2CCheckpoint.Read(FixturePath))
        {
            Llama2CCheckpoint.Write(output, weights.Config, weights.Get, Llama2CVersion.Legacy);
        }

        // The RoPE tables are recomputed the way llama2.c's model.py does, so even they come out bit-identical.
        byte[] written = File.ReadAllBytes(output), original = File.ReadAllBytes(FixturePath);
        Assert.That(written, Has.Length.EqualTo(original.Length));
        Assert.That(written.AsSpan().CommonPrefixLength(original), Is.EqualTo(original.Length), "offset of the first differing byte");
        Assert.That(Directory.GetFiles(tempDir), Is.EqualTo(new[] { output }), "no temp file is left behind");
    }

    [TestCase(Llama2CVersion.Legacy)]
    [TestCase(Llama2CVersion.Version1)]
    public void Write_then_read_gives_the_same_config_and_tensors(Llama2CVersion version)
    {
        string output = Path.Combine(tempDir, "model.bin");
        using Llama2CWeights original = Llama2CCheckpoint.Read(FixturePath);
        Llama2CCheckpoint.Write(output, original.Config, original.Get, version);
        using Llama2CWeights copy = Llama2CCheckpoint.Read(output);
        Assert.That(copy.Header, Is.EqualTo(original.Header with { Version = version }));
        Assert.That(copy.Config.ToJson(), Is.EqualTo(original.Config.ToJson()));
        AssertSameTensors(copy, original);
        if (version == Llama2CVersion.Version1)
        {
            // 256-byte header, then the same fp32 tensors without the RoPE tables.
            long ropeBytes = 2L * 512 * 4 * sizeof(float);
            Assert.That(new FileInfo(output).Length, Is.EqualTo(new FileInfo(FixturePath).Length - 28 + 256 - ropeBytes));
        }
    }

    [TestCase(Llama2CVersion.Legacy)]
    [TestCase(Llama2CVersion.Version1)]
    public void Untied_classifier_round_trips_and_is_flagged_in_the_header(Llama2CVersion version)
    {
        string output = Path.Combine(tempDir, "untied.bin");
        using Llama2CWeights original = Llama2CCheckpoint.Read(FixturePath);
        LlamaConfig untied = original.Config with { TieWordEmbeddings = false };
        using Tensor head = randn(512, 64, generator: new Generator(7));
        Tensor Get(string name) => name == LlamaTensorLayout.LmHead ? head : original.Get(name);
        Llama2CCheckpoint.Write(output, untied, Get, version);

        byte[] bytes = File.ReadAllBytes(output);
        int vocabField = version == Llama2CVersion.Legacy
            ? BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(20))
            : BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(28));
        Assert.That(vocabField, Is.EqualTo(version == Llama2CVersion.Legacy ? -512 : 512));
        if (version == Llama2CVersion.Version1)
        {
            Assert.That(bytes[36], Is.Zero, "shared-classifier flag");
        }

        using Llama2CWeights copy = Llama2CCheckpoint.Read(output);
        Assert.That(copy.Config.TieWordEmbeddings, Is.False);
        Assert.That(copy.Tensors[^1].Name, Is.EqualTo(LlamaTensorLayout.LmHead));
        Assert.That(Same(copy.Get(LlamaTensorLayout.LmHead), head), Is.True);
        Assert.That(Same(copy.Get(LlamaTensorLayout.EmbedTokens), original.Get(LlamaTensorLayout.EmbedTokens)), Is.True);
    }

    [Test]
    public void Version2_q80_is_dequantized()
    {
        // Quantize the fixture the way llama2.c's version2_export does (groups of 64, scale = max|w| / 127, round half to
        // even), written here from the format's description.
        using var raw = Llama2CReferenceForward.Load(FixturePath);
        const int group = 64;
        string output = Path.Combine(tempDir, "q80.bin");
        var expected = new List<Tensor>();
        using (var stream = File.Create(output))
        {
            byte[] header = new byte[256];
            BinaryPrimitives.WriteUInt32LittleEndian(header, 0x616b3432);
            int[] fields = [2, 64, 172, 5, 8, 4, 512, 512];
            for (int i = 0; i < fields.Length; i++)
            {
                BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(4 + (4 * i)), fields[i]);
            }

            header[36] = 1;
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(37), group);
            stream.Write(header);
            foreach (Tensor norm in new[] { raw.RmsAtt, raw.RmsFfn, raw.RmsFinal })
            {
                WriteFloats(stream, norm.data<float>().ToArray());
            }

            IEnumerable<Tensor> matrices = new[] { raw.TokenEmbedding }
                .Concat(new[] { raw.Wq, raw.Wk, raw.Wv, raw.Wo, raw.W1, raw.W2, raw.W3 }.SelectMany(w => Enumerable.Range(0, 5).Select(l => w[l])));
            foreach (Tensor w in matrices)
            {
                float[] values = w.contiguous().data<float>().ToArray();
                float[] scales = new float[values.Length / group];
                float[] dequantized = new float[values.Length];
                byte[] quantized = new byte[values.Length];
                for (int g = 0; g < scales.Length; g++)
                {
                    float max = 0f;
                    for (int i = g * group; i < (g + 1) * group; i++)
                    {
                        max = MathF.Max(max, MathF.Abs(values[i]));
                    }

                    scales[g] = max / 127f;
                    for (int i = g * group; i < (g + 1) * group; i++)
                    {
                        sbyte q = (sbyte)MathF.Round(values[i] / scales[g], MidpointRounding.ToEven);
                        quantized[i] = (byte)q;
                        dequantized[i] = q * scales[g];
                    }
                }

                stream.Write(quantized);
                WriteFloats(stream, scales);
                expected.Add(tensor(dequantized, w.shape));
            }
        }

        using Llama2CWeights q80 = Llama2CCheckpoint.Read(output);
        using Llama2CWeights fp32 = Llama2CCheckpoint.Read(FixturePath);
        Assert.That(q80.Header.Version, Is.EqualTo(Llama2CVersion.Version2));
        Assert.That(q80.Header.GroupSize, Is.EqualTo(group));
        Assert.That(q80.Config.ToJson(), Is.EqualTo(fp32.Config.ToJson()));

        // Dequantized values are exact; q and k are permuted like the fp32 ones.
        using Tensor embedding = expected[0];
        Assert.That(Same(q80.Get(LlamaTensorLayout.EmbedTokens), embedding), Is.True);
        using Tensor q0 = RopePermutation.InterleavedToRotateHalf(expected[1], 8);
        Assert.That(Same(q80.Tensors[2].Tensor, q0), Is.True);
        using Tensor k0 = RopePermutation.InterleavedToRotateHalf(expected[6], 4);
        Assert.That(Same(q80.Tensors[3].Tensor, k0), Is.True);
        foreach (Tensor t in expected)
        {
            t.Dispose();
        }

        // Norms stay fp32; every weight is within half a quantization step of the original.
        foreach (var ((name, a), (_, b)) in q80.Tensors.Zip(fp32.Tensors))
        {
            using Tensor step = b.abs().max() / 127f;
            Assert.That(MaxAbsDiff(a, b), Is.LessThanOrEqualTo((step.item<float>() * 0.5) + 1e-6), name);
        }
    }

    [Test]
    public void Permutations_are_inverse_and_move_interleaved_pairs_to_halves()
    {
        // One head of size 4 with rows 0..3: interleaved pairs (0,1), (2,3) become halves (0,2 | 1,3).
        using Tensor rows = arange(0, 4, 1, ScalarType.Float32).unsqueeze(1); // [4, 1]
        using Tensor half = RopePermutation.InterleavedToRotateHalf(rows, 1);
        Assert.That(half.squeeze(1).data<float>().ToArray(), Is.EqualTo(new float[] { 0, 2, 1, 3 }));

        using Tensor w = randn(4 * 6, 5, generator: new Generator(1)); // 4 heads of size 6
        using Tensor there = RopePermutation.InterleavedToRotateHalf(w, 4);
        using Tensor back = RopePermutation.RotateHalfToInterleaved(there, 4);
        Assert.That(Same(back, w), Is.True);
        Assert.That(Same(there, w), Is.False);
        Assert.Throws<ArgumentException>(() => RopePermutation.InterleavedToRotateHalf(w, 5));
    }

    [Test]
    public void Truncated_file_is_rejected_with_the_sizes()
    {
        string path = Path.Combine(tempDir, "short.bin");
        byte[] bytes = File.ReadAllBytes(FixturePath);
        File.WriteAllBytes(path, bytes[..^4]);
        var ex = Assert.Throws<InvalidDataException>(() => Llama2CCheckpoint.Read(path));
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("1056536 bytes").And.Contain("1056540"));

        File.WriteAllBytes(path, bytes[..10]);
        ex = Assert.Throws<InvalidDataException>(() => Llama2CCheckpoint.Read(path));
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("too short"));
    }

    [TestCase(0, 0, "dim must be positive")]
    [TestCase(3, 7, "dim (64) is not divisible by n_heads (7)")]
    [TestCase(4, 3, "n_heads (8) is not divisible by n_kv_heads (3)")]
    [TestCase(1, -5, "hidden_dim must be positive")]
    [TestCase(2, int.MaxValue, "bytes")]
    public void Inconsistent_header_is_rejected(int field, int value, string problem)
    {
        string path = Path.Combine(tempDir, "bad.bin");
        byte[] bytes = File.ReadAllBytes(FixturePath);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(field * 4), value);
        File.WriteAllBytes(path, bytes);
        var ex = Assert.Throws<InvalidDataException>(() => Llama2CCheckpoint.Read(path));
        Assert.That(ex!.Message, Does.Contain(path).And.Contain(problem));
    }

    [Test]
    public void Unknown_version_is_rejected()
    {
        string path = Path.Combine(tempDir, "v3.bin");
        byte[] bytes = new byte[256];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, 0x616b3432);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4), 3);
        File.WriteAllBytes(path, bytes);
        var ex = Assert.Throws<InvalidDataException>(() => Llama2CCheckpoint.Read(path));
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("unsupported llama2.c checkpoint version 3"));
    }

    [Test]
    public void Write_rejects_what_llama2c_cannot_hold_and_keeps_the_old_file()
    {
        string output = Path.Combine(tempDir, "out.bin");
        File.WriteAllText(output, "old");
        using Llama2CWeights weights = Llama2CCheckpoint.Read(FixturePath);
        LlamaConfig c = weights.Config;

        Assert.That(
            Assert.Throws<ArgumentException>(() => Llama2CCheckpoint.Write(output, c with { RopeTheta = 500000 }, weights.Get, Llama2CVersion.Legacy))!.Message,
            Does.Contain("rope_theta"));
        Assert.That(
            Assert.Throws<ArgumentException>(() => Llama2CCheckpoint.Write(output, c with { AttentionBias = true }, weights.Get, Llama2CVersion.Legacy))!.Message,
            Does.Contain("bias"));
        Assert.That(
            Assert.Throws<ArgumentException>(() => Llama2CCheckpoint.Write(output, c with { ExplicitHeadDim = 16 }, weights.Get, Llama2CVersion.Legacy))!.Message,
            Does.Contain("head_dim"));
        Assert.That(
            Assert.Throws<ArgumentException>(() => Llama2CCheckpoint.Write(output, c, weights.Get, Llama2CVersion.Version2))!.Message,
            Does.Contain("Version2"));

        // A tensor of the wrong shape fails mid-write: the message names it and the old file survives.
        string wrongName = weights.Tensors[10].Name;
        using Tensor wrongShape = zeros(3, 3);
        Tensor Get(string name) => name == wrongName ? wrongShape : weights.Get(name);
        Assert.That(
            Assert.Throws<ArgumentException>(() => Llama2CCheckpoint.Write(output, c, Get, Llama2CVersion.Legacy))!.Message,
            Does.Contain(wrongName).And.Contain("[3, 3]"));
        Assert.That(File.ReadAllText(output), Is.EqualTo("old"));
        Assert.That(Directory.GetFiles(tempDir), Is.EqualTo(new[] { output }));
    }

    private static void AssertSameTensors(Llama2CWeights actual, Llama2CWeights expected)
    {
        Assert.That(actual.Tensors.Select(t => t.Name), Is.EqualTo(expected.Tensors.Select(t => t.Name)));
        foreach (var ((name, a), (_, b)) in actual.Tensors.Zip(expected.Tensors))
        {
            Assert.That(Same(a, b), Is.True, name);
        }
    }

    private static bool Same(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape))
        {
            return false;
        }

        using Tensor all = a.eq(b).all();
        return all.item<bool>();
    }

    private static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using Tensor diff = (a - b).abs().max();
        return diff.item<float>();
    }

    private static void WriteFloats(Stream stream, float[] values)
    {
        Span<byte> bytes = stackalloc byte[4];
        foreach (float v in values)
        {
            BinaryPrimitives.WriteSingleLittleEndian(bytes, v);
            stream.Write(bytes);
        }
    }
}
