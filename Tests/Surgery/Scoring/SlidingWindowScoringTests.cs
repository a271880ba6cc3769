using System.Text.Json.Nodes;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Tests.Checkpoints;
using TorchSharp;
using static ModelSurgery.Tests.Scoring.ScoringToyModels;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Scoring;

/// <summary>Scoring runs the model's own windowed forward pass, also when streaming one layer at a time.</summary>
public sealed class SlidingWindowScoringTests
{
    /// <summary>Qwen2 with a window of 3 on layers 0 and 2 only, so a streamed run switches between layer kinds twice.</summary>
    private static LlamaConfig Windowed(LlamaConfig config) => config with
    {
        ModelType = "qwen2",
        ExtraProperties = new JsonObject
        {
            ["use_sliding_window"] = true,
            ["sliding_window"] = 3,
            ["layer_types"] = new JsonArray("sliding_attention", "full_attention", "sliding_attention"),
        },
    };

    /// <summary>Block influence of each layer from the model's own hidden states (embedding, then every layer's output).</summary>
    private static double[] BlockInfluence(LlamaForCausalLM model, CalibrationData data)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        Tensor ids = data.Batch(0, data.SequenceCount, torch.CPU); // [N, T]
        (_, IReadOnlyList<Tensor> hidden) = model.ForwardWithHiddenStates(ids);
        Tensor[] states = [model.Embed(ids), .. hidden];
        return [.. Enumerable.Range(0, hidden.Count).Select(l => LayerSimilarity.BlockInfluence(states[l], states[l + 1]))];
    }

    [Test]
    public async Task Streamed_block_influence_equals_the_one_from_the_models_windowed_hidden_states()
    {
        LlamaConfig config = Windowed(Config(heads: 4, kvHeads: 2));
        using LlamaForCausalLM model = Create(config);
        CalibrationData data = Data(config, length: 12);
        using var directory = new TempDirectory();
        await CheckpointWriter.WriteAsync(directory.Path, [.. model.ToStateDict().Select(kv => (kv.Key, kv.Value))]);
        config.Save(Path.Combine(directory.Path, CheckpointWeightSource.ConfigFileName));
        var options = new ScoringOptions { Metrics = ["block-influence"], BatchSize = 3 };

        IReadOnlyList<double> streamed = (await ImportanceScorer.ScoreAsync(directory.Path, data, options))[0].Layers!;
        IReadOnlyList<double> resident = (await ImportanceScorer.ScoreAsync(model, data, options))[0].Layers!;

        double[] expected = BlockInfluence(model, data);
        Assert.That(streamed, Is.EqualTo(expected).Within(1e-6));
        Assert.That(resident, Is.EqualTo(expected).Within(1e-6));

        // Sharp: without the windows the layers' influence is measurably different.
        using var unwindowed = new LlamaForCausalLM(config with { ExtraProperties = [] });
        unwindowed.LoadStateDict(model.ToStateDict());
        double[] withoutWindows = BlockInfluence(unwindowed, data);
        Assert.That(expected.Zip(withoutWindows).Max(p => Math.Abs(p.First - p.Second)), Is.GreaterThan(1e-3));
    }

    [Test]
    public void Whole_model_scoring_loss_is_the_windowed_model_loss_bit_for_bit()
    {
        LlamaConfig config = Windowed(Config(heads: 4, kvHeads: 2));
        using LlamaForCausalLM model = Create(config);
        using Tensor ids = Data(config, length: 12).Batch(0, 4, torch.CPU);
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();

        Tensor expected = WholeModelScoring.NextTokenLoss(model.forward(ids), ids);
        Tensor actual = WholeModelScoring.LanguageModelLoss(model, ids);

        Assert.That(actual.item<float>(), Is.EqualTo(expected.item<float>()));
    }
}
