using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>Layer-at-a-time access to a model's weights in float32 on the compute device.</summary>
internal abstract class ModelAccess : IDisposable
{
    protected ModelAccess(LlamaConfig config, Device device)
    {
        Config = config;
        Device = device;
        Rotary = new LlamaRotaryEmbedding(config);
    }

    public LlamaConfig Config { get; }

    public Device Device { get; }

    public LlamaRotaryEmbedding Rotary { get; }

    public abstract string Location { get; }

    /// <summary>Embedding matrix [V, D]; the caller disposes the handle.</summary>
    public abstract Tensor ReadEmbedding();

    /// <summary>Final norm weight [D]; the caller disposes the handle.</summary>
    public abstract Tensor ReadFinalNorm();

    /// <summary>The untied head [V, D], or null when tied; the caller disposes the handle.</summary>
    public abstract Tensor? ReadUntiedHead();

    /// <summary>Decoder layer <paramref name="layer"/>; valid until the next call (streaming reuses one module).</summary>
    public abstract LlamaDecoderLayer Layer(int layer);

    public virtual void Dispose()
    {
    }
}

/// <summary>Streams one decoder layer at a time from a <see cref="IWeightSource"/> into a single reused module.</summary>
internal sealed class StreamingModelAccess : ModelAccess
{
    private readonly IWeightSource _source;
    private LlamaDecoderLayer _layer;

    public StreamingModelAccess(IWeightSource source, Device device)
        : base(source.Config, device)
    {
        _source = source;
        _layer = CreateLayer(0);
    }

    public override string Location => _source.Location;

    public override Tensor ReadEmbedding() => Read(LlamaTensorLayout.EmbedTokens, [Config.VocabSize, Config.HiddenSize]);

    public override Tensor ReadFinalNorm() => Read(LlamaTensorLayout.FinalNorm, [Config.HiddenSize]);

    public override Tensor? ReadUntiedHead() =>
        Config.TieWordEmbeddings ? null : Read(LlamaTensorLayout.LmHead, [Config.VocabSize, Config.HiddenSize]);

    public override LlamaDecoderLayer Layer(int layer)
    {
        if (_layer.Attention.Window != Config.AttentionWindow(layer))
        {
            // The attention window is part of the module: a layer of the other kind gets a module of its own (one layer's
            // weights in memory at a time still).
            _layer.Dispose();
            _layer = CreateLayer(layer);
        }

        string prefix = LlamaTensorLayout.LayerPrefix(layer);
        using var noGrad = torch.no_grad();
        foreach (var (name, parameter) in _layer.named_parameters())
        {
            using Tensor value = Read(prefix + name, parameter.shape);
            parameter.copy_(value);
        }

        return _layer;
    }

    public override void Dispose()
    {
        _layer.Dispose();
        base.Dispose();
    }

    private LlamaDecoderLayer CreateLayer(int layer)
    {
        var module = new LlamaDecoderLayer(Config, layer, Rotary, ScalarType.Float32, Device);
        foreach (var parameter in module.parameters())
        {
            parameter.requires_grad = false;
        }

        return module;
    }

    private Tensor Read(string name, long[] expectedShape)
    {
        Tensor value = _source.ReadTensor(name);
        if (!value.shape.SequenceEqual(expectedShape))
        {
            string found = string.Join(", ", value.shape);
            value.Dispose();
            throw new InvalidDataException($"{_source.Location}: tensor {name} has shape [{found}], expected [{string.Join(", ", expectedShape)}].");
        }

        using (value)
        {
            return value.to(ScalarType.Float32, Device, copy: true);
        }
    }
}

/// <summary>Reads from a model already in memory; handles share the model's storage.</summary>
internal sealed class ResidentModelAccess : ModelAccess
{
    public ResidentModelAccess(LlamaForCausalLM model, string location)
        : base(model.Config, model.Device)
    {
        Model = model;
        Location = location;
    }

    public LlamaForCausalLM Model { get; }

    public override string Location { get; }

    public override Tensor ReadEmbedding() => Model.Model.EmbedTokens.Weight.detach();

    public override Tensor ReadFinalNorm() => Model.Model.Norm.Weight.detach();

    public override Tensor? ReadUntiedHead() => Model.LmHead?.Weight.detach();

    public override LlamaDecoderLayer Layer(int layer) => Model.Layers[layer];
}
