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
        if (!IsValidName(name))
        {
            throw new ArgumentException($"Unknown device '{name}': use auto, cpu, cuda or cuda:N.");
        }

        if (string.IsNullOrWhiteSpace(name) || name.Equals("auto", StringComparison.OrdinalIgnoreCase))
        {
            return torch.cuda.is_available() ? torch.CUDA : torch.CPU;
        }

        string normalized = name.Trim().ToLowerInvariant();
        if (normalized.StartsWith("cuda", StringComparison.Ordinal) && !torch.cuda.is_available())
        {
            // Checked before TorchSharp parses the name: a CPU-only backend rejects "cuda" as an unknown device.
            throw new ArgumentException($"device '{name}': CUDA is not available in the loaded LibTorch backend (this build uses the CPU backend, or no GPU or driver was found); use the cpu device, or build with -p:TorchBackend=cuda (TorchSharp-cuda-linux / -windows) on a machine with a GPU.");
        }

        torch.Device device;
        try
        {
            device = torch.device(normalized);
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidOperationException)
        {
            throw new ArgumentException($"Unknown device '{name}': use auto, cpu, cuda or cuda:N.", ex);
        }

        return device;
    }

    /// <summary>Whether <paramref name="name"/> is spelled as a device: null, <c>auto</c>, <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c> (case-insensitive).</summary>
    public static bool IsValidName(string? name)
    {
        if (string.IsNullOrWhiteSpace(name))
        {
            return true;
        }

        string n = name.Trim().ToLowerInvariant();
        return n is "auto" or "cpu" or "cuda"
            || (n.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(n.AsSpan(5), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out _));
    }
}
