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
    public override Tensor forward(Tensor input) => forward(input, null);

    /// <summary>[..., D] to [..., D], with <c>silu(gate) * up</c> multiplied by <paramref name="neuronGates"/> [F] when given.</summary>
    public Tensor forward(Tensor input, Tensor? neuronGates)
    {
        using var scope = NewDisposeScope();
        return Transform(input, neuronGates, capture: false).Output.MoveToOuterDisposeScope(); // [..., D]
    }

    /// <summary>The output [..., D] and, when <paramref name="capture"/>, the gated activation [..., F]; both in the caller's dispose scope.</summary>
    internal (Tensor Output, Tensor? Activation) Transform(Tensor input, Tensor? neuronGates, bool capture)
    {
        ArgumentNullException.ThrowIfNull(input);
        using var scope = NewDisposeScope();
        Tensor gate = nn.functional.silu(_gateProjection.forward(input)); // [..., F]
        Tensor up = _upProjection.forward(input); // [..., F]
        Tensor activation = gate * up; // [..., F]
        if (neuronGates is not null)
        {
            activation = activation * neuronGates; // [..., F]
        }

        Tensor output = _downProjection.forward(activation).MoveToOuterDisposeScope(); // [..., D]
        return (output, capture ? activation.MoveToOuterDisposeScope() : null);
    }
}
