using ModelSurgery.Training;
using TorchSharp;

namespace ModelSurgery.Tests.Training;

public sealed class CpuThreadingTests
{
    [Test]
    public void LoadedRuntimeIsDetected()
    {
        using torch.Tensor touch = torch.zeros(1); // loads libtorch and its OpenMP runtime

        Assert.That(CpuThreading.IsOpenMpRuntimeLoaded(), Is.EqualTo(OperatingSystem.IsLinux()));
    }

    [Test]
    public void AfterLibtorchLoadsThePolicyIsLeftAlone()
    {
        using torch.Tensor touch = torch.zeros(1);
        string? before = Environment.GetEnvironmentVariable(CpuThreading.WaitPolicyVariable);

        PassiveWaitingOutcome outcome = CpuThreading.PreferPassiveWaiting();

        PassiveWaitingOutcome expected = !OperatingSystem.IsLinux() ? PassiveWaitingOutcome.Unsupported
            : string.IsNullOrEmpty(before) ? PassiveWaitingOutcome.TooLate
            : PassiveWaitingOutcome.KeptExistingSetting;
        Assert.That(outcome, Is.EqualTo(expected));
        Assert.That(Environment.GetEnvironmentVariable(CpuThreading.WaitPolicyVariable), Is.EqualTo(before));
    }

    [Test]
    public void The_allocator_takes_the_settings_that_keep_freed_memory_on_linux()
    {
        // glibc's mallopt answers 1 only for a parameter it knows and a value it accepts, so a wrong parameter or entry
        // point shows here; the effect on a training step's page faults is what `train --step-costs` measures.
        Assert.That(CpuThreading.KeepFreedMemoryInProcess(), Is.EqualTo(OperatingSystem.IsLinux()));
        Assert.That(CpuThreading.KeepFreedMemoryInProcess(), Is.EqualTo(OperatingSystem.IsLinux()), "calling it again is harmless");
    }
}
