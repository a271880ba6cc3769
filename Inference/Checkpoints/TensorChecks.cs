using TorchSharp;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>Cheap checks of tensor values read from checkpoints.</summary>
public static class TensorChecks
{
    /// <summary>
    /// True when every element of a floating-point tensor is finite (integer tensors always are). One reduction: the
    /// float64 sum of finite float32/bf16/f16 values cannot overflow, while any NaN or infinity makes it non-finite.
    /// </summary>
    public static bool IsFinite(torch.Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (!tensor.is_floating_point() || tensor.numel() == 0)
        {
            return true;
        }

        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        return double.IsFinite(tensor.sum(type: torch.ScalarType.Float64).item<double>());
    }
}
