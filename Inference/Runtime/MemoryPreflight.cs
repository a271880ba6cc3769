using System.Globalization;
using ModelSurgery.Inference.Checkpoints;

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

    /// <summary>Turns the memory check off for the current call flow (an explicit user override).</summary>
    public static bool Skip
    {
        get => SkipFlow.Value;
        set => SkipFlow.Value = value;
    }

    /// <summary>Host memory the process may use (honours container limits).</summary>
    public static long AvailableBytes() => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

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

    /// <summary>Throws when the disk holding <paramref name="directory"/> has less free space than <paramref name="neededBytes"/>.</summary>
    /// <exception cref="IOException">Not enough free space; the message gives both numbers.</exception>
    public static void EnsureDiskSpace(string directory, long neededBytes, string what)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        string? existing = Path.GetFullPath(directory);
        while (existing is not null && !Directory.Exists(existing))
        {
            existing = Path.GetDirectoryName(existing);
        }

        if (existing is null)
        {
            return;
        }

        long free;
        try
        {
            free = new DriveInfo(existing).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
        {
            // Free space is unknown here (an unusual file system): the write reports its own error if the disk fills.
            return;
        }

        if (neededBytes > free)
        {
            throw new IOException(string.Create(CultureInfo.InvariantCulture,
                $"{what} writes about {ByteSize.Format(neededBytes)} but only {ByteSize.Format(free)} is free on the disk of {directory}."));
        }
    }
}
