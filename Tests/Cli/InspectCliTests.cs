using System.Text.Json;

namespace ModelSurgery.Tests.Cli;

/// <summary><c>modelsurgery inspect</c> on published configs and on synthesised sharded checkpoints.</summary>
public sealed class InspectCliTests
{
    // TinyLlama/TinyLlama-1.1B-Chat-v1.0 config.json as published on the Hugging Face Hub.
    private const string TinyLlamaConfig = """
        {
          "architectures": ["LlamaForCausalLM"],
          "attention_bias": false,
          "bos_token_id": 1,
          "eos_token_id": 2,
          "hidden_act": "silu",
          "hidden_size": 2048,
          "initializer_range": 0.02,
          "intermediate_size": 5632,
          "max_position_embeddings": 2048,
          "model_type": "llama",
          "num_attention_heads": 32,
          "num_hidden_layers": 22,
          "num_key_value_heads": 4,
          "pretraining_tp": 1,
          "rms_norm_eps": 1e-05,
          "rope_scaling": null,
          "rope_theta": 10000.0,
          "tie_word_embeddings": false,
          "torch_dtype": "bfloat16",
          "transformers_version": "4.35.0",
          "use_cache": true,
          "vocab_size": 32000
        }
        """;

    // meta-llama/Llama-3.2-1B config.json as published on the Hugging Face Hub.
    private const string Llama32Config = """
        {
          "architectures": ["LlamaForCausalLM"],
          "attention_bias": false,
          "attention_dropout": 0.0,
          "bos_token_id": 128000,
          "eos_token_id": 128001,
          "head_dim": 64,
          "hidden_act": "silu",
          "hidden_size": 2048,
          "initializer_range": 0.02,
          "intermediate_size": 8192,
          "max_position_embeddings": 131072,
          "mlp_bias": false,
          "model_type": "llama",
          "num_attention_heads": 32,
          "num_hidden_layers": 16,
          "num_key_value_heads": 8,
          "pretraining_tp": 1,
          "rms_norm_eps": 1e-05,
          "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3"
          },
          "rope_theta": 500000.0,
          "tie_word_embeddings": true,
          "torch_dtype": "bfloat16",
          "transformers_version": "4.45.0.dev0",
          "use_cache": true,
          "vocab_size": 128256
        }
        """;

    private string _dir = null!;

    [SetUp]
    public void CreateFolder() => _dir = Directory.CreateTempSubdirectory("cli-inspect").FullName;

    [TearDown]
    public void DeleteFolder() => Directory.Delete(_dir, recursive: true);

    // Totals are the published parameter counts of the two models (model cards / safetensors metadata).
    [TestCase(TinyLlamaConfig, "1,100,048,384", 1_100_048_384L)]
    [TestCase(Llama32Config, "1,235,814,400", 1_235_814_400L)]
    public async Task Inspect_of_a_bare_config_prints_the_published_parameter_count(string configJson, string printed, long total)
    {
        string config = Path.Combine(_dir, "config.json");
        await File.WriteAllTextAsync(config, configJson);

        CliRun text = await CliFixtures.RunOkAsync("inspect", config);
        Assert.That(text.Output, Does.Contain(printed));
        Assert.That(text.Output, Does.Match(@"total\s+" + System.Text.RegularExpressions.Regex.Escape(printed)));

        CliRun json = await CliFixtures.RunOkAsync("inspect", config, "--json");
        using JsonDocument doc = JsonDocument.Parse(json.Output);
        JsonElement parameters = doc.RootElement.GetProperty("parameters");
        Assert.That(parameters.GetProperty("total").GetInt64(), Is.EqualTo(total));
        Assert.That(doc.RootElement.GetProperty("config").GetProperty("hidden_size").GetInt32(), Is.EqualTo(2048));
        Assert.That(doc.RootElement.GetProperty("shards").GetArrayLength(), Is.Zero);
    }

    [Test]
    [SetCulture("de-DE")]
    public async Task Inspect_prints_numbers_the_same_way_under_any_culture()
    {
        string config = Path.Combine(_dir, "config.json");
        await File.WriteAllTextAsync(config, TinyLlamaConfig);

        CliRun text = await CliFixtures.RunOkAsync("inspect", config);

        Assert.That(text.Output, Does.Contain("1,100,048,384"));
    }

    [TestCase("f32", 4)]
    [TestCase("bf16", 2)]
    public async Task Inspect_of_a_sharded_synthesised_checkpoint_lists_every_shard_and_dtype_bytes(string dtype, int bytesPerParameter)
    {
        string config = CliFixtures.WriteTinyConfig(_dir);
        string model = Path.Combine(_dir, "model");
        await CliFixtures.RunOkAsync("synth", "--like", config, "--dtype", dtype, "--max-shard-size", "4KB", "--out", model);
        string[] shardFiles = [.. Directory.GetFiles(model, "*.safetensors").Select(Path.GetFileName).Order(StringComparer.Ordinal)!];
        Assert.That(shardFiles, Has.Length.GreaterThan(2), "a 4 KB limit splits the tiny model into several shards");

        CliRun json = await CliFixtures.RunOkAsync("inspect", model, "--json");
        using JsonDocument doc = JsonDocument.Parse(json.Output);
        JsonElement root = doc.RootElement;
        long total = root.GetProperty("parameters").GetProperty("total").GetInt64();
        string[] listed = [.. root.GetProperty("shards").EnumerateArray().Select(s => s.GetProperty("file").GetString()!).Order(StringComparer.Ordinal)];
        Assert.That(listed, Is.EqualTo(shardFiles));
        JsonElement[] dtypes = [.. root.GetProperty("d_types").EnumerateArray()];
        Assert.That(dtypes, Has.Length.EqualTo(1));
        Assert.That(dtypes[0].GetProperty("d_type").GetString(), Is.EqualTo(dtype.ToUpperInvariant()));
        Assert.That(dtypes[0].GetProperty("bytes").GetInt64(), Is.EqualTo(total * bytesPerParameter));
        Assert.That(root.GetProperty("problems").GetArrayLength(), Is.Zero);

        CliRun text = await CliFixtures.RunOkAsync("inspect", model);
        foreach (string shard in shardFiles)
        {
            Assert.That(text.Output, Does.Contain(shard));
        }
    }
}
