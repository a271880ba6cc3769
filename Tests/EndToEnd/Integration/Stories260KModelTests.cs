using ModelSurgery.Inference.Generation;
using ModelSurgery.Inference.Llama2C;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Tests.Llama2C;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Integration;

/// <summary>The library's own model, loaded from an imported real llama2.c checkpoint, against llama2.c itself.</summary>
public sealed class Stories260KModelTests
{
    // Greedy continuation from BOS printed by llama2.c's run.c for the same file (see Llama2CCheckpointTests for how it was produced).
    private static readonly int[] RunCGreedyFromBos =
    [
        461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264, 283, 452, 288, 13,
        431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 293, 430, 417, 363, 416, 315, 342,
        418, 424, 400, 442, 402, 303, 266, 299, 374, 466, 396, 303, 271, 362, 390, 469, 306, 469, 423, 314,
    ];

    private static string FixturePath => Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "stories260K.bin");

    private string _dir = null!;

    [OneTimeSetUp]
    public async Task ImportOnce()
    {
        _dir = Directory.CreateTempSubdirectory("stories260k").FullName;
        await Llama2CImporter.ImportAsync(FixturePath, _dir);
    }

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void Imported_model_logits_equal_the_llama2c_reference_forward()
    {
        using var model = ModelCheckpoint.Load(_dir, new ModelLoadOptions { Device = "cpu" });
        using var reference = Llama2CReferenceForward.Load(FixturePath);
        long[] tokens = [1, 461, 401, 35, 82, 113, 102, 104, 13, 431, 293, 500];
        using var scope = NewDisposeScope();
        Tensor expected = reference.Logits(tokens); // [T, V]
        Tensor actual;
        using (no_grad())
        {
            actual = model.forward(tensor(tokens).unsqueeze(0)).squeeze(0); // [T, V]
        }

        Assert.That(actual.shape, Is.EqualTo(expected.shape));
        Assert.That((actual - expected).abs().max().item<float>(), Is.LessThan(1e-4f));
    }

    [Test]
    public async Task Imported_model_greedy_generation_equals_run_c()
    {
        using var model = ModelCheckpoint.Load(_dir, new ModelLoadOptions { Device = "cpu" });
        var generated = new List<int>();
        await foreach (int id in TextGenerator.GenerateAsync(model, [1], new GenerationOptions { MaxNewTokens = RunCGreedyFromBos.Length }))
        {
            generated.Add(id);
        }

        Assert.That(generated, Is.EqualTo(RunCGreedyFromBos));
    }
}
