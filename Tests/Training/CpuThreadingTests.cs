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
}
