using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace ModelSurgery.Training.Export;

/// <summary>Places large files into a job folder: a hard link where the file system allows it, else a copy.</summary>
internal static class JobFiles
{
    private const int CopyBuffer = 4 << 20;

    /// <summary>Hard-links or copies <paramref name="source"/> to <paramref name="destination"/>; returns true when linked.</summary>
    public static async Task<bool> PlaceAsync(string source, string destination, bool tryLink, Action<long> copied, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        // A hard link shares the bytes: nothing is copied and the job reads the very file the local run used. It fails
        // across file systems and on Windows, where the copy below takes over.
        if (tryLink && !OperatingSystem.IsWindows() && NativeMethods.Link(source, destination) == 0)
        {
            return true;
        }

        var input = new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read, CopyBuffer, FileOptions.SequentialScan | FileOptions.Asynchronous);
        await using (input.ConfigureAwait(false))
        {
            var output = new FileStream(destination, FileMode.CreateNew, FileAccess.Write, FileShare.None, CopyBuffer, FileOptions.Asynchronous);
            await using (output.ConfigureAwait(false))
            {
                var buffer = new byte[CopyBuffer];
                int read;
                while ((read = await input.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
                {
                    await output.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                    copied(read);
                }
            }
        }

        return false;
    }

    /// <summary>
    /// Writes int64 values as a NumPy <c>.npy</c> file (format 1.0, little-endian '&lt;i8', C order), which
    /// <c>numpy.load</c> reads, memory-mapped if asked.
    /// </summary>
    public static void WriteInt64Npy(string path, IReadOnlyList<long> values)
    {
        string header = $"{{'descr': '<i8', 'fortran_order': False, 'shape': ({values.Count},), }}";
        // The magic, version and length take 10 bytes; the header is padded with spaces to end on a 64-byte boundary.
        int padded = ((10 + header.Length + 1 + 63) / 64 * 64) - 10;
        header = header.PadRight(padded - 1) + "\n";
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        Span<byte> prefix = stackalloc byte[10];
        prefix[0] = 0x93;
        "NUMPY"u8.CopyTo(prefix[1..]);
        prefix[6] = 1;
        prefix[7] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(prefix[8..], (ushort)header.Length);
        stream.Write(prefix);
        stream.Write(Encoding.ASCII.GetBytes(header));
        var buffer = new byte[8 * 8192];
        for (int i = 0; i < values.Count; i += 8192)
        {
            int n = Math.Min(8192, values.Count - i);
            for (int j = 0; j < n; j++)
            {
                BinaryPrimitives.WriteInt64LittleEndian(buffer.AsSpan(8 * j), values[i + j]);
            }

            stream.Write(buffer, 0, 8 * n);
        }
    }

    private static class NativeMethods
    {
        /// <summary>libc <c>link</c>; the paths are passed as NUL-terminated UTF-8 bytes. 0 on success.</summary>
        public static int Link(string existing, string created)
        {
            try
            {
                return LinkNative(NulTerminated(existing), NulTerminated(created));
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                return -1;
            }
        }

        [DllImport("libc", EntryPoint = "link", SetLastError = true)]
        private static extern int LinkNative(byte[] existing, byte[] created);

        private static byte[] NulTerminated(string text) => Encoding.UTF8.GetBytes(text + "\0");
    }
}
