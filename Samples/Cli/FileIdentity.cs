using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace ModelSurgery.Cli;

/// <summary>
/// Whether two paths name the same file, hard links included. On Linux the device and inode numbers are compared
/// (<c>statx</c>, whose result layout is the same on every architecture); elsewhere, and when the call is unavailable,
/// only the resolved paths are compared, so a hard link there goes unnoticed.
/// </summary>
internal static class FileIdentity
{
    private const int AtFdCwd = -100;
    private const uint StatxBasicStats = 0x7ff;

    /// <summary>True when both paths exist as files and are one file (same device and inode).</summary>
    public static bool SameFile(string a, string b)
    {
        if (!OperatingSystem.IsLinux() || !File.Exists(a) || !File.Exists(b))
        {
            return false;
        }

        return Identity(a) is { } x && Identity(b) is { } y && x == y;
    }

    // struct statx: stx_ino at 32 (u64), stx_dev_major at 136 and stx_dev_minor at 140 (u32).
    private static (ulong Device, ulong Inode)? Identity(string path)
    {
        byte[] buffer = new byte[256];
        try
        {
            if (NativeMethods.Statx(AtFdCwd, Encoding.UTF8.GetBytes(path + "\0"), 0, StatxBasicStats, buffer) != 0)
            {
                return null;
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }

        ulong device = ((ulong)BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(136)) << 32) | BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(140));
        return (device, BinaryPrimitives.ReadUInt64LittleEndian(buffer.AsSpan(32)));
    }

    private static class NativeMethods
    {
        [DllImport("libc", EntryPoint = "statx", SetLastError = true)]
        public static extern int Statx(int directory, byte[] path, int flags, uint mask, [Out] byte[] buffer);
    }
}
