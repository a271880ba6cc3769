using System.Globalization;
using ModelSurgery.Inference.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Inference.Runtime;

/// <summary>The estimate of a memory preflight exceeded what the process may use.</summary>
public sealed class MemoryPreflightException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public MemoryPreflightException(string message, long neededBytes, long availableBytes)
        : base(message)
    {
        NeededBytes = neededBytes;
        AvailableBytes = availableBytes;
    }

    /// <summary>Creates the exception.</summary>
    public MemoryPreflightException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public MemoryPreflightException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public MemoryPreflightException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Estimated bytes needed.</summary>
    public long NeededBytes { get; }

    /// <summary>Bytes the process may use.</summary>
    public long AvailableBytes { get; }
}

/// <summary>
/// Checks, before anything is allocated, that a model (from its config alone) fits in the memory the process may use,
/// and that a write fits on its disk; refuses with both numbers instead of growing into an out-of-memory kill.
/// </summary>
public static class MemoryPreflight
{
    private static readonly AsyncLocal<bool> SkipFlow = new();
    private static readonly AsyncLocal<long?> LimitFlow = new();
    private static readonly AsyncLocal<long?> FreeDiskFlow = new();

    /// <summary>
    /// Free disk assumed by <see cref="FreeDiskBytes"/> in the current call flow instead of asking the file system, so
    /// that the disk checks can be tested at their exact figure without filling a disk; null asks the file system.
    /// </summary>
    internal static long? FreeDiskOverride
    {
        get => FreeDiskFlow.Value;
        set => FreeDiskFlow.Value = value;
    }

    /// <summary>Turns the memory check off for the current call flow (an explicit user override).</summary>
    public static bool Skip
    {
        get => SkipFlow.Value;
        set => SkipFlow.Value = value;
    }

    /// <summary>
    /// A ceiling the user sets for the current call flow (the CLI's <c>--max-memory</c>), in bytes; null for none. On the
    /// CPU the smaller of it and the host's memory counts; on a GPU it is the only figure (see <see cref="AvailableBytes(DeviceType)"/>).
    /// </summary>
    public static long? Limit
    {
        get => LimitFlow.Value;
        set
        {
            if (value is <= 0)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "The memory limit must be positive.");
            }

            LimitFlow.Value = value;
        }
    }

    /// <summary>Host memory the process may use (honours container limits and <see cref="Limit"/>).</summary>
    public static long AvailableBytes() => Math.Min(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes, Limit ?? long.MaxValue);

    /// <summary>
    /// Memory available on a device: the host's for the CPU; for CUDA only <see cref="Limit"/>, null when none is set.
    /// TorchSharp (0.107) exposes no query of a GPU's free or total memory (its <c>torch.cuda</c> has availability, device
    /// count and seeds only), so GPU runs are checked against a user-given limit and otherwise left to the driver.
    /// </summary>
    public static long? AvailableBytes(DeviceType device) => device == DeviceType.CPU ? AvailableBytes() : Limit;

    /// <summary>
    /// Throws when <paramref name="neededBytes"/> exceeds what <paramref name="device"/> has (see
    /// <see cref="AvailableBytes(DeviceType)"/>); does nothing when that is unknown or <see cref="Skip"/> is set.
    /// </summary>
    /// <exception cref="MemoryPreflightException">The estimate exceeds the available memory.</exception>
    public static void EnsureFits(long neededBytes, string what, DeviceType device)
    {
        if (AvailableBytes(device) is { } available)
        {
            EnsureFits(neededBytes, device == DeviceType.CPU ? what : $"{what} on {device}", available);
        }
    }

    /// <summary>Throws when <paramref name="neededBytes"/> exceeds the available host memory (unless <see cref="Skip"/>).</summary>
    /// <param name="neededBytes">Estimated bytes.</param>
    /// <param name="what">What needs them, for the message (e.g. "loading /models/x: 70,553,706,496 parameters as float32").</param>
    /// <param name="availableBytes">Available memory; null measures it.</param>
    /// <exception cref="MemoryPreflightException">The estimate exceeds the available memory.</exception>
    public static void EnsureFits(long neededBytes, string what, long? availableBytes = null)
    {
        if (Skip)
        {
            return;
        }

        long available = availableBytes ?? AvailableBytes();
        if (neededBytes > available)
        {
            throw new MemoryPreflightException(
                string.Create(CultureInfo.InvariantCulture, $"{what} needs about {ByteSize.Format(neededBytes)} of memory but only {ByteSize.Format(available)} is available."),
                neededBytes,
                available);
        }
    }

    /// <summary>
    /// Free bytes on the disk holding <paramref name="directory"/> (or its nearest existing parent); null when the file
    /// system does not say.
    /// </summary>
    public static long? FreeDiskBytes(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (FreeDiskOverride is { } assumed)
        {
            return assumed;
        }

        string? existing = Path.GetFullPath(directory);
        while (existing is not null && !Directory.Exists(existing))
        {
            existing = Path.GetDirectoryName(existing);
        }

        if (existing is null)
        {
            return null;
        }

        try
        {
            return new DriveInfo(existing).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
        {
            // Free space is unknown here (an unusual file system): the write reports its own error if the disk fills.
            return null;
        }
    }

    /// <summary>Throws when the disk holding <paramref name="directory"/> has less free space than <paramref name="neededBytes"/>.</summary>
    /// <param name="directory">Where the write goes (it need not exist yet).</param>
    /// <param name="neededBytes">Estimated bytes written.</param>
    /// <param name="what">What writes them, for the message (e.g. "synth").</param>
    /// <param name="lower">What the estimate is made of and how to lower it, appended to the message; null for nothing.</param>
    /// <exception cref="IOException">Not enough free space; the message gives both numbers.</exception>
    public static void EnsureDiskSpace(string directory, long neededBytes, string what, string? lower = null)
    {
        if (FreeDiskBytes(directory) is { } free && neededBytes > free)
        {
            throw new IOException(string.Create(CultureInfo.InvariantCulture,
                $"{what} writes about {ByteSize.Format(neededBytes)} but only {ByteSize.Format(free)} is free on the disk of {directory}.{(lower is null ? string.Empty : " " + lower)}"));
        }
    }
}
