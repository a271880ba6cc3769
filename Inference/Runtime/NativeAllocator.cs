using System.Runtime.InteropServices;

namespace ModelSurgery.Inference.Runtime;

/// <summary>
/// Process-wide settings of the C allocator that LibTorch's CPU tensors come from.
/// <para>
/// These change the whole process, so the library applies them only where it owns a long batch job whose every step
/// frees and reallocates the same large tensors (training, unless <c>TrainingOptions.KeepFreedMemoryInProcess</c> is
/// false). A program that generates or evaluates decides for itself: the
/// <c>modelsurgery</c> tool and the benchmarks call <see cref="KeepFreedMemoryInProcess"/> at startup, while a host that
/// embeds inference (a server with other work) may prefer its heap to shrink after a large batch. The tool and the
/// samples also call <see cref="RestartOnOneArena"/> first thing, since one setting exists only at start.
/// </para>
/// </summary>
public static class NativeAllocator
{
    /// <summary>
    /// Makes the C allocator keep the memory LibTorch frees for the next allocation instead of handing it back to the
    /// system (glibc on Linux: <c>mallopt(M_MMAP_MAX, 0)</c> and a 2 GiB <c>M_TRIM_THRESHOLD</c>). A training step or an
    /// evaluation batch allocates and frees the same large tensors every time (activations, logits over the vocabulary,
    /// gradients); by default glibc gives every block of 32 MiB or more its own mapping, unmaps it when freed, and the
    /// next step faults every 4 KiB page in again, zeroed. Measured on a shared 2-core machine at the quickstart's shape
    /// (vocabulary 8192, 8 x 128 tokens): 34,000 page faults per plain training step and 98,000 per distillation step
    /// before, 40 and 2,100 after, and steps 3.8 and 6.3 times faster. Streaming a checkpoint tensor by tensor gained the
    /// same way (reading every tensor of a 2.2 GB checkpoint: 311,000 page faults and 3.6-4.3 s before, 32,000-64,000 and
    /// 0.8-1.6 s after) until the reader asked for huge pages for the memory it fills; now it reads as fast either way.
    /// The cost: the process keeps its peak heap instead
    /// of shrinking after it. Not every block stays: one of 64 MiB or more asked for on a thread other than the main one
    /// is still mapped (a thread's own arena holds no more), and a thread's arena that empties completely is unmapped.
    /// Only the environment variable <c>MALLOC_ARENA_MAX=1</c>, which glibc reads when the process starts, keeps every
    /// thread on the main arena (setting the same limit later leaves the threads' arenas in use): the quickstart's
    /// teacher, whose logits take 64 MiB, trained at 4,100 tokens/s with it and 1,000 without, on the same machine.
    /// <see cref="RestartOnOneArena"/> starts a program again with it.
    /// Safe to call more than once and at any time.
    /// </summary>
    /// <returns>True when the allocator took the settings; false elsewhere (not Linux, or a C library without them).</returns>
    public static bool KeepFreedMemoryInProcess()
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }

        try
        {
            // glibc's mallopt returns 1 on success; musl's accepts nothing and returns 0.
            return NativeMethods.mallopt(NativeMethods.MmapMax, 0) == 1 && NativeMethods.mallopt(NativeMethods.TrimThreshold, int.MaxValue) == 1;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            return false;
        }
    }

    /// <summary>The environment variable glibc reads, at process start, the most arenas its threads may use from.</summary>
    public const string ArenaLimitVariable = "MALLOC_ARENA_MAX";

    /// <summary>The environment variable glibc reads its tunables from (<c>glibc.malloc.arena_max</c> among them).</summary>
    public const string TunablesVariable = "GLIBC_TUNABLES";

    /// <summary>
    /// Whether this process was started with every thread allocating from glibc's main arena (<c>MALLOC_ARENA_MAX=1</c>,
    /// or <c>glibc.malloc.arena_max=1</c> in <c>GLIBC_TUNABLES</c>, which takes precedence). Only then do blocks of 64 MiB
    /// or more that threads other than the main one free stay in the process for the next step.
    /// </summary>
    public static bool StartedWithOneArena =>
        IsOneArena(Environment.GetEnvironmentVariable(ArenaLimitVariable), Environment.GetEnvironmentVariable(TunablesVariable));

    /// <summary>
    /// Restarts the process, same executable, arguments and process id, with <c>MALLOC_ARENA_MAX=1</c> added to its
    /// environment, unless it already has an arena limit; returns only when it did not restart. Call it first thing in a
    /// program's entry point, before anything is written or started: the running image is replaced (<c>execv</c> on
    /// <c>/proc/self/exe</c> with the arguments of <c>/proc/self/cmdline</c>), so standard streams, the working folder
    /// and the parent's wait carry over. A limit the user set (<c>MALLOC_ARENA_MAX=0</c> keeps glibc's default) is left
    /// as it is, and so is a process with a debugger attached. Never call it from a host that is not a program of its own
    /// (a notebook kernel, a test runner).
    /// <para>
    /// Why: glibc reads the arena limit only at process start, and without it a block of 64 MiB or more that a thread
    /// other than the main one allocates is mapped afresh and unmapped when freed. LibTorch's logits over a vocabulary of
    /// thousands are such blocks, and async code moves a training loop onto pool threads (after its first checkpoint is
    /// written, say): measured on the quickstart's teacher, 16 steps checkpointing every 2 took 17.1 s (9.3 s in the
    /// kernel) without the limit and 9.3 s (2.2 s) with it.
    /// </para>
    /// </summary>
    /// <returns>Why the process was not restarted.</returns>
    public static OneArenaRestart RestartOnOneArena()
    {
        bool glibc = OperatingSystem.IsLinux() && IsGlibc();
        if (ReasonNotToRestart(glibc, System.Diagnostics.Debugger.IsAttached, Environment.GetEnvironmentVariable(ArenaLimitVariable), Environment.GetEnvironmentVariable(TunablesVariable)) is OneArenaRestart reason)
        {
            return reason;
        }

        byte[][]? arguments = File.Exists("/proc/self/cmdline") ? CommandLineArguments(File.ReadAllBytes("/proc/self/cmdline")) : null;
        if (arguments is null)
        {
            return OneArenaRestart.Unsupported;
        }

        // The C environment is what execv hands on; .NET's own copy is not.
        if (NativeMethods.setenv(ArenaLimitVariable, "1", 1) != 0)
        {
            return OneArenaRestart.Failed;
        }

        CloseDiagnosticsEndpointOnRestart();
        NativeMethods.execv("/proc/self/exe", arguments);
        // Only reached when execv failed: carry on as started.
        _ = NativeMethods.unsetenv(ArenaLimitVariable);
        return OneArenaRestart.Failed;
    }

    /// <summary>
    /// The .NET runtime listens for diagnostic tools on a socket file named after the process id in the temporary
    /// folder; a restarted image opens its own, so this one's file is deleted and its descriptor closed by the restart
    /// (closing it now would pull it from under the runtime's listening thread). Best effort: a leftover socket is harmless.
    /// </summary>
    private static void CloseDiagnosticsEndpointOnRestart()
    {
        try
        {
            string folder = Environment.GetEnvironmentVariable("TMPDIR") is { Length: > 0 } tmp ? tmp : "/tmp";
            string[] sockets = Directory.GetFiles(folder, $"dotnet-diagnostic-{Environment.ProcessId}-*-socket");
            if (sockets.Length == 0)
            {
                return;
            }

            // /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path", one bound socket per line.
            HashSet<string> inodes = [.. File.ReadLines("/proc/net/unix")
                .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                .Where(fields => fields.Length >= 8 && sockets.Contains(fields[7], StringComparer.Ordinal))
                .Select(fields => $"socket:[{fields[6]}]")];
            foreach (string descriptor in Directory.GetFileSystemEntries("/proc/self/fd"))
            {
                if (new FileInfo(descriptor).LinkTarget is string target && inodes.Contains(target) && int.TryParse(Path.GetFileName(descriptor), out int fd))
                {
                    _ = NativeMethods.fcntl(fd, NativeMethods.SetDescriptorFlags, NativeMethods.CloseOnExec);
                }
            }

            foreach (string socket in sockets)
            {
                File.Delete(socket);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    /// <summary>What <see cref="RestartOnOneArena"/> does given the platform and the environment it was started with.</summary>
    /// <param name="glibc">Whether the process runs on Linux with glibc.</param>
    /// <param name="debuggerAttached">Whether a debugger is attached, which would lose the process it started when its image is replaced.</param>
    /// <param name="arenaMax">The value of <c>MALLOC_ARENA_MAX</c>, or null.</param>
    /// <param name="tunables">The value of <c>GLIBC_TUNABLES</c>, or null.</param>
    /// <returns>Why not to restart; null when the process should restart.</returns>
    internal static OneArenaRestart? ReasonNotToRestart(bool glibc, bool debuggerAttached, string? arenaMax, string? tunables)
    {
        if (!glibc)
        {
            return OneArenaRestart.Unsupported;
        }

        if (debuggerAttached)
        {
            return OneArenaRestart.DebuggerAttached;
        }

        if (IsOneArena(arenaMax, tunables))
        {
            return OneArenaRestart.AlreadyOneArena;
        }

        bool tunableSet = (tunables ?? string.Empty).Split(':').Any(pair => pair.StartsWith("glibc.malloc.arena_max=", StringComparison.Ordinal));
        return !string.IsNullOrEmpty(arenaMax) || tunableSet ? OneArenaRestart.KeptUserSetting : null;
    }

    /// <summary>
    /// Splits <c>/proc/self/cmdline</c> (arguments each ending in a NUL byte) into the arguments, each NUL-terminated and
    /// byte for byte as the process got it (a file name need not be valid UTF-8).
    /// </summary>
    /// <param name="cmdline">The file's bytes.</param>
    /// <returns>The arguments, the program first; null when there are none.</returns>
    internal static byte[][]? CommandLineArguments(byte[] cmdline)
    {
        ArgumentNullException.ThrowIfNull(cmdline);
        var arguments = new List<byte[]>();
        for (int start = 0; start < cmdline.Length;)
        {
            // The kernel ends every argument with a NUL, the last included; a command line rewritten by its program may not.
            int end = Array.IndexOf(cmdline, (byte)0, start);
            int length = (end < 0 ? cmdline.Length : end) - start;
            byte[] argument = new byte[length + 1];
            Array.Copy(cmdline, start, argument, 0, length);
            arguments.Add(argument);
            start += length + 1;
        }

        return arguments.Count == 0 ? null : [.. arguments];
    }

    /// <summary>
    /// How many minor page faults (a page mapped without reading storage: fresh zeroed memory, or a file page already in
    /// the page cache) this process has taken so far, all threads together (Linux: <c>/proc/self/stat</c>).
    /// </summary>
    /// <returns>The count, or null where the system does not report it.</returns>
    public static long? MinorPageFaults()
    {
        const string stat = "/proc/self/stat";
        if (!OperatingSystem.IsLinux() || !File.Exists(stat))
        {
            return null;
        }

        return MinorPageFaultsFromStat(File.ReadAllText(stat));
    }

    /// <summary>Reads the arena limit the way glibc does: the tunable when <paramref name="tunables"/> sets it, else the variable.</summary>
    /// <param name="arenaMax">The value of <c>MALLOC_ARENA_MAX</c>, or null.</param>
    /// <param name="tunables">The value of <c>GLIBC_TUNABLES</c> (colon-separated <c>name=value</c> pairs), or null.</param>
    /// <returns>True when the limit is one arena.</returns>
    internal static bool IsOneArena(string? arenaMax, string? tunables)
    {
        const string tunable = "glibc.malloc.arena_max=";
        string? limit = arenaMax;
        foreach (string pair in (tunables ?? string.Empty).Split(':'))
        {
            if (pair.StartsWith(tunable, StringComparison.Ordinal))
            {
                limit = pair[tunable.Length..];
            }
        }

        // glibc parses the number as C's strtoul does (base detected from a 0x or 0 prefix): "1", "01" and "0x1" are one.
        string digits = (limit ?? string.Empty).Trim();
        if (digits.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            return long.TryParse(digits.AsSpan(2), System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out long hex) && hex == 1;
        }

        return digits.Length > 0 && digits.All(char.IsAsciiDigit) && digits.TrimStart('0') == "1";
    }

    /// <summary>The tenth field of a <c>/proc/PID/stat</c> line (<c>minflt</c>), counted after the command name's closing parenthesis.</summary>
    /// <param name="statLine">The file's content.</param>
    /// <returns>The count, or null when the line does not have the field.</returns>
    internal static long? MinorPageFaultsFromStat(string statLine)
    {
        // The command name is in parentheses and may itself hold spaces and parentheses: fields start after the last ')'.
        int end = statLine.LastIndexOf(')');
        string[] fields = statLine[(end + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        // After the name: state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9) minflt(10).
        return end >= 0 && fields.Length > 7 && long.TryParse(fields[7], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long faults)
            ? faults
            : null;
    }

    private static bool IsGlibc()
    {
        try
        {
            return NativeMethods.gnu_get_libc_version() != IntPtr.Zero;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            return false;
        }
    }

    private static class NativeMethods
    {
        /// <summary>glibc's <c>M_TRIM_THRESHOLD</c>: free memory at the top of the heap beyond this many bytes is returned to the system.</summary>
        public const int TrimThreshold = -1;

        /// <summary>glibc's <c>M_MMAP_MAX</c>: how many allocations may have their own mapping at once (0: none).</summary>
        public const int MmapMax = -4;

        [DllImport("libc", EntryPoint = "mallopt")]
        public static extern int mallopt(int parameter, int value);

        /// <summary><c>F_SETFD</c>: set a descriptor's flags.</summary>
        public const int SetDescriptorFlags = 2;

        /// <summary><c>FD_CLOEXEC</c>: close the descriptor when the process image is replaced.</summary>
        public const int CloseOnExec = 1;

        [DllImport("libc", EntryPoint = "fcntl")]
        public static extern int fcntl(int fd, int command, int argument);

        [DllImport("libc", EntryPoint = "gnu_get_libc_version")]
        public static extern IntPtr gnu_get_libc_version();

        /// <summary>libc <c>setenv</c>; the strings are passed as NUL-terminated UTF-8.</summary>
        public static int setenv(string name, string value, int overwrite) => SetEnvironment(NulTerminated(name), NulTerminated(value), overwrite);

        /// <summary>libc <c>unsetenv</c>.</summary>
        public static int unsetenv(string name) => UnsetEnvironment(NulTerminated(name));

        /// <summary>libc <c>execv</c> with NUL-terminated arguments: replaces the process image; returns only on failure.</summary>
        public static void execv(string path, byte[][] arguments)
        {
            // A NULL-terminated array of pointers to the arguments, pinned until the call returns (if ever).
            var handles = arguments.Select(a => GCHandle.Alloc(a, GCHandleType.Pinned)).ToArray();
            try
            {
                IntPtr[] pointers = [.. handles.Select(h => h.AddrOfPinnedObject()), IntPtr.Zero];
                _ = Execute(NulTerminated(path), pointers);
            }
            finally
            {
                foreach (GCHandle handle in handles)
                {
                    handle.Free();
                }
            }
        }

        [DllImport("libc", EntryPoint = "setenv")]
        private static extern int SetEnvironment(byte[] name, byte[] value, int overwrite);

        [DllImport("libc", EntryPoint = "unsetenv")]
        private static extern int UnsetEnvironment(byte[] name);

        [DllImport("libc", EntryPoint = "execv")]
        private static extern int Execute(byte[] path, IntPtr[] arguments);

        private static byte[] NulTerminated(string text) => System.Text.Encoding.UTF8.GetBytes(text + "\0");
    }
}

/// <summary>Why <see cref="NativeAllocator.RestartOnOneArena"/> returned instead of restarting the process.</summary>
public enum OneArenaRestart
{
    /// <summary>The process started with every thread on glibc's main arena already.</summary>
    AlreadyOneArena,

    /// <summary>The environment sets another arena limit (<c>MALLOC_ARENA_MAX</c> or the tunable), which was kept.</summary>
    KeptUserSetting,

    /// <summary>Not Linux with glibc, or the process's command line cannot be read: nothing changed.</summary>
    Unsupported,

    /// <summary>The restart failed (<c>execv</c> returned); the process goes on as it started.</summary>
    Failed,

    /// <summary>A debugger is attached: replacing the process image would leave it holding a process that is gone.</summary>
    DebuggerAttached,
}
