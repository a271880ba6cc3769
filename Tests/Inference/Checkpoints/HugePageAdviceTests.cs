using System.Globalization;
using ModelSurgery.Inference.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Checkpoints;

/// <summary>Which memory a read asks the kernel to back with huge pages: only whole aligned blocks inside the range.</summary>
public sealed class HugePageAdviceTests
{
    private const long Block = TensorMemory.HugePageBytes;

    [Test]
    public void The_advised_blocks_are_the_largest_aligned_range_inside_the_memory()
    {
        var random = new Random(16);
        for (int trial = 0; trial < 20_000; trial++)
        {
            long address = 1 + (random.NextInt64(1L << 40) & ~(long)(trial % 3 == 0 ? 0 : 63));
            long length = trial % 2 == 0 ? random.NextInt64(4 * Block) : random.NextInt64(1L << 34);

            (long Start, long Length)? blocks = TensorMemory.HugePageBlocks(address, length);

            string context = $"address {address:X}, length {length}";
            long firstAligned = (address + Block - 1) / Block * Block;
            long lastAligned = (address + length) / Block * Block;
            if (lastAligned - firstAligned < Block)
            {
                Assert.That(blocks, Is.Null, context);
                continue;
            }

            Assert.That(blocks, Is.Not.Null, context);
            (long start, long bytes) = blocks!.Value;
            Assert.That(start % Block, Is.Zero, context);
            Assert.That(bytes % Block, Is.Zero, context);
            Assert.That(start, Is.GreaterThanOrEqualTo(address), context);
            Assert.That(start + bytes, Is.LessThanOrEqualTo(address + length), context);
            // Largest: less than a block is left out at either end.
            Assert.That(start - address, Is.LessThan(Block), context);
            Assert.That(address + length - (start + bytes), Is.LessThan(Block), context);
        }
    }

    [TestCase(0L, 8 * Block)]
    [TestCase(Block, Block - 1)]
    [TestCase(Block + 1, Block)]
    [TestCase(Block, 0L)]
    public void No_block_is_advised_where_none_fits(long address, long length) =>
        Assert.That(TensorMemory.HugePageBlocks(address, length), Is.Null);

    [TestCase(Block, Block, Block, Block)]
    [TestCase(Block - 1, (2 * Block) + 1, Block, 2 * Block)]
    [TestCase(3, (3 * Block) - 4, Block, Block)]
    [TestCase(3, (3 * Block) - 3, Block, 2 * Block)]
    public void Aligned_and_unaligned_memory_give_the_blocks_inside(long address, long length, long start, long bytes) =>
        Assert.That(TensorMemory.HugePageBlocks(address, length), Is.EqualTo(((long, long)?)(start, bytes)));

    [Test]
    public async Task Whole_tensor_and_row_reads_ask_for_huge_pages_for_the_memory_they_fill()
    {
        using var dir = new TempDirectory();
        using torch.Tensor stored = torch.arange(0, 3 * Block / 4, dtype: torch.ScalarType.Int32).reshape(3 * Block / 4 / 1024, 1024); // 6 MiB
        await CheckpointWriter.WriteAsync(dir.Path, [("w", stored)]);
        using var reader = CheckpointReader.Open(dir.Path);

        using torch.Tensor whole = reader.ReadTensor("w");
        byte[] rows = GC.AllocateUninitializedArray<byte>((int)(3 * Block), pinned: true);
        long written = reader.ReadRowsInto("w", [.. Enumerable.Range(0, (int)stored.shape[0]).Select(r => (long)r)], null, rows);

        Assert.That(whole.eq(stored).all().item<bool>(), Is.True);
        Assert.That(written, Is.EqualTo(rows.Length));
        Assert.That(rows.AsSpan().SequenceEqual(stored.bytes), Is.True);
        if (!Directory.Exists("/sys/kernel/mm/transparent_hugepage") || !File.Exists("/proc/self/smaps"))
        {
            return; // No transparent huge pages here (not Linux, or a kernel built without them): nothing to ask for.
        }

        unsafe
        {
            fixed (byte* rowsStart = rows)
            {
                foreach ((string what, long address) in new[] { ("ReadTensor", (long)TensorMemory.DataPointer(whole)), ("ReadRowsInto", (long)rowsStart) })
                {
                    long block = (address + Block - 1) / Block * Block; // the first whole block inside: the advice covers it
                    Assert.That(VmFlagsAt(block), Does.Contain("hg"), $"{what}: the mapping holding {block:X} is not advised for huge pages");
                }
            }
        }
    }

    /// <summary>The kernel's flags for the mapping that holds <paramref name="address"/> (<c>VmFlags</c> in /proc/self/smaps).</summary>
    private static string[] VmFlagsAt(long address)
    {
        bool inside = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (dash > 0 && space > dash
                && long.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out long start)
                && long.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out long end))
            {
                inside = start <= address && address < end;
            }
            else if (inside && line.StartsWith("VmFlags:", StringComparison.Ordinal))
            {
                return line["VmFlags:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            }
        }

        throw new InvalidOperationException($"No mapping holds {address:X}.");
    }

    [Test]
    public void Advising_a_tensor_keeps_its_values()
    {
        using torch.Tensor values = torch.arange(0, 3 * Block / 4, dtype: torch.ScalarType.Int32); // 6 MiB
        using torch.Tensor expected = values.clone();

        TensorMemory.AdviseHugePages(values);

        Assert.That(values.eq(expected).all().item<bool>(), Is.True);
    }
}
