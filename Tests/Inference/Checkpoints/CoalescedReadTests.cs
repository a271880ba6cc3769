using ModelSurgery.Inference.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Checkpoints;

/// <summary>Coalescing of the byte ranges a read needs into few large fetches, and the needed / fetched byte counts.</summary>
public sealed class CoalescedReadTests
{
    [Test]
    public void Ranges_become_whole_pages_and_short_gaps_merge_shortest_first_within_the_slack()
    {
        // Pages of 100 bytes. Out of order, overlapping, sharing a page, an empty range; then gaps of 1, 2 and 5 pages.
        (long, long)[] ranges = [(1000, 100), (0, 100), (50, 100), (150, 10), (5000, 0), (1300, 50), (1900, 100)];

        // Page bound: [0, 200) + [1000, 1100) + [1300, 1400) + [1900, 2000) = 500 bytes.
        Assert.That(SafetensorsFile.Coalesce(ranges, origin: 0, pageSize: 100, maxGap: 1000, slack: 0), Is.EqualTo(new List<(long, long)> { (0, 200), (1000, 100), (1300, 100), (1900, 100) }));

        // A budget of 0.4 x 500 = 200 bytes closes the shortest gap (200) only; 0.6 x 500 = 300 cannot close the next (500) too.
        Assert.That(SafetensorsFile.Coalesce(ranges, 0, 100, 1000, slack: 0.4), Is.EqualTo(new List<(long, long)> { (0, 200), (1000, 400), (1900, 100) }));
        Assert.That(SafetensorsFile.Coalesce(ranges, 0, 100, 1000, slack: 0.6), Is.EqualTo(new List<(long, long)> { (0, 200), (1000, 400), (1900, 100) }));

        // With budget for every gap, only those shorter than maxGap close.
        Assert.That(SafetensorsFile.Coalesce(ranges, 0, 100, maxGap: 300, slack: 10), Is.EqualTo(new List<(long, long)> { (0, 200), (1000, 400), (1900, 100) }));
        Assert.That(SafetensorsFile.Coalesce(ranges, 0, 100, maxGap: 600, slack: 10), Is.EqualTo(new List<(long, long)> { (0, 200), (1000, 1000) }));
        Assert.That(SafetensorsFile.Coalesce(ranges, 0, 100, maxGap: 1000, slack: 10), Is.EqualTo(new List<(long, long)> { (0, 2000) }));

        // The origin places the pages: offset 0 at address 50 starts in the page [0, 100), i.e. at offset -50.
        Assert.That(SafetensorsFile.Coalesce([(0, 60)], origin: 50, pageSize: 100), Is.EqualTo(new List<(long, long)> { (-50, 200) }));
    }

    [Test]
    public void Every_kept_byte_is_fetched_and_fetched_stays_within_the_slack_of_the_page_bound()
    {
        var random = new Random(5);
        for (int trial = 0; trial < 200; trial++)
        {
            var ranges = Enumerable.Range(0, random.Next(1, 60)).Select(_ => ((long)random.Next(0, 200_000), (long)random.Next(0, 3_000))).ToList();
            long origin = random.Next(0, 4096), page = random.Next(0, 2) == 0 ? 4096 : 512;
            long maxGap = random.Next(0, 50_000);
            double slack = random.NextDouble() * 0.2;

            List<(long Offset, long Length)> fetched = SafetensorsFile.Coalesce(ranges, origin, page, maxGap, slack);

            foreach ((long offset, long length) in ranges.Where(r => r.Item2 > 0))
            {
                Assert.That(fetched.Any(m => m.Offset <= offset && offset + length <= m.Offset + m.Length), $"range ({offset}, {length}) is fetched");
            }

            // The page bound: pages touched by at least one input byte, counted directly.
            var touched = new HashSet<long>();
            foreach ((long offset, long length) in ranges.Where(r => r.Item2 > 0))
            {
                for (long p = (origin + offset) / page; p <= (origin + offset + length - 1) / page; p++)
                {
                    touched.Add(p);
                }
            }

            long bound = touched.Count * page;
            Assert.That(fetched.Sum(m => m.Length), Is.InRange(bound, bound + (long)(slack * bound)), $"trial {trial}");
            for (int i = 0; i < fetched.Count; i++)
            {
                Assert.That((origin + fetched[i].Offset) % page, Is.Zero, "page-aligned start");
                Assert.That(fetched[i].Length % page, Is.Zero, "whole pages");
                Assert.That(i == 0 || fetched[i].Offset - (fetched[i - 1].Offset + fetched[i - 1].Length) > 0, Is.True, "sorted, apart");
            }
        }
    }

    [Test]
    public async Task Reads_count_the_bytes_needed_and_the_whole_pages_fetched()
    {
        string dir = Directory.CreateTempSubdirectory("coalesce").FullName;
        try
        {
            // 512 rows of 8 KiB: every other row kept, so the gaps are at least a page wide wherever the data starts.
            const int rows = 512, columns = 4096;
            using torch.Tensor full = torch.arange(0, rows * columns).reshape(rows, columns).to(torch.ScalarType.BFloat16);
            await CheckpointWriter.WriteAsync(dir, [("w", full)]);
            using var reader = CheckpointReader.Open(dir);
            long[] kept = [.. Enumerable.Range(0, rows / 2).Select(i => (long)(2 * i))];

            using torch.Tensor picked = reader.ReadIndices("w", 0, kept);

            long rowBytes = columns * 2;
            Assert.That(reader.BytesNeeded, Is.EqualTo(kept.Length * rowBytes));

            // Each kept row touches at most one page more than its own bytes; the short gaps cost at most the slack on top,
            // far less than the span from the first kept row to the last (which closing every gap would read).
            long page = Environment.SystemPageSize;
            long bound = kept.Length * (rowBytes + page);
            Assert.That(reader.BytesFetched, Is.GreaterThanOrEqualTo(reader.BytesNeeded).And.LessThanOrEqualTo((long)(bound * (1 + SafetensorsFile.CoalesceSlack))));
            Assert.That(reader.BytesFetched, Is.LessThan(((kept[^1] - kept[0]) * rowBytes) + rowBytes));
            using torch.Tensor expected = full.index_select(0, torch.tensor(kept));
            Assert.That(picked.eq(expected).all().item<bool>(), Is.True);

            using torch.Tensor whole = reader.ReadTensor("w");
            Assert.That(reader.BytesNeeded, Is.EqualTo((kept.Length + rows) * rowBytes));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// Storage is asked for the planned pages only: with the file's pages evicted from the page cache first, a read of every
    /// third row leaves no more of the file cached than it counted as fetched (every page a copy touches was announced whole, so no page fault reads around it).
    /// </summary>
    [Test]
    public async Task A_read_brings_no_pages_into_the_cache_beyond_those_it_fetched()
    {
        Assume.That(OperatingSystem.IsLinux(), "page-cache residency is asked of Linux (mincore)");
        string dir = Directory.CreateTempSubdirectory("coalesce").FullName;
        try
        {
            // 4,096 rows of 8 KiB (32 MiB): the first 12 MiB kept whole (a range longer than a typical read-ahead window, whose
            // page faults would otherwise read around into the gap after it), then from row 2,048 every third row (16 KiB gaps).
            const int rows = 4096, columns = 4096;
            using (torch.Tensor full = torch.arange(0, rows * columns).reshape(rows, columns).to(torch.ScalarType.BFloat16))
            {
                await CheckpointWriter.WriteAsync(dir, [("w", full)]);
            }

            string path = Path.Combine(dir, CheckpointReader.SingleFileName);
            long length = new FileInfo(path).Length;
            Evict(path, length);
            Assume.That(CachedBytes(path, length), Is.LessThanOrEqualTo(Environment.SystemPageSize), "the file system lets clean pages be evicted");

            long[] kept = [.. Enumerable.Range(0, 1536).Select(i => (long)i), .. Enumerable.Range(0, 2048 / 3).Select(i => 2048L + (3 * i))];
            long fetched;
            using (var reader = CheckpointReader.Open(dir))
            {
                using torch.Tensor picked = reader.ReadIndices("w", 0, kept);
                fetched = reader.BytesFetched;
            }

            // The header's pages were read on open (the first holds the header, the next may be shared with data).
            long header = 2L * Environment.SystemPageSize;
            Assert.That(CachedBytes(path, length), Is.LessThanOrEqualTo(fetched + header));
            Assert.That(fetched, Is.LessThan(length * 7 / 10), "the gaps were not fetched");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Drops the file's clean pages from the page cache (posix_fadvise DONTNEED).</summary>
    private static void Evict(string path, long length)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        Assert.That(PosixFadvise((int)stream.SafeFileHandle.DangerousGetHandle(), 0, length, 4), Is.Zero);
    }

    /// <summary>Bytes of the file's pages in the page cache (mincore over a fresh map of it).</summary>
    private static long CachedBytes(string path, long length)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        nint map = Mmap(0, (nuint)length, 1, 1, (int)stream.SafeFileHandle.DangerousGetHandle(), 0);
        Assert.That(map, Is.Not.EqualTo((nint)(-1)));
        try
        {
            long page = Environment.SystemPageSize;
            byte[] resident = new byte[(length + page - 1) / page];
            Assert.That(Mincore(map, (nuint)length, resident), Is.Zero);
            return resident.Count(b => (b & 1) != 0) * page;
        }
        finally
        {
            _ = Munmap(map, (nuint)length);
        }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "posix_fadvise")]
    private static extern int PosixFadvise(int fd, long offset, long length, int advice);

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "mmap")]
    private static extern nint Mmap(nint address, nuint length, int protection, int flags, int fd, long offset);

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "mincore")]
    private static extern int Mincore(nint address, nuint length, byte[] vector);

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "munmap")]
    private static extern int Munmap(nint address, nuint length);

    [Test]
    public async Task Prefetching_rows_counts_nothing_and_names_bad_rows()
    {
        string dir = Directory.CreateTempSubdirectory("coalesce").FullName;
        try
        {
            using torch.Tensor full = torch.arange(0, 64 * 32).reshape(64, 32).to(torch.ScalarType.BFloat16);
            await CheckpointWriter.WriteAsync(dir, [("w", full)]);
            using var reader = CheckpointReader.Open(dir);

            // A hint to storage only: the read that follows counts its bytes, the prefetch does not.
            reader.PrefetchRows("w", [0, 1, 2, 40, 63]);
            Assert.That((reader.BytesNeeded, reader.BytesFetched), Is.EqualTo((0L, 0L)));
            using torch.Tensor rows = reader.ReadIndices("w", 0, [0, 1, 2, 40, 63]);
            Assert.That(reader.BytesNeeded, Is.EqualTo(5 * 32 * 2));

            var ex = Assert.Throws<ArgumentException>(() => reader.PrefetchRows("w", [64]));
            Assert.That(ex!.Message, Does.Contain("Index 64").And.Contain("'w'"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
