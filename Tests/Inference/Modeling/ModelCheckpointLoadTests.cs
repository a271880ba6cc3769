using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Tests.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Modeling;

/// <summary>
/// Loading a checkpoint folder as a model: parameters of the stored dtype are read straight into their memory, others
/// are read and converted; both give the stored values, and both refuse damaged ones.
/// </summary>
public sealed class ModelCheckpointLoadTests
{
    private TempDirectory _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDirectory();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    [TestCase(SafetensorsDType.BF16, ScalarType.BFloat16)]
    [TestCase(SafetensorsDType.BF16, ScalarType.Float32)]
    [TestCase(SafetensorsDType.F32, ScalarType.Float32)]
    [TestCase(SafetensorsDType.F32, ScalarType.BFloat16)]
    public async Task Every_parameter_equals_the_stored_tensor_in_the_model_dtype(SafetensorsDType stored, ScalarType modelDtype)
    {
        LlamaConfig config = TinyModels.Config();
        using (var source = TinyModels.Create(config))
        {
            await ModelCheckpoint.SaveAsync(source, _dir.Path, new ModelSaveOptions { DType = stored, MaxShardBytes = 16 * 1024 });
        }

        using var reader = CheckpointReader.Open(_dir.Path);
        Assert.That(reader.Shards, Has.Count.GreaterThan(1), "sharded, so reads go to more than one file");
        using var model = ModelCheckpoint.Load(_dir.Path, new ModelLoadOptions { DType = modelDtype, Device = "cpu" });

        foreach (var (name, parameter) in model.ToStateDict())
        {
            using Tensor expected = reader.ReadTensor(name).to_type(modelDtype);
            Assert.That(parameter.dtype, Is.EqualTo(modelDtype), name);
            Assert.That(reader.CanReadInto(name, parameter), Is.EqualTo(stored.ToScalarType() == modelDtype), $"{name}: read straight in only in the stored dtype");
            Assert.That(TinyModels.AreEqual(parameter, expected), Is.True, name);
        }
    }

    [TestCase(ScalarType.BFloat16)]
    [TestCase(ScalarType.Float32)]
    public async Task A_checkpoint_with_a_NaN_is_refused_naming_the_tensor_in_either_dtype(ScalarType modelDtype)
    {
        LlamaConfig config = TinyModels.Config();
        using (var source = TinyModels.Create(config))
        {
            // Grad mode belongs to the thread: restored before the await, which may resume elsewhere.
            using (torch.no_grad())
            {
                source.ToStateDict()["model.layers.1.mlp.down_proj.weight"][3, 7] = torch.tensor(float.NaN);
            }

            await ModelCheckpoint.SaveAsync(source, _dir.Path, new ModelSaveOptions { DType = SafetensorsDType.BF16 });
        }

        Assert.That(
            () => ModelCheckpoint.Load(_dir.Path, new ModelLoadOptions { DType = modelDtype, Device = "cpu" }),
            Throws.TypeOf<InvalidDataException>().With.Message.Contain("model.layers.1.mlp.down_proj.weight").And.Message.Contain("NaN or infinite"));
    }
}
