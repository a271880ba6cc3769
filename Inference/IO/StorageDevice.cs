using System.Text;

namespace ModelSurgery.Inference.IO;

/// <summary>What the operating system says about the storage device a file sits on.</summary>
public static class StorageDevice
{
    /// <summary>
    /// Whether <paramref name="path"/> sits on a rotational disk, which several concurrent reads make seek back and forth:
    /// true or false where Linux reports it (<c>/sys/dev/block/MAJOR:MINOR/queue/rotational</c> of the device that the
    /// longest mount point above the path is on), null where it cannot be told (another operating system, a file system
    /// without a block device such as tmpfs or a network share). Virtual disks often report themselves rotational whatever
    /// lies below them.
    /// </summary>
    public static bool? IsRotational(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        return OperatingSystem.IsLinux() ? IsRotational(path, "/proc/self/mountinfo", "/sys/dev/block") : null;
    }

    /// <summary><see cref="IsRotational(string)"/> over the given mount table and block-device folder (tests use copies).</summary>
    internal static bool? IsRotational(string path, string mountInfoPath, string blockDevicesPath)
    {
        try
        {
            // A file that is a link (a Hugging Face cache's snapshot files link to its blobs) is judged by its target.
            var info = new FileInfo(path);
            string file = info.LinkTarget is null ? info.FullName : info.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? info.FullName;
            string? device = DeviceOf(file, File.ReadLines(mountInfoPath));
            if (device is null)
            {
                return null;
            }

            // The entry is a link into the device tree; a partition has no queue of its own, its disk's is one folder up.
            var entry = new DirectoryInfo(Path.Combine(blockDevicesPath, device));
            string? folder = entry.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? (entry.Exists ? entry.FullName : null);
            foreach (string? candidate in new[] { folder, Path.GetDirectoryName(folder) })
            {
                string? flag = candidate is null ? null : Path.Combine(candidate, "queue", "rotational");
                if (flag is not null && File.Exists(flag))
                {
                    return File.ReadAllText(flag).Trim() switch { "1" => true, "0" => false, _ => null };
                }
            }

            return null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A missing or unreadable table says nothing about the disk.
            return null;
        }
    }

    /// <summary>
    /// The <c>MAJOR:MINOR</c> of the mount whose mount point is the longest prefix of <paramref name="fullPath"/> in a
    /// <c>/proc/self/mountinfo</c> table, or null when none matches or it is not a block device (major 0).
    /// </summary>
    internal static string? DeviceOf(string fullPath, IEnumerable<string> mountInfo)
    {
        string? best = null;
        int bestLength = -1;
        foreach (string line in mountInfo)
        {
            // Fields: mount id, parent id, major:minor, root, mount point, options, ...
            string[] fields = line.Split(' ');
            if (fields.Length < 5)
            {
                continue;
            }

            string mountPoint = Unescape(fields[4]);
            bool under = mountPoint == "/"
                || fullPath == mountPoint
                || fullPath.StartsWith(mountPoint.TrimEnd('/') + "/", StringComparison.Ordinal);

            // Later lines win ties: a mount stacked on the same point hides the earlier one.
            if (under && mountPoint.Length >= bestLength)
            {
                best = fields[2];
                bestLength = mountPoint.Length;
            }
        }

        return best is null || best.StartsWith("0:", StringComparison.Ordinal) ? null : best;
    }

    /// <summary>Undoes mountinfo's octal escapes (<c>\040</c> for a space, <c>\011</c>, <c>\012</c>, <c>\134</c>).</summary>
    private static string Unescape(string field)
    {
        if (!field.Contains('\\', StringComparison.Ordinal))
        {
            return field;
        }

        var text = new StringBuilder(field.Length);
        for (int i = 0; i < field.Length; i++)
        {
            if (field[i] == '\\' && IsOctal(field, i + 1))
            {
                text.Append((char)Convert.ToInt32(field.Substring(i + 1, 3), 8));
                i += 3;
            }
            else
            {
                text.Append(field[i]);
            }
        }

        return text.ToString();
    }

    private static bool IsOctal(string field, int start) =>
        start + 3 <= field.Length && field[start] is >= '0' and <= '7' && field[start + 1] is >= '0' and <= '7' && field[start + 2] is >= '0' and <= '7';
}
