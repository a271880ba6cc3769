using System.Buffers.Binary;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Llama2C;

/// <summary>
/// An independent reference for llama2.c models: parses a legacy llama2.c file straight from the format's description
/// (header of 7 int32, then fp32 tensors in llama2.c order) and runs the forward pass of llama2.c's run.c with plain tensor
/// ops on the RAW weights, interleaved RoPE included. It shares no code with the library's reader, so agreement between the
/// two is evidence that both are right.
/// </summary>
internal sealed class Llama2CReferenceForward : IDisposable
{
    private readonly List<Tensor> owned = [];

    private Llama2CReferenceForward(int[] header)
    {
        (Dim, HiddenDim, Layers, Heads, KvHeads) = (header[0], header[1], header[2], header[3], header[4]);
        Vocab = Math.Abs(header[5]);
        SeqLen = header[6];
        SharedClassifier = header[5] > 0;
    }

    public int Dim { get; }

    public int HiddenDim { get; }

    public int Layers { get; }

    public int Heads { get; }

    public int KvHeads { get; }

    public int Vocab { get; }

    public int SeqLen { get; }

    public bool SharedClassifier { get; }

    public int HeadSize => Dim / Heads;

    /// <summary>Raw weights as llama2.c stores them; per-layer tensors are [L, ...].</summary>
    public Tensor TokenEmbedding { get; private set; } = null!;

    public Tensor RmsAtt { get; private set; } = null!;

    public Tensor Wq { get; private set; } = null!;

    public Tensor Wk { get; private set; } = null!;

    public Tensor Wv { get; private set; } = null!;

    public Tensor Wo { get; private set; } = null!;

    public Tensor RmsFfn { get; private set; } = null!;

    public Tensor W1 { get; private set; } = null!;

    public Tensor W2 { get; private set; } = null!;

    public Tensor W3 { get; private set; } = null!;

    public Tensor RmsFinal { get; private set; } = null!;

    public Tensor Classifier { get; private set; } = null!;

    /// <summary>Parses a legacy llama2.c checkpoint.</summary>
    public static Llama2CReferenceForward Load(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        int[] header = [.. Enumerable.Range(0, 7).Select(i => BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(i * 4)))];
        var model = new Llama2CReferenceForward(header);
        ReadOnlySpan<float> floats = MemoryMarshal.Cast<byte, float>(bytes.AsSpan(28));
        int offset = 0;
        int d = model.Dim, hs = model.HeadSize, l = model.Layers, kv = model.KvHeads * hs;
        model.TokenEmbedding = model.Take(floats, ref offset, model.Vocab, d);
        model.RmsAtt = model.Take(floats, ref offset, l, d);
        model.Wq = model.Take(floats, ref offset, l, model.Heads * hs, d);
        model.Wk = model.Take(floats, ref offset, l, kv, d);
        model.Wv = model.Take(floats, ref offset, l, kv, d);
        model.Wo = model.Take(floats, ref offset, l, d, model.Heads * hs);
        model.RmsFfn = model.Take(floats, ref offset, l, d);
        model.W1 = model.Take(floats, ref offset, l, model.HiddenDim, d);
        model.W2 = model.Take(floats, ref offset, l, d, model.HiddenDim);
        model.W3 = model.Take(floats, ref offset, l, model.HiddenDim, d);
        model.RmsFinal = model.Take(floats, ref offset, d);
        offset += 2 * model.SeqLen * hs / 2; // freq_cis_real and freq_cis_imag: run.c ignores them and recomputes RoPE
        model.Classifier = model.SharedClassifier ? model.TokenEmbedding : model.Take(floats, ref offset, model.Vocab, d);
        Assert.That(offset, Is.EqualTo(floats.Length), "reference parser did not consume the whole file");
        return model;
    }

    /// <summary>Logits [T, vocab] for every position of <paramref name="tokens"/>, as run.c's forward computes them one position at a time.</summary>
    public Tensor Logits(IReadOnlyList<long> tokens)
    {
        using var scope = NewDisposeScope();
        int t = tokens.Count, hs = HeadSize;
        using Tensor ids = tensor(tokens.ToArray());
        Tensor x = TokenEmbedding.index_select(0, ids); // [T, D]
        (Tensor cos, Tensor sin) = RunCRopeTables(t, hs); // [T, hs/2] each
        Tensor mask = ones(t, t, ScalarType.Bool).tril().logical_not(); // [T, T], true above the diagonal
        for (int layer = 0; layer < Layers; layer++)
        {
            Tensor xb = RmsNorm(x, RmsAtt[layer]); // [T, D]
            Tensor q = xb.matmul(Wq[layer].t()).reshape(t, Heads, hs); // [T, H, hs]
            Tensor k = xb.matmul(Wk[layer].t()).reshape(t, KvHeads, hs); // [T, KV, hs]
            Tensor v = xb.matmul(Wv[layer].t()).reshape(t, KvHeads, hs); // [T, KV, hs]
            q = RotateInterleaved(q, cos, sin);
            k = RotateInterleaved(k, cos, sin);

            // Query head h reads KV head h / (Heads / KvHeads), as run.c's kv_mul does.
            k = k.repeat_interleave(Heads / KvHeads, dim: 1); // [T, H, hs]
            v = v.repeat_interleave(Heads / KvHeads, dim: 1); // [T, H, hs]
            Tensor scores = q.permute(1, 0, 2).matmul(k.permute(1, 2, 0)) / MathF.Sqrt(hs); // [H, T, T]
            scores = scores.masked_fill(mask, float.NegativeInfinity).softmax(-1); // [H, T, T]
            Tensor attended = scores.matmul(v.permute(1, 0, 2)).permute(1, 0, 2).reshape(t, Dim); // [T, D]
            x = x + attended.matmul(Wo[layer].t()); // [T, D]

            xb = RmsNorm(x, RmsFfn[layer]); // [T, D]
            Tensor hidden = nn.functional.silu(xb.matmul(W1[layer].t())) * xb.matmul(W3[layer].t()); // [T, F]
            x = x + hidden.matmul(W2[layer].t()); // [T, D]
        }

        return RmsNorm(x, RmsFinal).matmul(Classifier.t()).MoveToOuterDisposeScope(); // [T, V]
    }

    /// <summary>
    /// run.c's generate() with temperature 0: starts from prompt[0], forces the remaining prompt tokens, then takes the
    /// first argmax; stops after <paramref name="steps"/> positions or when BOS (1) comes out. Returns every token that
    /// run.c prints (forced prompt tokens included), in order.
    /// </summary>
    public static List<int> GreedyGenerate(Func<IReadOnlyList<long>, Tensor> logits, IReadOnlyList<int> prompt, int steps)
    {
        var sequence = new List<long> { prompt[0] };
        var printed = new List<int>();
        for (int pos = 0; pos < steps; pos++)
        {
            int next;
            if (pos < prompt.Count - 1)
            {
                next = prompt[pos + 1];
            }
            else
            {
                using var scope = NewDisposeScope();
                next = (int)logits(sequence)[-1].argmax().item<long>();
            }

            if (next == 1)
            {
                break;
            }

            printed.Add(next);
            sequence.Add(next);
        }

        return printed;
    }

    public void Dispose()
    {
        foreach (Tensor t in owned)
        {
            t.Dispose();
        }
    }

    /// <summary>run.c's RoPE: for pair j of a head, freq = 1 / powf(10000, 2j / head_size), angle = pos * freq, all fp32.</summary>
    internal static (Tensor Cos, Tensor Sin) RunCRopeTables(int positions, int headSize)
    {
        Tensor exponents = arange(0, headSize, 2, ScalarType.Float32) / headSize; // [hs/2]
        Tensor freqs = pow(10000f, exponents).reciprocal(); // [hs/2]
        Tensor angles = arange(0, positions, 1, ScalarType.Float32).unsqueeze(1) * freqs.unsqueeze(0); // [T, hs/2]
        return (angles.cos(), angles.sin());
    }

    /// <summary>RMSNorm with run.c's epsilon 1e-5.</summary>
    internal static Tensor RmsNorm(Tensor x, Tensor weight) =>
        x * (x.pow(2).mean([-1], keepdim: true) + 1e-5f).rsqrt() * weight; // [T, D]

    /// <summary>Rotates the interleaved pairs (2j, 2j+1) of every head, as run.c does in place.</summary>
    private static Tensor RotateInterleaved(Tensor x, Tensor cos, Tensor sin)
    {
        long t = x.shape[0], h = x.shape[1], hs = x.shape[2];
        Tensor pairs = x.reshape(t, h, hs / 2, 2); // [T, H, hs/2, 2]
        Tensor x0 = pairs[.., .., .., 0], x1 = pairs[.., .., .., 1]; // [T, H, hs/2]
        Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1); // [T, 1, hs/2]
        return stack([x0 * c - x1 * s, x0 * s + x1 * c], dim: -1).reshape(t, h, hs); // [T, H, hs]
    }

    private Tensor Take(ReadOnlySpan<float> floats, ref int offset, params long[] shape)
    {
        int count = (int)shape.Aggregate(1L, (a, b) => a * b);
        Tensor result = tensor(floats.Slice(offset, count).ToArray(), shape);
        offset += count;
        owned.Add(result);
        return result;
    }
}
