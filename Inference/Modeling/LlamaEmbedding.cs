using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ModelSurgery.Inference.Modeling;

/// <summary>The token embedding table; its parameter is named <c>weight</c> like PyTorch's <c>nn.Embedding</c>.</summary>
public sealed class LlamaEmbedding : Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")]
    private readonly Parameter _weight;

    /// <summary>Creates an uninitialised table of <paramref name="vocabSize"/> rows of width <paramref name="hiddenSize"/>.</summary>
    public LlamaEmbedding(string name, long vocabSize, long hiddenSize, ScalarType dtype, Device device)
        : base(name)
    {
        _weight = new Parameter(torch.empty([vocabSize, hiddenSize], dtype, device)); // [V, D]
        RegisterComponents();
    }

    /// <summary>The embedding matrix, [V, D].</summary>
    public Parameter Weight => _weight;

    /// <summary>Looks up token ids: [B, T] (int64) to [B, T, D].</summary>
    public override Tensor forward(Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        Tensor flat = inputIds.reshape(-1); // [B*T]
        Tensor rows = _weight.index_select(0, flat); // [B*T, D]
        long[] shape = [.. inputIds.shape, _weight.shape[1]];
        return rows.view(shape).MoveToOuterDisposeScope(); // [B, T, D]
    }
}
