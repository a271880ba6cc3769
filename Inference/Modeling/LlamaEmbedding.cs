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

    /// <summary>
    /// Copies the row of the one id in <paramref name="inputIds"/> (int64 [1, 1] on the CPU) into <paramref name="output"/>
    /// ([1, 1, D], contiguous, the weight's dtype, on the CPU) and returns true when those conditions hold, the weight is a
    /// contiguous CPU fp32 or bf16 matrix, no gradient is to be tracked and the id is in the vocabulary; otherwise leaves
    /// everything as it was and returns false (<see cref="forward"/> then reports a bad id). A decoding step's embedding
    /// without a tensor of its own; the copy is exact, as <c>index_select</c>'s.
    /// </summary>
    internal unsafe bool TryLookUpRow(Tensor inputIds, Tensor output)
    {
        if (inputIds.dtype != ScalarType.Int64 || inputIds.device_type != DeviceType.CPU || inputIds.numel() != 1 || inputIds.dim() != 2
            || !inputIds.is_contiguous() || !Runtime.KernelOperands.OnCpuInOneFloatType(_weight, output) || !_weight.is_contiguous()
            || !output.is_contiguous() || output.numel() != _weight.size(1) || !Runtime.KernelOperands.NeedNoGradient(_weight))
        {
            return false;
        }

        long id = *(long*)Checkpoints.TensorMemory.DataPointer(inputIds);
        if (id < 0 || id >= _weight.size(0))
        {
            return false;
        }

        long rowBytes = _weight.size(1) * _weight.ElementSize;
        Buffer.MemoryCopy(Checkpoints.TensorMemory.DataPointer(_weight) + (id * rowBytes), Checkpoints.TensorMemory.DataPointer(output), rowBytes, rowBytes);
        return true;
    }
}
