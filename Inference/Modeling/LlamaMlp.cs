using ModelSurgery.Inference.Configuration;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ModelSurgery.Inference.Modeling;

/// <summary>The SwiGLU feed-forward block: <c>down(silu(gate(x)) * up(x))</c>, biases when <see cref="LlamaConfig.MlpBias"/>.</summary>
public sealed class LlamaMlp : Module<Tensor, Tensor>
{
    [ComponentName(Name = "gate_proj")]
    private readonly LlamaLinear _gateProjection;

    [ComponentName(Name = "up_proj")]
    private readonly LlamaLinear _upProjection;

    [ComponentName(Name = "down_proj")]
    private readonly LlamaLinear _downProjection;

    /// <summary>Creates the block (weights uninitialised).</summary>
    public LlamaMlp(LlamaConfig config, ScalarType dtype, Device device)
        : base("mlp")
    {
        ArgumentNullException.ThrowIfNull(config);
        long d = config.HiddenSize, ffn = config.IntermediateSize;
        _gateProjection = new LlamaLinear("gate_proj", d, ffn, config.MlpBias, dtype, device);
        _upProjection = new LlamaLinear("up_proj", d, ffn, config.MlpBias, dtype, device);
        _downProjection = new LlamaLinear("down_proj", ffn, d, config.MlpBias, dtype, device);
        RegisterComponents();
    }

    /// <summary>The gate projection (<c>gate_proj</c>), [F, D].</summary>
    public LlamaLinear GateProjection => _gateProjection;

    /// <summary>The up projection (<c>up_proj</c>), [F, D].</summary>
    public LlamaLinear UpProjection => _upProjection;

    /// <summary>The down projection (<c>down_proj</c>), [D, F].</summary>
    public LlamaLinear DownProjection => _downProjection;

    /// <summary>[..., D] to [..., D].</summary>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        Tensor gate = nn.functional.silu(_gateProjection.forward(input)); // [..., F]
        Tensor up = _upProjection.forward(input); // [..., F]
        return _downProjection.forward(gate * up).MoveToOuterDisposeScope(); // [..., D]
    }
}
