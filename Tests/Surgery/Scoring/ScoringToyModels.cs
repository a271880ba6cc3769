using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Surgery.Scoring;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Scoring;

/// <summary>Tiny Llama models whose structure is edited so that the right importance answer is known.</summary>
internal static class ScoringToyModels
{
    public static LlamaConfig Config(int layers = 3, int heads = 4, int kvHeads = 4, int hidden = 16, int intermediate = 24, int vocab = 32, bool tied = false) => new()
    {
        VocabSize = vocab,
        HiddenSize = hidden,
        IntermediateSize = intermediate,
        NumHiddenLayers = layers,
        NumAttentionHeads = heads,
        NumKeyValueHeads = kvHeads,
        MaxPositionEmbeddings = 64,
        TieWordEmbeddings = tied,
    };

    /// <summary>A seeded model whose projections are scaled up from the default 0.02 so that every unit matters visibly.</summary>
    public static LlamaForCausalLM Create(LlamaConfig config, long seed = 1, double scale = 10)
    {
        var model = new LlamaForCausalLM(config);
        model.InitializeWeights(seed);
        using var noGrad = torch.no_grad();
        foreach (var (name, parameter) in model.named_parameters())
        {
            if (!name.Contains("norm", StringComparison.Ordinal))
            {
                parameter.mul_(scale);
            }
        }

        return model;
    }

    public static CalibrationData Data(LlamaConfig config, int sequences = 4, int length = 12, int seed = 7)
    {
        var random = new Random(seed);
        long[] tokens = [.. Enumerable.Range(0, sequences * length).Select(_ => (long)random.Next(config.VocabSize))];
        return new CalibrationData(tokens, sequences, length);
    }

    /// <summary>Zeroes query head <paramref name="head"/> of <paramref name="layer"/>: its q rows, o columns and (multi-head) k/v rows.</summary>
    public static void ZeroHead(LlamaForCausalLM model, int layer, int head)
    {
        using var noGrad = torch.no_grad();
        int hd = model.Config.HeadDim;
        LlamaAttention a = model.Layers[layer].Attention;
        a.QueryProjection.Weight.narrow(0, head * hd, hd).zero_();
        a.OutputProjection.Weight.narrow(1, head * hd, hd).zero_();
        if (model.Config.NumKeyValueHeads == model.Config.NumAttentionHeads)
        {
            a.KeyProjection.Weight.narrow(0, head * hd, hd).zero_();
            a.ValueProjection.Weight.narrow(0, head * hd, hd).zero_();
        }
    }

    /// <summary>Zeroes KV group <paramref name="group"/> of <paramref name="layer"/> with all of its query heads.</summary>
    public static void ZeroKvGroup(LlamaForCausalLM model, int layer, int group)
    {
        using var noGrad = torch.no_grad();
        int hd = model.Config.HeadDim, size = model.Config.QueryGroupSize;
        LlamaAttention a = model.Layers[layer].Attention;
        a.KeyProjection.Weight.narrow(0, group * hd, hd).zero_();
        a.ValueProjection.Weight.narrow(0, group * hd, hd).zero_();
        a.QueryProjection.Weight.narrow(0, group * size * hd, size * hd).zero_();
        a.OutputProjection.Weight.narrow(1, group * size * hd, size * hd).zero_();
    }

    /// <summary>Zeroes FFN neuron <paramref name="neuron"/> of <paramref name="layer"/>: gate/up rows and down column.</summary>
    public static void ZeroNeuron(LlamaForCausalLM model, int layer, int neuron)
    {
        using var noGrad = torch.no_grad();
        LlamaMlp m = model.Layers[layer].Mlp;
        m.GateProjection.Weight.narrow(0, neuron, 1).zero_();
        m.UpProjection.Weight.narrow(0, neuron, 1).zero_();
        m.DownProjection.Weight.narrow(1, neuron, 1).zero_();
    }

    /// <summary>Zeroes hidden channel <paramref name="channel"/> everywhere it is read or written, norms included.</summary>
    public static void ZeroChannel(LlamaForCausalLM model, int channel)
    {
        using var noGrad = torch.no_grad();
        model.Model.EmbedTokens.Weight.narrow(1, channel, 1).zero_();
        model.HeadWeight.narrow(1, channel, 1).zero_();
        model.Model.Norm.Weight.narrow(0, channel, 1).zero_();
        foreach (LlamaDecoderLayer layer in model.Layers)
        {
            LlamaAttention a = layer.Attention;
            LlamaMlp m = layer.Mlp;
            foreach (Tensor reader in new Tensor[] { a.QueryProjection.Weight, a.KeyProjection.Weight, a.ValueProjection.Weight, m.GateProjection.Weight, m.UpProjection.Weight })
            {
                reader.narrow(1, channel, 1).zero_();
            }

            a.OutputProjection.Weight.narrow(0, channel, 1).zero_();
            m.DownProjection.Weight.narrow(0, channel, 1).zero_();
            layer.InputNorm.Weight.narrow(0, channel, 1).zero_();
            layer.PostAttentionNorm.Weight.narrow(0, channel, 1).zero_();
        }
    }

    /// <summary>Makes <paramref name="layer"/> the identity: both output projections zero, so the residual passes through.</summary>
    public static void MakeIdentity(LlamaForCausalLM model, int layer)
    {
        using var noGrad = torch.no_grad();
        model.Layers[layer].Attention.OutputProjection.Weight.zero_();
        model.Layers[layer].Mlp.DownProjection.Weight.zero_();
    }

    /// <summary>Index of the smallest value.</summary>
    public static int ArgMin(IReadOnlyList<double> values) => Enumerable.Range(0, values.Count).MinBy(i => values[i]);
}
