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
