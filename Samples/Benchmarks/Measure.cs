using System.Diagnostics;
using System.Globalization;

namespace ModelSurgery.Benchmarks;

/// <summary>Process and machine measurements the benchmarks report.</summary>
internal static class Measure
{
    /// <summary>Peak resident set size of this process (VmHWM), in bytes.</summary>
    public static long PeakRssBytes() => ReadStatusKiloBytes("VmHWM") * 1024;

    /// <summary>Current resident set size (VmRSS), in bytes.</summary>
    public static long RssBytes() => ReadStatusKiloBytes("VmRSS") * 1024;

    /// <summary>Resets the peak RSS counter to the current RSS (Linux 4.0+: write 5 to clear_refs); false where not allowed.</summary>
    public static bool ResetPeakRss()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Bytes this process caused to be read from storage (read_bytes of /proc/self/io), or -1 where unavailable.</summary>
    public static long StorageReadBytes()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/io"))
            {
                if (line.StartsWith("read_bytes:", StringComparison.Ordinal))
                {
                    return long.Parse(line["read_bytes:".Length..].Trim(), CultureInfo.InvariantCulture);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
        }

        return -1;
    }

    /// <summary>Drops the page cache so the next read comes from storage; false when not permitted (then reads are warm).</summary>
    public static bool DropPageCache()
    {
        try
        {
            Sync();
            File.WriteAllText("/proc/sys/vm/drop_caches", "3");
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    /// <summary>Writes every dirty page to storage (<c>sync</c>), so that no earlier write is flushed inside a measured time.</summary>
    public static void Sync()
    {
        using Process? sync = Process.Start(new ProcessStartInfo("sync") { UseShellExecute = false });
        sync?.WaitForExit();
    }

    /// <summary>Reads files front to back with a large buffer: the baseline every reader is compared with.</summary>
    public static long SequentialRead(IEnumerable<string> files)
    {
        byte[] buffer = new byte[16 << 20];
        long total = 0;
        foreach (string file in files)
        {
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            int read;
            while ((read = stream.Read(buffer, 0, buffer.Length)) > 0)
            {
                total += read;
            }
        }

        return total;
    }

    /// <summary>Minor page faults of this process so far (field 10 of /proc/self/stat), or -1 where unavailable: fresh memory touched for the first time.</summary>
    public static long MinorPageFaults()
    {
        try
        {
            string stat = File.ReadAllText("/proc/self/stat");
            // The command name (field 2) may hold spaces; the fields after its closing parenthesis start at field 3.
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(fields[10 - 3], CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return -1;
        }
    }

    public static string Mb(long bytes) => (bytes / 1e6).ToString("N0", CultureInfo.InvariantCulture) + " MB";

    private static long ReadStatusKiloBytes(string key)
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith(key + ":", StringComparison.Ordinal))
            {
                return long.Parse(line[(key.Length + 1)..].Replace("kB", string.Empty, StringComparison.Ordinal).Trim(), CultureInfo.InvariantCulture);
            }
        }

        return 0;
    }
}
