using ModelSurgery.Inference.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Inference;

/// <summary>The shared operand checks and the range split of the decoding kernels.</summary>
public sealed class KernelOperandsTests
{
    [Test]
    public void SameSizes_compares_every_dimension()
    {
        using var scope = NewDisposeScope();
        Tensor a = torch.zeros([2, 3, 4]);
        Assert.That(KernelOperands.SameSizes(a, torch.ones([2, 3, 4], ScalarType.BFloat16)), Is.True, "dtype does not matter");
        Assert.That(KernelOperands.SameSizes(a, torch.zeros([2, 3, 5])), Is.False, "last size");
        Assert.That(KernelOperands.SameSizes(a, torch.zeros([1, 3, 4])), Is.False, "first size");
        Assert.That(KernelOperands.SameSizes(a, torch.zeros([2, 12])), Is.False, "rank");
        Assert.That(KernelOperands.SameSizes(torch.zeros([0]), torch.zeros([0])), Is.True, "empty");
    }

    [TestCase(1L, 1, 4L, 1)]
    [TestCase(1000L, 8, 4L, 2)]
    [TestCase(1001L, 8, 4L, 3)]
    [TestCase(13L, 4, 1L, 2)]
    [TestCase(3L, 8, 4L, 2)]
    public void ForEachRange_covers_every_index_once_in_aligned_ranges(long count, int ranges, long align, int threads)
    {
        var seen = new int[count];
        var starts = new System.Collections.Concurrent.ConcurrentBag<long>();
        KernelOperands.ForEachRange(count, ranges, align, threads, (first, end) =>
        {
            starts.Add(first);
            for (long i = first; i < end; i++)
            {
                Interlocked.Increment(ref seen[i]);
            }
        });
        Assert.That(seen, Is.All.EqualTo(1));
        Assert.That(starts.All(s => s % align == 0), Is.True);
        Assert.That(starts.Count, Is.LessThanOrEqualTo(Math.Max(ranges, 1)));
    }
}
