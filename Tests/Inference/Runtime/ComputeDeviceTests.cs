using ModelSurgery.Inference.Runtime;
using TorchSharp;

namespace ModelSurgery.Tests.Inference;

public sealed class ComputeDeviceTests
{
    [Test]
    public void Auto_resolves_to_cpu_without_cuda_and_torch_runs()
    {
        torch.Device device = ComputeDevice.Resolve("auto");
        Assert.That(device.type, Is.EqualTo(torch.cuda.is_available() ? DeviceType.CUDA : DeviceType.CPU));

        using var a = torch.ones(2, 3);
        using var b = torch.ones(3, 4);
        using var c = a.matmul(b);
        Assert.That(c.sum().item<float>(), Is.EqualTo(24f));
    }

    [Test]
    public void Unknown_device_name_is_a_clear_error()
    {
        var ex = Assert.Throws<ArgumentException>(() => ComputeDevice.Resolve("tpu"));
        Assert.That(ex!.Message, Does.Contain("tpu"));
    }

    [Test]
    public void Cuda_without_cuda_says_so_instead_of_unknown_device()
    {
        Assume.That(torch.cuda.is_available(), Is.False, "a machine with CUDA resolves cuda");
        var ex = Assert.Throws<ArgumentException>(() => ComputeDevice.Resolve("cuda"));
        Assert.That(ex!.Message, Does.Contain("CUDA is not available").And.Not.Contain("Unknown device"));
    }

    [TestCase("auto", true)]
    [TestCase("CPU", true)]
    [TestCase("cuda:1", true)]
    [TestCase("cuda:x", false)]
    [TestCase("tpu", false)]
    public void Device_names_are_checked_without_touching_the_backend(string name, bool valid) =>
        Assert.That(ComputeDevice.IsValidName(name), Is.EqualTo(valid));
}
