using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Tests.Configuration;

public sealed class LlamaConfigTests
{
    // Llama 3.2 1B's published config.json, with one key this library does not model.
    private const string Llama32Json = """
        {
          "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 128000,
          "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048,
          "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
          "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
          "pretraining_tp": 1, "rms_norm_eps": 1e-05,
          "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
          "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.45.0.dev0",
          "use_cache": true, "vocab_size": 128256, "custom_research_field": {"nested": [1, 2, 3]}
        }
        """;

    [Test]
    public void Parses_llama_3_2_with_rope_scaling_gqa_tied_embeddings_and_several_eos_ids()
    {
        LlamaConfig config = LlamaConfig.Parse(Llama32Json);

        Assert.That(config.HeadDim, Is.EqualTo(64));
        Assert.That(config.QueryGroupSize, Is.EqualTo(4));
        Assert.That(config.TieWordEmbeddings, Is.True);
        Assert.That(config.EosTokenIds, Is.EqualTo(new[] { 128001, 128008, 128009 }));
        Assert.That(config.RopeScaling, Is.EqualTo(new RopeScaling("llama3", 32, 1, 4, 8192)));
        Assert.That(LlamaTensorLayout.CountParameters(config).Total, Is.EqualTo(1_235_814_400));
    }

    [Test]
    public void Unknown_keys_survive_a_load_save_round_trip()
    {
        LlamaConfig config = LlamaConfig.Parse(Llama32Json);
        JsonObject written = JsonNode.Parse(config.ToJson())!.AsObject();
        JsonObject original = JsonNode.Parse(Llama32Json)!.AsObject();

        foreach (string key in new[] { "architectures", "attention_dropout", "initializer_range", "pretraining_tp", "transformers_version", "use_cache", "custom_research_field" })
        {
            Assert.That(JsonNode.DeepEquals(written[key], original[key]), Is.True, key);
        }

        Assert.That(LlamaConfig.Parse(config.ToJson()).ToJson(), Is.EqualTo(config.ToJson()));
    }

    [Test]
    public void Qwen2_has_qkv_biases_and_no_output_bias()
    {
        LlamaConfig qwen = LlamaConfig.Parse(Llama32Json.Replace("\"model_type\": \"llama\"", "\"model_type\": \"qwen2\"", StringComparison.Ordinal));
        Assert.That(qwen.HasQkvBias, Is.True);
        Assert.That(qwen.HasOutputBias, Is.False);
        Assert.That(LlamaTensorLayout.Tensors(qwen).Count(t => t.IsBias), Is.EqualTo(3 * qwen.NumHiddenLayers));
    }

    [TestCase("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"", "unsupported model_type 'gpt2'")]
    [TestCase("\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5", "num_attention_heads (32) must be a multiple of num_key_value_heads (5)")]
    [TestCase("\"hidden_size\": 2048", "\"hidden_size\": \"big\"", "hidden_size must be an integer")]
    [TestCase("\"rope_type\": \"llama3\"", "\"rope_type\": \"yarn\"", "unsupported rope_scaling type 'yarn'")]
    [TestCase("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "unsupported hidden_act 'gelu'")]
    public void Inconsistent_or_unsupported_configs_are_errors_naming_the_file_and_key(string from, string to, string message)
    {
        var ex = Assert.Throws<InvalidDataException>(() => LlamaConfig.Parse(Llama32Json.Replace(from, to, StringComparison.Ordinal), "models/x/config.json"));
        Assert.That(ex!.Message, Does.StartWith("models/x/config.json: ").And.Contain(message));
    }

    [Test]
    public void A_missing_or_malformed_file_is_named()
    {
        string dir = Directory.CreateTempSubdirectory("config").FullName;
        try
        {
            string path = Path.Combine(dir, "config.json");
            Assert.That(Assert.Throws<InvalidDataException>(() => LlamaConfig.Load(path))!.Message, Does.Contain(path));
            File.WriteAllText(path, "{ not json");
            Assert.That(Assert.Throws<InvalidDataException>(() => LlamaConfig.Load(path))!.Message, Does.Contain(path).And.Contain("invalid JSON"));

            LlamaConfig.Parse(Llama32Json).Save(path);
            Assert.That(LlamaConfig.Load(path).VocabSize, Is.EqualTo(128256));
            Assert.That(Directory.GetFiles(dir), Has.Length.EqualTo(1), "the atomic write leaves no temp file");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
