using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Modeling;

/// <summary>Tiny random Llama-family models for fast CPU tests.</summary>
internal static class TinyModels
{
    public static LlamaConfig Config(
        string modelType = "llama",
        int heads = 4,
        int kvHeads = 2,
        bool tied = false,
        int layers = 2,
        RopeScaling? ropeScaling = null) => new()
        {
            ModelType = modelType,
            VocabSize = 50,
            HiddenSize = 32,
            IntermediateSize = 64,
            NumHiddenLayers = layers,
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            MaxPositionEmbeddings = 512,
            RmsNormEps = 1e-5,
            RopeTheta = 10000.0,
            RopeScaling = ropeScaling,
            TieWordEmbeddings = tied,
        };

    public static LlamaForCausalLM Create(LlamaConfig config, long seed = 1, ScalarType dtype = ScalarType.Float32)
    {
        var model = new LlamaForCausalLM(config, dtype);
        model.InitializeWeights(seed);
        model.eval();
        return model;
    }

    public static Tensor Ids(params long[][] rows) =>
        torch.tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length]);

    public static long[] RandomIds(int count, int vocab, int seed)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (long)random.Next(vocab))];
    }

    public static bool AreEqual(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape))
        {
            return false;
        }

        using var same = a.eq(b).all();
        return same.item<bool>();
    }

    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var diff = (a - b).abs().max();
        return diff.item<float>();
    }
}
