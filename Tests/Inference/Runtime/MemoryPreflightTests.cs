using ModelSurgery.Inference.Runtime;
using TorchSharp;

namespace ModelSurgery.Tests.Inference;

public sealed class MemoryPreflightTests
{
    [TearDown]
    public void ResetLimit() => MemoryPreflight.Limit = null;

    [Test]
    public void A_gpu_has_no_known_memory_without_a_limit()
    {
        MemoryPreflight.Limit = null;
        Assert.That(MemoryPreflight.AvailableBytes(DeviceType.CUDA), Is.Null);

        // Unknown memory is not a refusal: the driver reports its own error.
        Assert.DoesNotThrow(() => MemoryPreflight.EnsureFits(long.MaxValue, "a model", DeviceType.CUDA));
    }

    [Test]
    public void A_limit_is_the_gpu_figure_and_caps_the_host_figure()
    {
        long host = MemoryPreflight.AvailableBytes();
        MemoryPreflight.Limit = 1000;

        Assert.That(MemoryPreflight.AvailableBytes(DeviceType.CUDA), Is.EqualTo(1000));
        Assert.That(MemoryPreflight.AvailableBytes(DeviceType.CPU), Is.EqualTo(Math.Min(host, 1000)));
        var refused = Assert.Throws<MemoryPreflightException>(() => MemoryPreflight.EnsureFits(1001, "a model", DeviceType.CUDA))!;
        Assert.That(refused.NeededBytes, Is.EqualTo(1001));
        Assert.That(refused.AvailableBytes, Is.EqualTo(1000));
        Assert.That(refused.Message, Does.Contain("CUDA"));
        Assert.DoesNotThrow(() => MemoryPreflight.EnsureFits(1000, "a model", DeviceType.CUDA));
        Assert.Throws<MemoryPreflightException>(() => MemoryPreflight.EnsureFits(1001, "a model", DeviceType.CPU));
    }

    [Test]
    public void Skip_turns_the_gpu_check_off_too()
    {
        MemoryPreflight.Limit = 10;
        MemoryPreflight.Skip = true;
        try
        {
            Assert.DoesNotThrow(() => MemoryPreflight.EnsureFits(11, "a model", DeviceType.CUDA));
        }
        finally
        {
            MemoryPreflight.Skip = false;
        }
    }

    [Test]
    public void A_non_positive_limit_is_refused() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => MemoryPreflight.Limit = 0);
}
