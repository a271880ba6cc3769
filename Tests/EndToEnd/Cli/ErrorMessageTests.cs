using System.Text.Json.Nodes;
using ModelSurgery.Cli;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Training.Recipes;
using TorchSharp;

namespace ModelSurgery.Tests.Cli;

/// <summary>Error messages say what the user did wrong in the user's terms: the option, key or file, never a .NET name.</summary>
public sealed class ErrorMessageTests
{
    private string _dir = null!;
    private string _model = null!;

    [OneTimeSetUp]
    public async Task SetUp()
    {
        _dir = Directory.CreateTempSubdirectory("error-messages").FullName;
        _model = Path.Combine(_dir, "model");
        await CliFixtures.CreateTinyModelAsync(_dir, _model);
    }

    [OneTimeTearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static void AssertNoDotNetLeak(string error)
    {
        Assert.That(error, Does.Not.Contain("(Parameter '"));
        Assert.That(error, Does.Not.Contain("ModelSurgery."));
        Assert.That(error, Does.Not.Contain("System."));
    }

    [Test]
    public async Task Cuda_on_a_cpu_only_backend_names_the_missing_cuda_support()
    {
        Assume.That(torch.cuda.is_available(), Is.False, "only a CPU-only backend lacks CUDA");
        var ex = Assert.Throws<ArgumentException>(() => ComputeDevice.Resolve("cuda"));
        Assert.That(ex!.Message, Does.Contain("CUDA is not available in the loaded LibTorch backend").And.Not.Contain("Unknown device"));
        Assert.That(() => ComputeDevice.Resolve("cuda:1"), Throws.ArgumentException.With.Message.Contains("CUDA is not available"));
        Assert.That(() => ComputeDevice.Resolve("tpu"), Throws.ArgumentException.With.Message.Contains("Unknown device 'tpu'"));

        CliRun run = await CliFixtures.RunAsync("generate", "--model", _model, "--prompt-ids", "1 2", "--max-new-tokens", "1", "--device", "cuda");
        Assert.That(run.ExitCode, Is.Not.Zero);
        Assert.That(run.Error, Does.Contain("CUDA is not available").And.Contain("use the cpu device"), run.ToString());
        AssertNoDotNetLeak(run.Error);
    }

    [Test]
    public async Task A_calibrated_metric_without_tokens_names_the_tokens_option()
    {
        CliRun run = await CliFixtures.RunAsync("score", "--model", _model, "--metric", "activation", "--out", Path.Combine(_dir, "scores"));
        Assert.That(run.ExitCode, Is.EqualTo(ExitCodes.Usage), run.ToString());
        Assert.That(run.Error, Does.Contain("--metric activation").And.Contain("--tokens"));
        AssertNoDotNetLeak(run.Error);
    }

    [Test]
    public async Task Library_argument_errors_reach_the_user_without_the_parameter_suffix()
    {
        // The compressor's ArgumentException (parameter 'target') used to end the message with "(Parameter 'target')".
        string corpus = Path.Combine(_dir, "corpus.jsonl");
        File.WriteAllLines(corpus, ["{\"text\": \"The cat sat on the mat.\"}", "{\"text\": \"A dog ran.\"}"]);
        CliRun run = await CliFixtures.RunAsync("vocab", "compress", "--model", _model, "--corpus", corpus, "--keep", "10", "--out", Path.Combine(_dir, "compressed"));
        Assert.That(run.ExitCode, Is.Not.Zero);
        Assert.That(run.Error, Does.Contain("Target size 10 is below"), run.ToString());
        AssertNoDotNetLeak(run.Error);
    }

    [Test]
    public void A_recipe_key_typo_names_the_key_and_the_file()
    {
        var json = new JsonObject { ["teacher"] = "t", ["data"] = new JsonObject { ["corpus"] = new JsonArray("c.jsonl"), ["feild"] = "text" } };
        var ex = Assert.Throws<InvalidDataException>(() => DistillationRecipe.Parse(json.ToJsonString(), _dir, "my.recipe.json"));
        Assert.That(ex!.Message, Does.StartWith("my.recipe.json: unknown key 'data.feild'"));
        AssertNoDotNetLeak(ex.Message);
    }

    [Test]
    public void A_recipe_value_of_the_wrong_kind_names_the_field_and_what_it_should_be()
    {
        string json = "{\"teacher\": \"t\", \"data\": {\"corpus\": [\"c.jsonl\"]}, \"plan\": {\"layers\": \"three\"}}";
        var ex = Assert.Throws<InvalidDataException>(() => DistillationRecipe.Parse(json, _dir, "my.recipe.json"));
        Assert.That(ex!.Message, Does.StartWith("my.recipe.json: 'plan.layers'").And.Contain("should be a whole number"));
        AssertNoDotNetLeak(ex.Message);
    }
}
