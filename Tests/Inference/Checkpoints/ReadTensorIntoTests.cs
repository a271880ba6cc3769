using ModelSurgery.Inference.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Checkpoints;

/// <summary>Reading a whole tensor into an existing one (a model's parameter) instead of a new tensor.</summary>
public sealed class ReadTensorIntoTests
{
    private TempDirectory _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDirectory();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    [TestCase(torch.ScalarType.Float32)]
    [TestCase(torch.ScalarType.BFloat16)]
    [TestCase(torch.ScalarType.Float16)]
    [TestCase(torch.ScalarType.Int64)]
    [TestCase(torch.ScalarType.Byte)]
    public async Task The_destination_ends_up_equal_to_what_ReadTensor_returns(torch.ScalarType dtype)
    {
        // Shards of their own, and a tensor longer than one read piece, so reads start at other offsets than 0.
        using torch.Tensor small = torch.arange(0, 7 * 5).reshape(7, 5).to(dtype);
        using torch.Tensor large = torch.arange(0, 3 * 700_001).reshape(3, 700_001).remainder(251).to(dtype);
        await CheckpointWriter.WriteAsync(_dir.Path, [("small", small), ("large", large)], new CheckpointWriterOptions { MaxShardBytes = large.NumberOfElements * large.ElementSize });
        using var reader = CheckpointReader.Open(_dir.Path);
        Assert.That(reader.Shards, Has.Count.EqualTo(2));

        foreach (string name in new[] { "small", "large" })
        {
            using torch.Tensor expected = reader.ReadTensor(name);
            using torch.Tensor destination = torch.full(expected.shape, 3, dtype);
            Assert.That(reader.CanReadInto(name, destination), Is.True, name);

            reader.ReadTensorInto(name, destination);

            Assert.That(destination.eq(expected).all().item<bool>(), Is.True, name);
        }
    }

    [Test]
    public async Task A_destination_of_another_dtype_shape_or_layout_is_refused_naming_the_tensor()
    {
        using torch.Tensor stored = torch.ones(4, 6, dtype: torch.ScalarType.BFloat16);
        await CheckpointWriter.WriteAsync(_dir.Path, [("w", stored)]);
        using var reader = CheckpointReader.Open(_dir.Path);
        using torch.Tensor otherDtype = torch.zeros(4, 6, dtype: torch.ScalarType.Float32);
        using torch.Tensor otherShape = torch.zeros(6, 4, dtype: torch.ScalarType.BFloat16);
        using torch.Tensor wide = torch.zeros(6, 4, dtype: torch.ScalarType.BFloat16);
        using torch.Tensor transposed = wide.t(); // [4, 6], not contiguous

        foreach (torch.Tensor destination in new[] { otherDtype, otherShape, transposed })
        {
            Assert.That(reader.CanReadInto("w", destination), Is.False);
            Assert.That(() => reader.ReadTensorInto("w", destination), Throws.ArgumentException.With.Message.Contain("'w'").And.Message.Contain("BF16"));
        }

        Assert.That(wide.eq(0).all().item<bool>(), Is.True, "a refused destination is left as it was");
        Assert.That(reader.CanReadInto("missing", otherDtype), Is.False);
        Assert.That(() => reader.ReadTensorInto("missing", otherDtype), Throws.TypeOf<KeyNotFoundException>());
    }

    [TestCase(float.NaN)]
    [TestCase(float.NegativeInfinity)]
    public async Task Values_that_are_not_finite_are_refused_naming_the_shard_and_the_tensor(float bad)
    {
        using torch.Tensor stored = torch.ones(3, 5, dtype: torch.ScalarType.BFloat16);
        stored[2, 4] = torch.tensor(bad).to(torch.ScalarType.BFloat16);
        await CheckpointWriter.WriteAsync(_dir.Path, [("w", stored)]);
        using var reader = CheckpointReader.Open(_dir.Path);
        using torch.Tensor destination = torch.zeros(3, 5, dtype: torch.ScalarType.BFloat16);

        Assert.That(
            () => reader.ReadTensorInto("w", destination),
            Throws.TypeOf<InvalidDataException>().With.Message.Contain("model.safetensors").And.Message.Contain("'w'").And.Message.Contain("NaN or infinite"));
    }

    [Test]
    public async Task An_empty_tensor_reads_into_an_empty_destination()
    {
        using torch.Tensor stored = torch.zeros(0, 8, dtype: torch.ScalarType.Float32);
        await CheckpointWriter.WriteAsync(_dir.Path, [("empty", stored)]);
        using var reader = CheckpointReader.Open(_dir.Path);
        using torch.Tensor destination = torch.zeros(0, 8, dtype: torch.ScalarType.Float32);

        reader.ReadTensorInto("empty", destination);

        Assert.That(destination.shape, Is.EqualTo(new long[] { 0, 8 }));
    }
}
