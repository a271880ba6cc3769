using System.Globalization;
using ModelSurgery.Inference.Checkpoints;

namespace ModelSurgery.Surgery.Planning;

/// <summary>Refuses to start a build whose estimated peak memory exceeds what the process may use.</summary>
public static class MemoryGuard
{
    /// <summary>Memory the process may use: <see cref="GC.GetGCMemoryInfo()"/>.TotalAvailableMemoryBytes (honours container limits).</summary>
    public static long AvailableBytes() => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>Throws when <paramref name="estimate"/>'s peak exceeds the available memory, unless <paramref name="allowOverride"/> is set.</summary>
    /// <param name="estimate">The estimate to check.</param>
    /// <param name="allowOverride">Proceed anyway (the caller accepts the risk of running out of memory).</param>
    /// <param name="availableBytes">Available memory; null measures it with <see cref="AvailableBytes"/>.</param>
    /// <exception cref="InvalidOperationException">The peak exceeds the available memory; the message gives both numbers.</exception>
    public static void EnsureFits(PlanEstimate estimate, bool allowOverride = false, long? availableBytes = null)
    {
        ArgumentNullException.ThrowIfNull(estimate);
        long available = availableBytes ?? AvailableBytes();
        if (estimate.PeakBytes > available && !allowOverride)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                $"The build needs about {ByteSize.Format(estimate.PeakBytes)} ({estimate.PeakBytes:N0} bytes, largest tensor {estimate.LargestTensor}) "
                + $"but only {ByteSize.Format(available)} ({available:N0} bytes) is available; free memory, use a smaller student dtype, or set the override flag to proceed anyway."));
        }
    }
}
