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
}
