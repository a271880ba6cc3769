using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Runtime;
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

    /// <summary>
    /// The output [..., D] (plus <paramref name="residual"/> [..., D] when given) and, when <paramref name="capture"/>, the
    /// gated activation [..., F]; both in the caller's dispose scope. With <paramref name="buffers"/> (a decoding step whose
    /// residual stream is <see cref="DecodingBuffers.Hidden"/>, no gates, no capture) the kernels write the activation
    /// and the output into the buffers, and the output is <see cref="DecodingBuffers.Hidden"/>.
    /// </summary>
    internal (Tensor Output, Tensor? Activation) Transform(Tensor input, Tensor? neuronGates, bool capture, Tensor? residual = null, DecodingBuffers? buffers = null)
    {
        ArgumentNullException.ThrowIfNull(input);
        // With buffers the kernels make no tensor; what a fallback makes belongs to the step's scope (LlamaModel's).
        using DisposeScope? scope = buffers is null ? NewDisposeScope() : null;
        Tensor activation; // [..., F]
        Tensor gateWeight = _gateProjection.Weight, upWeight = _upProjection.Weight;
        Tensor? gateBias = _gateProjection.Bias, upBias = _upProjection.Bias;
        if (RowProjection.Applies(input, gateWeight, gateBias) && RowProjection.Applies(input, upWeight, upBias))
        {
            // One row on the CPU (a decoding step): gate, up and their product in one parallel region.
            activation = RowProjection.ComputeSwiGlu(input, gateWeight, gateBias, upWeight, upBias, torch.get_num_threads(), buffers?.Activation); // [..., F]
        }
        else
        {
            Tensor gate = nn.functional.silu(_gateProjection.forward(input)); // [..., F]
            Tensor up = _upProjection.forward(input); // [..., F]
            activation = gate * up; // [..., F]
        }

        if (neuronGates is not null)
        {
            activation = activation * neuronGates; // [..., F]
        }

        Tensor projected = residual is null ? _downProjection.forward(activation) : _downProjection.ForwardAdding(activation, residual, buffers?.Hidden); // [..., D]
        Tensor output = projected.MoveToOuterDisposeScope(); // [..., D]
        return (output, capture ? activation.MoveToOuterDisposeScope() : null);
    }
}
