using ModelSurgery.Inference.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ModelSurgery.Inference.Modeling;

/// <summary>
/// A linear projection <c>y = x Wᵀ + b</c> whose parameters are named <c>weight</c> and <c>bias</c> like PyTorch's
/// <c>nn.Linear</c>, but allocated uninitialised: checkpoint loading or <see cref="LlamaForCausalLM.InitializeWeights"/>
/// fills them, so building a large model costs no random initialisation.
/// </summary>
public sealed class LlamaLinear : Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")]
    private readonly Parameter _weight;

    [ComponentName(Name = "bias")]
    private readonly Parameter? _bias;

    /// <summary>Creates an uninitialised projection from <paramref name="inFeatures"/> to <paramref name="outFeatures"/>.</summary>
    public LlamaLinear(string name, long inFeatures, long outFeatures, bool hasBias, ScalarType dtype, Device device)
        : base(name)
    {
        _weight = new Parameter(torch.empty([outFeatures, inFeatures], dtype, device)); // [out, in]
        _bias = hasBias ? new Parameter(torch.zeros([outFeatures], dtype, device)) : null; // [out]
        RegisterComponents();
    }

    /// <summary>The weight matrix, [out, in].</summary>
    public Parameter Weight => _weight;

    /// <summary>The bias vector [out], or null when the projection has none.</summary>
    public Parameter? Bias => _bias;

    /// <summary>
    /// Projects the last dimension: [..., in] to [..., out], through <see cref="CpuLinear"/>, which computes a one-row CPU
    /// input (decoding) in a managed matrix-vector kernel or keeps LibTorch off its slow one-row bf16 oneDNN path.
    /// </summary>
    public override Tensor forward(Tensor input) => CpuLinear.Linear(input, _weight, _bias);

    /// <summary>
    /// <c>residual + forward(input)</c>: [..., in] and [..., out] to [..., out]. A one-row CPU input adds the residual in
    /// the projection's kernel as it writes each output row (the same roundings as the separate add, no second pass), into
    /// <paramref name="output"/> when given (a decoding step's buffer, possibly the residual itself; see
    /// <see cref="DecodingBuffers"/>).
    /// </summary>
    internal Tensor ForwardAdding(Tensor input, Tensor residual, Tensor? output = null)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(residual);
        if (RowProjection.Applies(input, _weight, _bias) && RowProjection.ResidualApplies(residual, input, _weight))
        {
            return RowProjection.Compute(input, _weight, _bias, residual, torch.get_num_threads(), output);
        }

        using var scope = NewDisposeScope();
        return (residual + forward(input)).MoveToOuterDisposeScope(); // [..., out]
    }
}
