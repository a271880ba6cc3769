using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Scoring;

namespace ModelSurgery.Tests.Planning;

/// <summary>Small configs and deterministic scores shared by the planning tests.</summary>
internal static class PlanningFixtures
{
    /// <summary>4 layers, hidden 32, 8 query heads in 2 KV groups of 4, head_dim 4, FFN 48, vocab 40.</summary>
    public static LlamaConfig Toy(bool tied = false) => new()
    {
        ModelType = "llama",
        VocabSize = 40,
        HiddenSize = 32,
        IntermediateSize = 48,
        NumHiddenLayers = 4,
        NumAttentionHeads = 8,
        NumKeyValueHeads = 2,
        BosTokenId = 1,
        EosTokenIds = [2],
        TieWordEmbeddings = tied,
        TorchDtype = "bfloat16",
    };

    /// <summary>Llama-2-7B shapes: 32 layers, hidden 4096, 32 heads of 128 (MHA), FFN 11008, vocab 32000.</summary>
    public static LlamaConfig Llama2_7B() => new()
    {
        ModelType = "llama",
        VocabSize = 32000,
        HiddenSize = 4096,
        IntermediateSize = 11008,
        NumHiddenLayers = 32,
        NumAttentionHeads = 32,
        NumKeyValueHeads = 32,
        BosTokenId = 1,
        EosTokenIds = [2],
        TorchDtype = "float16",
    };

    /// <summary>Scores for <paramref name="config"/> where every value is a distinct deterministic number.</summary>
    public static ImportanceScores Scores(LlamaConfig config, int seed = 1)
    {
        var random = new Random(seed);
        double[] Vector(int n) => [.. Enumerable.Range(0, n).Select(_ => random.NextDouble())];
        ScoreMatrix Matrix(int columns) => ScoreMatrix.Create(config.NumHiddenLayers, columns, (_, _) => random.NextDouble());
        return new ImportanceScores
        {
            Metric = "test-metric",
            Source = "toy",
            Layers = Vector(config.NumHiddenLayers),
            Heads = Matrix(config.NumAttentionHeads),
            KvGroups = Matrix(config.NumKeyValueHeads),
            Neurons = Matrix(config.IntermediateSize),
            HiddenChannels = Vector(config.HiddenSize),
            Tokens = Vector(config.VocabSize),
        };
    }
}
