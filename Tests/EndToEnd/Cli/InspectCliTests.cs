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

    [Test]
    public async Task Inspect_of_a_bare_safetensors_file_lists_its_tensors_dtypes_bytes_and_metadata()
    {
        // Written by hand (8-byte header length, JSON header, data) so the test does not depend on the project's writer.
        string file = Path.Combine(_dir, "adapter.safetensors");
        string header = """{"__metadata__":{"format":"pt","source":"hand-written"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},"step":{"dtype":"I64","shape":[],"data_offsets":[32,40]}}""";
        byte[] headerBytes = System.Text.Encoding.UTF8.GetBytes(header);
        using (var stream = File.Create(file))
        {
            stream.Write(BitConverter.GetBytes((long)headerBytes.Length));
            stream.Write(headerBytes);
            stream.Write(new byte[40]);
        }

        CliRun text = await CliFixtures.RunOkAsync("inspect", file);
        Assert.Multiple(() =>
        {
            Assert.That(text.Output, Does.Match(@"w\s+F32\s+\[2, 3\]\s+24 B"));
            Assert.That(text.Output, Does.Match(@"b\s+BF16\s+\[4\]\s+8 B"));
            Assert.That(text.Output, Does.Match(@"step\s+I64\s+\[\]\s+8 B"));
            Assert.That(text.Output, Does.Contain("3 tensors, 11 elements"));
            Assert.That(text.Output, Does.Contain("source = hand-written"));
            Assert.That(text.Output, Does.Contain("config.json"), "says what a config would add");
        });

        CliRun json = await CliFixtures.RunOkAsync("inspect", file, "--json");
        using JsonDocument doc = JsonDocument.Parse(json.Output);
        JsonElement root = doc.RootElement;
        Assert.Multiple(() =>
        {
            Assert.That(root.GetProperty("config").ValueKind, Is.EqualTo(JsonValueKind.Null));
            Assert.That(root.GetProperty("tensors").EnumerateArray().Select(t => t.GetProperty("name").GetString()), Is.EqualTo(new[] { "w", "b", "step" }));
            Assert.That(root.GetProperty("tensors")[0].GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()), Is.EqualTo(new long[] { 2, 3 }));
            Assert.That(root.GetProperty("tensor_elements").GetInt64(), Is.EqualTo(11));
            Assert.That(root.GetProperty("metadata").GetProperty("format").GetString(), Is.EqualTo("pt"));
            Assert.That(root.GetProperty("d_types").EnumerateArray().Sum(d => d.GetProperty("bytes").GetInt64()), Is.EqualTo(40));
        });
    }
}
