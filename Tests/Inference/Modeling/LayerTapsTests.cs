using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Modeling;

/// <summary>Gates and observers inside the decoder layer's own forward pass.</summary>
public sealed class LayerTapsTests
{
    private const int Length = 12;

    /// <summary>A Qwen2 config with a window of 4 on layers 1 and 2, so the taps run through windowed and full layers.</summary>
    private static LlamaConfig Config() => TinyModels.Config("qwen2", heads: 4, kvHeads: 2, layers: 3) with
    {
        ExtraProperties = new JsonObject { ["use_sliding_window"] = true, ["sliding_window"] = 4, ["max_window_layers"] = 1 },
    };

    private static LlamaForCausalLM Create(LlamaConfig config)
    {
        LlamaForCausalLM model = TinyModels.Create(config, seed: 31);
        using var noGrad = torch.no_grad();
        foreach (var (name, parameter) in model.named_parameters())
        {
            if (!name.Contains("norm", StringComparison.Ordinal))
            {
                parameter.mul_(15); // from std 0.02 to 0.3, so every unit visibly matters
            }
        }

        return model;
    }

    /// <summary>Logits through the layer-by-layer API with <paramref name="taps"/> per layer (shared rotary tables and masks).</summary>
    private static Tensor Forward(LlamaForCausalLM model, Tensor ids, Func<int, LayerTaps?> taps)
    {
        using var scope = NewDisposeScope();
        Tensor hidden = model.Embed(ids); // [B, T, D]
        using RotaryTables rope = model.CreateRotaryTables(0, ids.shape[1]);
        using var masks = new AttentionMasks();
        for (int l = 0; l < model.Layers.Count; l++)
        {
            hidden = model.Layers[l].forward(hidden, rope, null, masks, taps(l)); // [B, T, D]
        }

        return model.FinalNormAndHead(hidden).MoveToOuterDisposeScope(); // [B, T, V]
    }

    private static LlamaForCausalLM Copy(LlamaForCausalLM model)
    {
        var copy = new LlamaForCausalLM(model.Config);
        copy.LoadStateDict(model.ToStateDict());
        copy.eval();
        return copy;
    }

    private static Tensor Ids(LlamaConfig config) =>
        TinyModels.Ids(TinyModels.RandomIds(Length, config.VocabSize, seed: 32), TinyModels.RandomIds(Length, config.VocabSize, seed: 33));

    [Test]
    public void Gates_of_ones_and_an_observer_leave_the_outputs_bit_identical()
    {
        LlamaConfig config = Config();
        using LlamaForCausalLM model = Create(config);
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        Tensor ids = Ids(config);
        int calls = 0;
        var taps = new LayerTaps(torch.ones(config.NumAttentionHeads), torch.ones(config.IntermediateSize), torch.ones(config.HiddenSize), _ => calls++);

        Tensor gated = Forward(model, ids, _ => taps);

        Assert.That(TinyModels.AreEqual(gated, model.forward(ids)), Is.True);
        Assert.That(calls, Is.EqualTo(config.NumHiddenLayers));
    }

    [Test]
    public void A_zero_head_gate_equals_removing_that_heads_output_projection_columns()
    {
        LlamaConfig config = Config();
        using LlamaForCausalLM model = Create(config);
        using LlamaForCausalLM removed = Copy(model);
        const int Layer = 1, Head = 2;
        int hd = config.HeadDim;
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        removed.Layers[Layer].Attention.OutputProjection.Weight.narrow(1, Head * hd, hd).zero_();
        Tensor gates = torch.ones(config.NumAttentionHeads);
        gates[Head] = torch.tensor(0f);
        Tensor ids = Ids(config);

        Tensor gated = Forward(model, ids, l => l == Layer ? new LayerTaps(HeadGates: gates) : null);

        Tensor expected = removed.forward(ids);
        Assert.That(TinyModels.AreEqual(gated, expected), Is.True);
        Assert.That(TinyModels.MaxAbsDiff(gated, model.forward(ids)), Is.GreaterThan(1e-2), "the head mattered");
    }

    [Test]
    public void A_zero_neuron_gate_equals_removing_that_neurons_down_projection_column()
    {
        LlamaConfig config = Config();
        using LlamaForCausalLM model = Create(config);
        using LlamaForCausalLM removed = Copy(model);
        const int Layer = 2, Neuron = 5;
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        removed.Layers[Layer].Mlp.DownProjection.Weight.narrow(1, Neuron, 1).zero_();
        Tensor gates = torch.ones(config.IntermediateSize);
        gates[Neuron] = torch.tensor(0f);
        Tensor ids = Ids(config);

        Tensor gated = Forward(model, ids, l => l == Layer ? new LayerTaps(NeuronGates: gates) : null);

        Assert.That(TinyModels.AreEqual(gated, removed.forward(ids)), Is.True);
        Assert.That(TinyModels.MaxAbsDiff(gated, model.forward(ids)), Is.GreaterThan(1e-3), "the neuron mattered");
    }

    [Test]
    public void A_zero_channel_gate_equals_removing_what_the_layer_writes_to_that_channel()
    {
        LlamaConfig config = Config();
        using LlamaForCausalLM model = Create(config);
        using LlamaForCausalLM removed = Copy(model);
        const int Layer = 0, Channel = 7;
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        removed.Layers[Layer].Attention.OutputProjection.Weight.narrow(0, Channel, 1).zero_();
        removed.Layers[Layer].Mlp.DownProjection.Weight.narrow(0, Channel, 1).zero_();
        Tensor gates = torch.ones(config.HiddenSize);
        gates[Channel] = torch.tensor(0f);
        Tensor ids = Ids(config);

        Tensor gated = Forward(model, ids, l => l == Layer ? new LayerTaps(ChannelGates: gates) : null);

        Assert.That(TinyModels.AreEqual(gated, removed.forward(ids)), Is.True);
    }

    [Test]
    public void Gradients_reach_every_gate_and_no_weight()
    {
        LlamaConfig config = Config();
        using LlamaForCausalLM model = Create(config);
        foreach (var parameter in model.parameters())
        {
            parameter.requires_grad = false;
        }

        using var scope = NewDisposeScope();
        Tensor heads = torch.ones([config.NumHiddenLayers, config.NumAttentionHeads], requires_grad: true);
        Tensor neurons = torch.ones([config.NumHiddenLayers, config.IntermediateSize], requires_grad: true);
        Tensor channels = torch.ones([config.HiddenSize], requires_grad: true);
        Tensor ids = Ids(config);

        Tensor logits = Forward(model, ids, l => new LayerTaps(heads[l], neurons[l], channels));
        logits.log_softmax(-1).narrow(2, 0, 1).sum().backward();

        foreach (var (name, gate) in new[] { ("heads", heads), ("neurons", neurons), ("channels", channels) })
        {
            Assert.That(gate.grad, Is.Not.Null, name);
            Assert.That(gate.grad!.isfinite().all().item<bool>(), Is.True, name);
            Assert.That(gate.grad.abs().gt(0).to_type(ScalarType.Float32).mean().item<float>(), Is.GreaterThan(0.9f), $"{name}: almost every gate moves the loss");
        }

        Assert.That(model.parameters().All(p => p.grad is null), Is.True);
    }

    [Test]
    public void The_observer_sees_the_layers_own_intermediate_activations()
    {
        LlamaConfig config = Config();
        using LlamaForCausalLM model = Create(config);
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        Tensor ids = Ids(config);
        Tensor hidden = model.Embed(ids); // [B, T, D]
        using RotaryTables rope = model.CreateRotaryTables(0, Length);
        LlamaDecoderLayer layer = model.Layers[1];
        Tensor neuronGates = torch.rand(config.IntermediateSize);
        bool checkedOnce = false;
        Tensor output = layer.forward(hidden, rope, null, null, new LayerTaps(NeuronGates: neuronGates, Observer: a =>
        {
            Assert.That(a.AttentionInput.shape, Is.EqualTo(new long[] { 2, Length, config.HiddenSize }));
            Assert.That(a.HeadOutputs.shape, Is.EqualTo(new long[] { 2, config.NumAttentionHeads, Length, config.HeadDim }));
            Assert.That(a.FfnActivation.shape, Is.EqualTo(new long[] { 2, Length, config.IntermediateSize }));
            Assert.That(TinyModels.AreEqual(a.AttentionInput, layer.InputNorm.forward(hidden)), Is.True);
            Assert.That(TinyModels.AreEqual(a.MergedHeads, a.HeadOutputs.transpose(1, 2).reshape(2, Length, -1)), Is.True);
            Tensor attended = layer.Attention.OutputProjection.forward(a.MergedHeads); // [B, T, D]
            Assert.That(TinyModels.AreEqual(a.MlpInput, layer.PostAttentionNorm.forward(hidden + attended)), Is.True);
            Tensor activation = nn.functional.silu(layer.Mlp.GateProjection.forward(a.MlpInput)) * layer.Mlp.UpProjection.forward(a.MlpInput) * neuronGates;
            Assert.That(TinyModels.AreEqual(a.FfnActivation, activation), Is.True);
            checkedOnce = true;
        }));

        Assert.That(checkedOnce, Is.True);
        Assert.That(output.shape, Is.EqualTo(hidden.shape));
    }
}
