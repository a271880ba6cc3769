using ModelSurgery.Inference.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Checkpoints;

/// <summary>Coalescing of the byte ranges a read needs into few large fetches, and the needed / fetched byte counts.</summary>
public sealed class CoalescedReadTests
{
    [Test]
    public void Ranges_closer_than_the_gap_merge_and_farther_ones_stay_apart()
    {
        // Out of order, overlapping, touching, a short gap, a long gap and an empty range.
        (long, long)[] ranges = [(1000, 100), (0, 100), (50, 100), (150, 10), (170, 5), (5000, 0)];

        List<(long Offset, long Length)> merged = SafetensorsFile.Coalesce(ranges, gap: 20);

        Assert.That(merged, Is.EqualTo(new List<(long, long)> { (0, 175), (1000, 100) }));
        Assert.That(SafetensorsFile.Coalesce(ranges, gap: 1000), Is.EqualTo(new List<(long, long)> { (0, 1100) }));
        Assert.That(SafetensorsFile.Coalesce(ranges, gap: 0), Is.EqualTo(new List<(long, long)> { (0, 160), (170, 5), (1000, 100) }));
    }

    [Test]
    public void Every_input_byte_is_covered_and_merged_ranges_are_gap_apart()
    {
        var random = new Random(5);
        for (int trial = 0; trial < 50; trial++)
        {
            var ranges = Enumerable.Range(0, random.Next(1, 40)).Select(_ => ((long)random.Next(0, 10_000), (long)random.Next(0, 300))).ToList();
            long gap = random.Next(0, 500);

            List<(long Offset, long Length)> merged = SafetensorsFile.Coalesce(ranges, gap);

            foreach ((long offset, long length) in ranges.Where(r => r.Item2 > 0))
            {
                Assert.That(merged.Any(m => m.Offset <= offset && offset + length <= m.Offset + m.Length), $"range ({offset}, {length}) is covered");
            }

            for (int i = 1; i < merged.Count; i++)
            {
                Assert.That(merged[i].Offset - (merged[i - 1].Offset + merged[i - 1].Length), Is.GreaterThanOrEqualTo(gap));
            }

            // Merging never invents bytes beyond the span of the inputs.
            Assert.That(merged.Sum(m => m.Length), Is.LessThanOrEqualTo(ranges.Where(r => r.Item2 > 0).Select(r => r.Item1 + r.Item2).DefaultIfEmpty(0).Max()));
        }
    }

    [Test]
    public async Task Reads_count_the_bytes_needed_and_the_whole_pages_fetched()
    {
        string dir = Directory.CreateTempSubdirectory("coalesce").FullName;
        try
        {
            // 512 rows of 4 KiB (a page each where pages are 4 KiB): every other row kept, so the gaps are one row wide.
            const int rows = 512, columns = 2048;
            using torch.Tensor full = torch.arange(0, rows * columns).reshape(rows, columns).to(torch.ScalarType.BFloat16);
            await CheckpointWriter.WriteAsync(dir, [("w", full)]);
            using var reader = CheckpointReader.Open(dir);
            long[] kept = [.. Enumerable.Range(0, rows / 2).Select(i => (long)(2 * i))];

            using torch.Tensor picked = reader.ReadIndices("w", 0, kept);

            long rowBytes = columns * 2;
            Assert.That(reader.BytesNeeded, Is.EqualTo(kept.Length * rowBytes));

            // The gaps are shorter than CoalesceGapBytes, so one range from the first kept row to the end of the last is
            // fetched: its pages, at most one page more on either side than the span itself.
            long span = ((kept[^1] - kept[0]) * rowBytes) + rowBytes;
            Assert.That(reader.BytesFetched, Is.GreaterThanOrEqualTo(span).And.LessThanOrEqualTo(span + (2L * Environment.SystemPageSize)));
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
