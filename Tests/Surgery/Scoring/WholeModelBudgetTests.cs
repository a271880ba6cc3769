using ModelSurgery.Inference.Runtime;
using ModelSurgery.Surgery.Scoring;
using TorchSharp;

namespace ModelSurgery.Tests.Surgery.Scoring;

/// <summary>
/// The memory whole-model scoring is checked against on each device: the host's on the CPU; on a GPU only a figure the
/// caller gave (the budget or <c>--max-memory</c>), as the host's says nothing about the GPU and the GPU's cannot be queried.
/// </summary>
public sealed class WholeModelBudgetTests
{
    [TearDown]
    public void ResetLimit() => MemoryPreflight.Limit = null;

    [Test]
    public void The_cpu_budget_is_the_hosts_memory()
    {
        Assert.That(WholeModelScoring.ResolveBudget(null, DeviceType.CPU), Is.EqualTo(MemoryPreflight.AvailableBytes()));
    }

    [Test]
    public void A_gpu_without_a_budget_or_limit_has_none()
    {
        Assert.That(WholeModelScoring.ResolveBudget(null, DeviceType.CUDA), Is.Null, "not the host's memory");
    }

    [Test]
    public void A_gpu_takes_the_memory_limit_and_a_given_budget_wins()
    {
        MemoryPreflight.Limit = 12_345;
        Assert.That(WholeModelScoring.ResolveBudget(null, DeviceType.CUDA), Is.EqualTo(12_345));
        Assert.That(WholeModelScoring.ResolveBudget(678, DeviceType.CUDA), Is.EqualTo(678));
        Assert.That(WholeModelScoring.ResolveBudget(678, DeviceType.CPU), Is.EqualTo(678));
    }
}
