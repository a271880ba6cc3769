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
}
