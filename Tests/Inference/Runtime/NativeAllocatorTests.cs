using System.Runtime.InteropServices;
using ModelSurgery.Inference.Runtime;

namespace ModelSurgery.Tests.Inference;

public sealed class NativeAllocatorTests
{
    [Test]
    public void The_allocator_takes_the_settings_that_keep_freed_memory_on_linux()
    {
        // glibc's mallopt answers 1 only for a parameter it knows and a value it accepts, so a wrong parameter or entry
        // point shows here.
        Assert.That(NativeAllocator.KeepFreedMemoryInProcess(), Is.EqualTo(OperatingSystem.IsLinux()));
        Assert.That(NativeAllocator.KeepFreedMemoryInProcess(), Is.EqualTo(OperatingSystem.IsLinux()), "calling it again is harmless");
    }

    [TestCase(null, null, false)]
    [TestCase("", null, false)]
    [TestCase("1", null, true)]
    [TestCase(" 1", null, true)]
    [TestCase("01", null, true, Description = "C's strtoul reads a leading 0 as octal; still one")]
    [TestCase("0x1", null, true)]
    [TestCase("0X1", null, true)]
    [TestCase("2", null, false)]
    [TestCase("10", null, false)]
    [TestCase("0", null, false, Description = "0 is glibc's default: as many arenas as it likes")]
    [TestCase("one", null, false)]
    [TestCase(null, "glibc.malloc.arena_max=1", true)]
    [TestCase(null, "glibc.malloc.check=0:glibc.malloc.arena_max=1", true)]
    [TestCase(null, "glibc.malloc.arena_test=1", false, Description = "a different tunable")]
    [TestCase("1", "glibc.malloc.arena_max=4", false, Description = "the tunable takes precedence over the variable")]
    [TestCase("8", "glibc.malloc.arena_max=1", true)]
    [TestCase("1", "glibc.malloc.tcache_count=0", true, Description = "tunables that do not set the limit leave the variable's")]
    public void One_arena_is_read_as_glibc_reads_the_limit(string? arenaMax, string? tunables, bool oneArena) =>
        Assert.That(NativeAllocator.IsOneArena(arenaMax, tunables), Is.EqualTo(oneArena));

    [TestCase(false, false, null, null, OneArenaRestart.Unsupported)]
    [TestCase(true, false, null, null, null)]
    [TestCase(true, false, "", null, null, Description = "an empty variable is no setting")]
    [TestCase(true, false, "1", null, OneArenaRestart.AlreadyOneArena)]
    [TestCase(true, false, null, "glibc.malloc.arena_max=1", OneArenaRestart.AlreadyOneArena)]
    [TestCase(true, false, "0", null, OneArenaRestart.KeptUserSetting, Description = "0 asks for glibc's default and is how a user opts out")]
    [TestCase(true, false, "4", null, OneArenaRestart.KeptUserSetting)]
    [TestCase(true, false, null, "glibc.malloc.arena_max=2", OneArenaRestart.KeptUserSetting)]
    [TestCase(true, false, null, "glibc.malloc.tcache_count=0", null, Description = "other tunables leave the limit unset")]
    [TestCase(true, true, null, null, OneArenaRestart.DebuggerAttached, Description = "a debugger would lose the process it started")]
    [TestCase(false, true, null, null, OneArenaRestart.Unsupported)]
    public void The_process_restarts_only_on_glibc_and_only_where_no_arena_limit_was_set(bool glibc, bool debuggerAttached, string? arenaMax, string? tunables, OneArenaRestart? reason) =>
        Assert.That(NativeAllocator.ReasonNotToRestart(glibc, debuggerAttached, arenaMax, tunables), Is.EqualTo(reason));

    [Test]
    public void The_restart_takes_the_arguments_exactly_as_the_process_got_them()
    {
        static byte[] Bytes(string text) => System.Text.Encoding.UTF8.GetBytes(text);
        static string[]? Texts(byte[][]? arguments) => arguments?.Select(a =>
        {
            Assert.That(a[^1], Is.Zero, "every argument is passed NUL-terminated");
            return System.Text.Encoding.UTF8.GetString(a, 0, a.Length - 1);
        }).ToArray();

        Assert.Multiple(() =>
        {
            Assert.That(Texts(NativeAllocator.CommandLineArguments(Bytes("dotnet\0tool.dll\0--out\0a b\0\0ü\0"))), Is.EqualTo(new[] { "dotnet", "tool.dll", "--out", "a b", string.Empty, "ü" }));
            // The kernel ends the last argument with a NUL; a command line rewritten by its program may not.
            Assert.That(Texts(NativeAllocator.CommandLineArguments(Bytes("prog\0last"))), Is.EqualTo(new[] { "prog", "last" }));
            Assert.That(NativeAllocator.CommandLineArguments([]), Is.Null);
            // A file name that is not UTF-8 goes through byte for byte.
            Assert.That(NativeAllocator.CommandLineArguments([0x70, 0, 0xFF, 0xFE, 0]), Is.EqualTo(new byte[][] { [0x70, 0], [0xFF, 0xFE, 0] }));
        });
    }

    [Test]
    public void This_process_command_line_reads_back_as_its_arguments()
    {
        Assume.That(File.Exists("/proc/self/cmdline"), "Linux only");
        byte[][]? arguments = NativeAllocator.CommandLineArguments(File.ReadAllBytes("/proc/self/cmdline"));
        // .NET drops the host's own arguments from GetCommandLineArgs; the program's come last in both.
        string[] program = Environment.GetCommandLineArgs()[1..];
        Assert.That(arguments, Is.Not.Null);
        Assert.That(arguments![^program.Length..].Select(a => System.Text.Encoding.UTF8.GetString(a, 0, a.Length - 1)), Is.EqualTo(program));
    }

    [Test]
    public void The_minor_fault_count_is_the_tenth_field_of_the_stat_line_whatever_the_command_name()
    {
        Assert.Multiple(() =>
        {
            Assert.That(NativeAllocator.MinorPageFaultsFromStat("4242 (dotnet) S 1 4242 4242 0 -1 4194560 123456 0 7 0 55 9 0 0 20 0 31 0"), Is.EqualTo(123456));
            // A program may name itself with spaces and parentheses; the fields start after the last ')'.
            Assert.That(NativeAllocator.MinorPageFaultsFromStat("7 (a) b (c)) R 1 7 7 0 -1 4194560 99 0 7 0"), Is.EqualTo(99));
            Assert.That(NativeAllocator.MinorPageFaultsFromStat("7 (short) R 1 7"), Is.Null);
            Assert.That(NativeAllocator.MinorPageFaultsFromStat(string.Empty), Is.Null);
        });
    }

    [Test]
    public void Touching_fresh_pages_counts_a_minor_fault_for_each()
    {
        Assume.That(OperatingSystem.IsLinux(), "the count comes from /proc");
        const int pages = 4096;
        nuint length = (nuint)(pages * Environment.SystemPageSize);
        IntPtr region = Mmap(IntPtr.Zero, length, 3 /* PROT_READ | PROT_WRITE */, 0x22 /* MAP_PRIVATE | MAP_ANONYMOUS */, -1, 0);
        Assume.That(region, Is.Not.EqualTo(new IntPtr(-1)), "mmap refused a 16 MiB mapping");
        try
        {
            // Huge pages would map 512 pages per fault; this region asks for small ones so that the count is per page.
            _ = Madvise(region, length, 15 /* MADV_NOHUGEPAGE */);
            long before = NativeAllocator.MinorPageFaults()!.Value;
            for (int page = 0; page < pages; page++)
            {
                Marshal.WriteByte(region, page * Environment.SystemPageSize, 1);
            }

            long after = NativeAllocator.MinorPageFaults()!.Value;
            // Other threads of the test process may fault too, so the count is at least the pages written.
            Assert.That(after - before, Is.GreaterThanOrEqualTo(pages));
        }
        finally
        {
            _ = Munmap(region, length);
        }
    }

    [DllImport("libc", EntryPoint = "mmap")]
    private static extern IntPtr Mmap(IntPtr address, nuint length, int protection, int flags, int fd, nint offset);

    [DllImport("libc", EntryPoint = "munmap")]
    private static extern int Munmap(IntPtr address, nuint length);

    [DllImport("libc", EntryPoint = "madvise")]
    private static extern int Madvise(IntPtr address, nuint length, int advice);
}
