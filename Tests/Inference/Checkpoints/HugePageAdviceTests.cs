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
    public void Advising_a_tensor_keeps_its_values()
    {
        using torch.Tensor values = torch.arange(0, 3 * Block / 4, dtype: torch.ScalarType.Int32); // 6 MiB
        using torch.Tensor expected = values.clone();

        TensorMemory.AdviseHugePages(values);

        Assert.That(values.eq(expected).all().item<bool>(), Is.True);
    }
}
