using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>
/// Appends to a new file with direct I/O (Linux <c>O_DIRECT</c>): bytes are gathered in an aligned buffer and written
/// from it straight to storage in whole blocks, without being copied into the page cache first. For large files written
/// once and not read back at once (a built student), that copy and the page-cache insertion were the largest CPU cost of
/// the write. The last partial block is written padded with zeros and the file then cut to its length.
/// </summary>
internal sealed unsafe partial class DirectFileWriter : IDisposable
{
    /// <summary>
    /// Offset, length and buffer alignment of every write: a multiple of the logical block size of common storage (512 B or
    /// 4 KiB), and of the page size, which some file systems ask for.
    /// </summary>
    internal const int Alignment = 4096;

    private readonly SafeFileHandle _file;
    private readonly byte* _buffer;
    private readonly int _bufferBytes;
    private int _buffered;
    private long _written;
    private bool _disposed;

    private DirectFileWriter(SafeFileHandle file, byte* buffer, int bufferBytes)
    {
        _file = file;
        _buffer = buffer;
        _bufferBytes = bufferBytes;
    }

    /// <summary>Bytes appended so far (the file's length once <see cref="Complete"/> has run).</summary>
    public long Length => _written + _buffered;

    /// <summary>
    /// Creates <paramref name="path"/> (which must not exist) for direct writing with a buffer of
    /// <paramref name="bufferBytes"/> (a multiple of <see cref="Alignment"/>); null where direct I/O is unavailable: not
    /// Linux, an architecture whose flag value is not known here, or a file system that refuses it (tmpfs, some network
    /// file systems). Then no file is left behind and the caller writes through the page cache.
    /// </summary>
    public static DirectFileWriter? TryCreate(string path, int bufferBytes)
    {
        if (bufferBytes <= 0 || bufferBytes % Alignment != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(bufferBytes), bufferBytes, $"The buffer must be a positive multiple of {Alignment} bytes.");
        }

        int direct = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => 0x4000,
            Architecture.Arm64 => 0x10000,
            _ => 0,
        };
        if (!OperatingSystem.IsLinux() || direct == 0)
        {
            return null;
        }

        const int writeOnly = 0x1, create = 0x40, exclusive = 0x80, closeOnExec = 0x80000;
        int fd = Open(path, writeOnly | create | exclusive | closeOnExec | direct, 438 /* 0666, narrowed by the umask */);
        if (fd < 0)
        {
            int error = Marshal.GetLastPInvokeError();
            const int exists = 17, invalid = 22;
            if (error == exists)
            {
                throw new IOException($"The file '{path}' already exists.");
            }

            // Only a refusal of direct I/O falls back; any other failure (no such folder, no permission) is the caller's.
            return error == invalid ? null : throw new IOException($"Cannot create '{path}': error {error}.");
        }

        var file = new SafeFileHandle(fd, ownsHandle: true);
        byte* buffer = null;
        try
        {
            buffer = (byte*)NativeMemory.AlignedAlloc((nuint)bufferBytes, Alignment);
            new Span<byte>(buffer, Alignment).Clear();

            // Some file systems accept the flag at open and refuse the first write: probe with one block, then empty the file.
            try
            {
                RandomAccess.Write(file, new ReadOnlySpan<byte>(buffer, Alignment), 0);
                RandomAccess.SetLength(file, 0);
            }
            catch (IOException)
            {
                NativeMemory.AlignedFree(buffer);
                file.Dispose();
                File.Delete(path);
                return null;
            }

            return new DirectFileWriter(file, buffer, bufferBytes);
        }
        catch
        {
            if (buffer is not null)
            {
                NativeMemory.AlignedFree(buffer);
            }

            file.Dispose();
            File.Delete(path);
            throw;
        }
    }

    /// <summary>Appends <paramref name="data"/>, writing every buffer that fills to storage (and waiting for it).</summary>
    public void Write(ReadOnlySpan<byte> data)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        while (!data.IsEmpty)
        {
            int take = Math.Min(data.Length, _bufferBytes - _buffered);
            data[..take].CopyTo(new Span<byte>(_buffer + _buffered, take));
            _buffered += take;
            data = data[take..];
            if (_buffered == _bufferBytes)
            {
                RandomAccess.Write(_file, new ReadOnlySpan<byte>(_buffer, _bufferBytes), _written);
                _written += _bufferBytes;
                _buffered = 0;
            }
        }
    }

    /// <summary>Writes what is buffered (its last block padded), cuts the file to <see cref="Length"/> and flushes it to disk.</summary>
    public void Complete()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long length = Length;
        if (_buffered > 0)
        {
            int padded = (_buffered + Alignment - 1) / Alignment * Alignment;
            new Span<byte>(_buffer + _buffered, padded - _buffered).Clear();
            RandomAccess.Write(_file, new ReadOnlySpan<byte>(_buffer, padded), _written);
            _written += _buffered;
            _buffered = 0;
        }

        RandomAccess.SetLength(_file, length);
        RandomAccess.FlushToDisk(_file);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _file.Dispose();
        NativeMemory.AlignedFree(_buffer);
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags, int mode);
}
