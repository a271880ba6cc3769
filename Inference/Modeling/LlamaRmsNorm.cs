using ModelSurgery.Inference.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ModelSurgery.Inference.Modeling;

/// <summary>
/// Root-mean-square layer norm with Hugging Face <c>LlamaRMSNorm</c> semantics:
/// <c>weight * (x * rsqrt(mean(x²) + eps))</c>, the statistics computed in float32 and the normalised activations cast
/// back to the input dtype before the weight is applied.
/// </summary>
public sealed class LlamaRmsNorm : Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")]
    private readonly Parameter _weight;

    private readonly double _eps;

    /// <summary>Creates a norm over the last dimension of width <paramref name="hiddenSize"/>, weight initialised to ones.</summary>
    public LlamaRmsNorm(string name, long hiddenSize, double eps, ScalarType dtype, Device device)
        : base(name)
    {
        _weight = new Parameter(torch.ones([hiddenSize], dtype, device)); // [D]
        _eps = eps;
        RegisterComponents();
    }

    /// <summary>The scale vector, [D].</summary>
    public Parameter Weight => _weight;

    /// <summary>The epsilon added to the mean square.</summary>
    public double Epsilon => _eps;

    /// <summary>Normalises the last dimension: [..., D] to [..., D] in the input dtype.</summary>
    public override Tensor forward(Tensor input) => ForwardInto(input, null);

    /// <summary>
    /// As <see cref="forward(Tensor)"/>; a row the managed kernel computes is written into <paramref name="output"/> when
    /// given (a decoding step's buffer, see <see cref="DecodingBuffers"/>), which is then returned.
    /// </summary>
    internal Tensor ForwardInto(Tensor input, Tensor? output)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (RowNorm.Applies(input, _weight))
        {
            // One row without gradients (a decoding step on the CPU): the same steps in managed code, no dispatch per op.
            return RowNorm.Compute(input, _weight, _eps, output);
        }

        using var scope = NewDisposeScope();
        Tensor x = input.to_type(ScalarType.Float32); // [..., D]
        Tensor meanSquare = x.pow(2).mean([-1], keepdim: true); // [..., 1]
        Tensor normalised = (x * (meanSquare + _eps).rsqrt()).to_type(input.dtype); // [..., D]
        return (_weight * normalised).MoveToOuterDisposeScope(); // [..., D]
    }
}
