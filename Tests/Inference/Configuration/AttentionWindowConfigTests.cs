using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Tests.Configuration;

/// <summary>
/// Reading and rewriting the sliding-window keys as transformers reads them: MistralConfig (sliding_window, 4096 when
/// missing, one window for every layer) and Qwen2Config (sliding_window only with use_sliding_window, layers from
/// max_window_layers = 28 unless layer_types lists them).
/// </summary>
public sealed class AttentionWindowConfigTests
{
    private static LlamaConfig Parse(string modelType, int layers, string keys) => LlamaConfig.Parse($$"""
        {
          "model_type": "{{modelType}}", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
          "num_hidden_layers": {{layers}}, "num_attention_heads": 4, "num_key_value_heads": 2{{(keys.Length > 0 ? ", " + keys : "")}}
        }
        """, "models/x/config.json");

    /// <summary>"f" for a full-attention layer, the window size otherwise.</summary>
    private static string Describe(LlamaConfig config) => string.Join(",", config.LayerAttentionWindows.Select(w => w?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "f"));

    [TestCase("mistral", 3, "", "4096,4096,4096", TestName = "Mistral without sliding_window uses MistralConfig's default 4096 everywhere")]
    [TestCase("mistral", 3, "\"sliding_window\": null", "f,f,f", TestName = "Mistral with a null sliding_window has full attention")]
    [TestCase("mistral", 3, "\"sliding_window\": 8", "8,8,8", TestName = "Mistral windows every layer")]
    [TestCase("mistral", 3, "\"sliding_window\": 8, \"layer_types\": [\"full_attention\", \"full_attention\", \"full_attention\"]", "8,8,8", TestName = "Mistral ignores layer_types as MistralModel does")]
    [TestCase("qwen2", 3, "", "f,f,f", TestName = "Qwen2 defaults to use_sliding_window false")]
    [TestCase("qwen2", 3, "\"sliding_window\": 8, \"max_window_layers\": 1", "f,f,f", TestName = "Qwen2 ignores sliding_window without use_sliding_window")]
    [TestCase("qwen2", 3, "\"use_sliding_window\": false, \"sliding_window\": 8, \"max_window_layers\": 0", "f,f,f", TestName = "Qwen2 with use_sliding_window false has no window")]
    [TestCase("qwen2", 3, "\"use_sliding_window\": true, \"sliding_window\": 8, \"max_window_layers\": 1", "f,8,8", TestName = "Qwen2 windows the layers from max_window_layers on")]
    [TestCase("qwen2", 30, "\"use_sliding_window\": true", "f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,f,4096,4096", TestName = "Qwen2 defaults to sliding_window 4096 and max_window_layers 28")]
    [TestCase("qwen2", 3, "\"use_sliding_window\": true, \"sliding_window\": null, \"max_window_layers\": 0", "f,f,f", TestName = "Qwen2 with a null sliding_window has no window")]
    [TestCase("qwen2", 3, "\"use_sliding_window\": true, \"sliding_window\": 8, \"max_window_layers\": 0, \"layer_types\": [\"full_attention\", \"sliding_attention\", \"full_attention\"]", "f,8,f", TestName = "Qwen2 layer_types wins over max_window_layers")]
    [TestCase("qwen2", 3, "\"use_sliding_window\": true, \"sliding_window\": 8, \"max_window_layers\": 1, \"layer_types\": null", "f,8,8", TestName = "Qwen2 with a null layer_types derives it from max_window_layers")]
    [TestCase("llama", 3, "\"sliding_window\": 8, \"use_sliding_window\": true, \"max_window_layers\": 0", "f,f,f", TestName = "Llama has no sliding window whatever the keys say")]
    public void Per_layer_windows_follow_transformers(string modelType, int layers, string keys, string expected)
    {
        LlamaConfig config = Parse(modelType, layers, keys);
        Assert.That(Describe(config), Is.EqualTo(expected));
        Assert.That(config.HasSlidingWindowLayers, Is.EqualTo(expected.Split(',').Any(w => w != "f")));
        Assert.That(config.AttentionWindow(layers - 1), Is.EqualTo(config.LayerAttentionWindows[^1]));
    }

    [TestCase("qwen2", "\"use_sliding_window\": true, \"sliding_window\": 8, \"layer_types\": [\"full_attention\", \"sliding_attention\"]", "layer_types has 2 entries but num_hidden_layers is 3")]
    [TestCase("mistral", "\"layer_types\": [\"full_attention\"]", "layer_types has 1 entries but num_hidden_layers is 3")]
    [TestCase("qwen2", "\"sliding_window\": 8, \"layer_types\": [\"full_attention\", \"sliding_attention\", \"full_attention\"]", "layer_types[1] is sliding_attention but there is no window")]
    [TestCase("qwen2", "\"use_sliding_window\": true, \"layer_types\": [\"full_attention\", \"chunked_attention\", \"full_attention\"]", "layer_types[1] is 'chunked_attention'")]
    [TestCase("qwen2", "\"use_sliding_window\": true, \"layer_types\": \"sliding_attention\"", "layer_types must be a list of strings")]
    [TestCase("mistral", "\"sliding_window\": 0", "sliding_window must be a positive integer or null, got 0")]
    [TestCase("mistral", "\"sliding_window\": \"wide\"", "sliding_window must be an integer")]
    [TestCase("qwen2", "\"use_sliding_window\": \"yes\"", "use_sliding_window must be true or false")]
    [TestCase("qwen2", "\"use_sliding_window\": true, \"max_window_layers\": 1.5", "max_window_layers must be an integer")]
    public void Malformed_or_inconsistent_window_keys_are_errors_naming_the_file_and_key(string modelType, string keys, string message)
    {
        var ex = Assert.Throws<InvalidDataException>(() => Parse(modelType, 3, keys));
        Assert.That(ex!.Message, Does.StartWith("models/x/config.json: ").And.Contain(message));
    }

    [TestCase("mistral", "")]
    [TestCase("mistral", "\"sliding_window\": null")]
    [TestCase("qwen2", "\"use_sliding_window\": false, \"sliding_window\": 131072, \"max_window_layers\": 21")]
    [TestCase("qwen2", "\"use_sliding_window\": true, \"sliding_window\": 8, \"max_window_layers\": 5, \"layer_types\": [\"sliding_attention\", \"full_attention\", \"sliding_attention\"]")]
    public void Window_keys_round_trip_as_written(string modelType, string keys)
    {
        LlamaConfig config = Parse(modelType, 3, keys);
        JsonObject written = JsonNode.Parse(config.ToJson())!.AsObject();
        JsonObject original = JsonNode.Parse($"{{{keys}}}")!.AsObject();

        foreach (string key in new[] { "sliding_window", "use_sliding_window", "max_window_layers", "layer_types" })
        {
            Assert.That(written.ContainsKey(key), Is.EqualTo(original.ContainsKey(key)), $"{key} is written exactly when it was read");
            Assert.That(JsonNode.DeepEquals(written[key], original[key]), Is.True, key);
        }

        Assert.That(LlamaConfig.Parse(config.ToJson()).LayerAttentionWindows, Is.EqualTo(config.LayerAttentionWindows));
    }

    [Test]
    public void Keeping_layers_on_both_sides_of_max_window_layers_moves_the_boundary()
    {
        LlamaConfig teacher = Parse("qwen2", 5, "\"use_sliding_window\": true, \"sliding_window\": 8, \"max_window_layers\": 2");
        Assert.That(Describe(teacher), Is.EqualTo("f,f,8,8,8"));

        // Keep teacher layers 0, 2, 4: one full layer, then two windowed ones.
        LlamaConfig student = teacher.WithLayerAttentionWindows([.. new[] { 0, 2, 4 }.Select(teacher.AttentionWindow)]);

        Assert.That(student.NumHiddenLayers, Is.EqualTo(3));
        Assert.That(Describe(student), Is.EqualTo("f,8,8"));
        Assert.That(student.ExtraProperties["max_window_layers"]!.GetValue<int>(), Is.EqualTo(1));
        Assert.That(student.ExtraProperties.ContainsKey("layer_types"), Is.False, "max_window_layers can say it, so no layer_types is added");
        Assert.That(Describe(LlamaConfig.Parse(student.ToJson())), Is.EqualTo("f,8,8"));
    }

    [Test]
    public void A_pattern_max_window_layers_cannot_express_is_written_as_layer_types_without_max_window_layers()
    {
        LlamaConfig teacher = Parse("qwen2", 4, "\"use_sliding_window\": true, \"sliding_window\": 8, \"max_window_layers\": 2");

        LlamaConfig student = teacher.WithLayerAttentionWindows([8, null, 8]);

        Assert.That(Describe(student), Is.EqualTo("8,f,8"));
        Assert.That(student.LayerTypes, Is.EqualTo(new[] { "sliding_attention", "full_attention", "sliding_attention" }));
        Assert.That(student.ExtraProperties.ContainsKey("max_window_layers"), Is.False, "no value of it describes this pattern");
        Assert.That(Describe(LlamaConfig.Parse(student.ToJson())), Is.EqualTo("8,f,8"));
    }

    [Test]
    public void An_existing_layer_types_is_rewritten_and_max_window_layers_kept_consistent_with_it()
    {
        LlamaConfig teacher = Parse("qwen2", 4, "\"use_sliding_window\": true, \"sliding_window\": 8, \"max_window_layers\": 1, \"layer_types\": [\"full_attention\", \"sliding_attention\", \"full_attention\", \"sliding_attention\"]");

        LlamaConfig student = teacher.WithLayerAttentionWindows([null, null, 8]);

        Assert.That(student.LayerTypes, Is.EqualTo(new[] { "full_attention", "full_attention", "sliding_attention" }));
        Assert.That(student.ExtraProperties["max_window_layers"]!.GetValue<int>(), Is.EqualTo(2), "both keys say the same, so transformers versions that read either agree");
        Assert.That(Describe(student), Is.EqualTo("f,f,8"));
    }

    [Test]
    public void Windows_are_switched_on_or_off_through_the_keys_transformers_reads()
    {
        LlamaConfig plain = Parse("qwen2", 3, "");
        LlamaConfig windowed = plain.WithLayerAttentionWindows([null, 6, 6]);
        Assert.That(Describe(windowed), Is.EqualTo("f,6,6"));
        Assert.That(windowed.ExtraProperties["use_sliding_window"]!.GetValue<bool>(), Is.True);
        Assert.That(windowed.ExtraProperties["sliding_window"]!.GetValue<int>(), Is.EqualTo(6));

        LlamaConfig off = windowed.WithLayerAttentionWindows([null, null]);
        Assert.That(Describe(off), Is.EqualTo("f,f"));

        LlamaConfig mistral = Parse("mistral", 2, "");
        Assert.That(Describe(mistral.WithLayerAttentionWindows([null, null])), Is.EqualTo("f,f"));
        Assert.That(mistral.WithLayerAttentionWindows([null, null]).ExtraProperties["sliding_window"], Is.Null);
        Assert.That(mistral.WithLayerAttentionWindows([4096, 4096]).ExtraProperties.ContainsKey("sliding_window"), Is.False, "the default already says 4096");
    }

    [Test]
    public void Keys_that_already_give_the_windows_are_left_as_written()
    {
        const string keys = "\"use_sliding_window\": true, \"sliding_window\": 8, \"max_window_layers\": 1";
        LlamaConfig teacher = Parse("qwen2", 3, keys);
        LlamaConfig same = teacher.WithLayerAttentionWindows(teacher.LayerAttentionWindows);
        Assert.That(same.ToJson(), Is.EqualTo(teacher.ToJson()));
    }

    [Test]
    public void Patterns_a_model_type_cannot_express_are_refused()
    {
        Assert.That(Assert.Throws<ArgumentException>(() => Parse("mistral", 3, "").WithLayerAttentionWindows([8, null, 8]))!.Message, Does.Contain("Mistral windows every layer or none"));
        Assert.That(Assert.Throws<ArgumentException>(() => Parse("llama", 2, "").WithLayerAttentionWindows([8, 8]))!.Message, Does.Contain("no sliding-window attention"));
        Assert.That(Assert.Throws<ArgumentException>(() => Parse("qwen2", 2, "").WithLayerAttentionWindows([8, 4]))!.Message, Does.Contain("one positive sliding_window"));
    }

    [Test]
    public void A_budget_shape_of_a_teacher_with_layer_types_gives_a_valid_config()
    {
        // A shape does not say which layers it keeps; its config must still list one layer type per layer.
        LlamaConfig teacher = Parse("qwen2", 4, "\"use_sliding_window\": true, \"sliding_window\": 8, \"layer_types\": [\"full_attention\", \"sliding_attention\", \"full_attention\", \"sliding_attention\"]");
        LlamaConfig student = new ModelSurgery.Surgery.Planning.StudentShape(2, 32, 64, 4, 2, 64).ToConfig(teacher);

        Assert.That(student.LayerTypes, Has.Count.EqualTo(2));
        Assert.That(Describe(student), Is.EqualTo("f,8"));
        Assert.That(LlamaConfig.Parse(student.ToJson(), "student/config.json").NumHiddenLayers, Is.EqualTo(2));
    }
}
