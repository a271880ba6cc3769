using TorchSharp;

namespace ModelSurgery.Inference.Runtime;

/// <summary>Chooses the TorchSharp device a model runs on.</summary>
public static class ComputeDevice
{
    /// <summary>
    /// Resolves a device name: <c>auto</c> (or null) picks CUDA when the loaded LibTorch backend has it, else CPU;
    /// anything else (<c>cpu</c>, <c>cuda</c>, <c>cuda:1</c>) is taken as given.
    /// </summary>
    /// <exception cref="ArgumentException">The name is not a device TorchSharp knows, or names CUDA on a CPU-only backend.</exception>
    public static torch.Device Resolve(string? name = null)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Equals("auto", StringComparison.OrdinalIgnoreCase))
        {
            return torch.cuda.is_available() ? torch.CUDA : torch.CPU;
        }

        // A CPU-only backend rejects "cuda" as an unknown device; the real cause is the missing CUDA support.
        if (name.StartsWith("cuda", StringComparison.OrdinalIgnoreCase) && !torch.cuda.is_available())
        {
            throw new ArgumentException(NoCuda(name), nameof(name));
        }

        torch.Device device;
        try
        {
            device = torch.device(name);
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidOperationException)
        {
            throw new ArgumentException($"Unknown device '{name}': use auto, cpu, cuda or cuda:N.", nameof(name), ex);
        }

        if (device.type == DeviceType.CUDA && !torch.cuda.is_available())
        {
            throw new ArgumentException(NoCuda(name), nameof(name));
        }

        return device;
    }

    private static string NoCuda(string name) =>
        $"device '{name}': CUDA is not available in the loaded LibTorch backend (this build uses the CPU backend, or no GPU/driver was found); use --device cpu, or build with -p:TorchBackend=cuda (TorchSharp-cuda-linux / -windows) on a machine with a GPU.";
}
