using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Tests.Configuration;

public sealed class ModelPresetsTests
{
    // Totals published on the model cards / computed by transformers' num_parameters() for each checkpoint.
    [TestCase("tinyllama-1.1b", 1_100_048_384L)]
    [TestCase("llama-3.2-1b", 1_235_814_400L)]
    [TestCase("llama-2-7b", 6_738_415_616L)]
    [TestCase("qwen2.5-0.5b", 494_032_768L)]
    [TestCase("smollm2-135m", 134_515_008L)]
    public void Parameter_count_equals_the_published_total(string name, long total)
    {
        Assert.That(LlamaTensorLayout.CountParameters(ModelPresets.Get(name)).Total, Is.EqualTo(total));
    }

    // Tensor counts: embedding + layers x (2 norms + 7 projections [+ 3 qkv biases]) + final norm [+ untied head].
    [TestCase("tinyllama-1.1b", 1 + (22 * 9) + 1 + 1)]
    [TestCase("llama-3.2-1b", 1 + (16 * 9) + 1)]
    [TestCase("llama-2-7b", 1 + (32 * 9) + 1 + 1)]
    [TestCase("qwen2.5-0.5b", 1 + (24 * 12) + 1)]
    [TestCase("smollm2-135m", 1 + (30 * 9) + 1)]
    public void Tensor_count_matches_the_architecture(string name, int count)
    {
        Assert.That(LlamaTensorLayout.Tensors(ModelPresets.Get(name)), Has.Count.EqualTo(count));
    }

    [TestCase("tinyllama-1.1b", "model.layers.21.self_attn.k_proj.weight", new long[] { 256, 2048 })]
    [TestCase("tinyllama-1.1b", "lm_head.weight", new long[] { 32000, 2048 })]
    [TestCase("llama-3.2-1b", "model.embed_tokens.weight", new long[] { 128256, 2048 })]
    [TestCase("llama-3.2-1b", "model.layers.15.self_attn.v_proj.weight", new long[] { 512, 2048 })]
    [TestCase("llama-3.2-1b", "model.layers.0.mlp.down_proj.weight", new long[] { 2048, 8192 })]
    [TestCase("llama-2-7b", "model.layers.31.mlp.gate_proj.weight", new long[] { 11008, 4096 })]
    [TestCase("llama-2-7b", "model.layers.0.self_attn.k_proj.weight", new long[] { 4096, 4096 })]
    [TestCase("qwen2.5-0.5b", "model.layers.23.self_attn.k_proj.weight", new long[] { 128, 896 })]
    [TestCase("qwen2.5-0.5b", "model.layers.23.self_attn.k_proj.bias", new long[] { 128 })]
    [TestCase("qwen2.5-0.5b", "model.layers.0.self_attn.q_proj.bias", new long[] { 896 })]
    [TestCase("smollm2-135m", "model.layers.29.self_attn.k_proj.weight", new long[] { 192, 576 })]
    [TestCase("smollm2-135m", "model.norm.weight", new long[] { 576 })]
    public void Tensor_shape_matches_the_checkpoint(string name, string tensor, long[] shape)
    {
        TensorSpec spec = LlamaTensorLayout.Tensors(ModelPresets.Get(name)).Single(s => s.Name == tensor);
        Assert.That(spec.Shape, Is.EqualTo(shape));
    }

    [TestCase("llama-3.2-1b")]
    [TestCase("qwen2.5-0.5b")]
    [TestCase("smollm2-135m")]
    public void Tied_presets_have_no_head_tensor(string name)
    {
        LlamaConfig config = ModelPresets.Get(name);
        Assert.That(config.TieWordEmbeddings, Is.True);
        Assert.That(LlamaTensorLayout.Tensors(config).Select(s => s.Name), Does.Not.Contain(LlamaTensorLayout.LmHead));
        Assert.That(LlamaTensorLayout.CountParameters(config).Head, Is.Zero);
    }

    [Test]
    public void Qwen_has_qkv_bias_and_its_rope_base()
    {
        LlamaConfig config = ModelPresets.Get("qwen2.5-0.5b");
        Assert.That(config.ModelType, Is.EqualTo("qwen2"));
        Assert.That(config.HasQkvBias, Is.True);
        Assert.That(config.HasOutputBias, Is.False);
        Assert.That(config.RopeTheta, Is.EqualTo(1_000_000.0));
    }

    [Test]
    public void Llama32_has_llama3_rope_scaling()
    {
        LlamaConfig config = ModelPresets.Get("llama-3.2-1b");
        Assert.That(config.RopeScaling, Is.EqualTo(new RopeScaling("llama3", 32.0, 1.0, 4.0, 8192)));
        Assert.That(config.RopeTheta, Is.EqualTo(500_000.0));
        Assert.That(config.HeadDim, Is.EqualTo(64));
    }

    [Test]
    public void Every_preset_validates_and_survives_a_json_round_trip()
    {
        foreach (string name in ModelPresets.Names)
        {
            LlamaConfig config = ModelPresets.Get(name);
            Assert.DoesNotThrow(() => config.Validate(name), name);
            LlamaConfig parsed = LlamaConfig.Parse(config.ToJson(), name);
            Assert.That(LlamaTensorLayout.CountParameters(parsed), Is.EqualTo(LlamaTensorLayout.CountParameters(config)), name);
            Assert.That(parsed.RopeScaling, Is.EqualTo(config.RopeScaling), name);
        }
    }

    [Test]
    public void Names_are_listed_and_lookup_ignores_case()
    {
        string[] expected = ["tinyllama-1.1b", "llama-3.2-1b", "llama-2-7b", "qwen2.5-0.5b", "smollm2-135m"];
        Assert.That(ModelPresets.Names, Is.EqualTo(expected));
        Assert.That(ModelPresets.Get("TinyLlama-1.1B").NumHiddenLayers, Is.EqualTo(22));
    }

    [Test]
    public void Each_get_returns_a_fresh_config()
    {
        LlamaConfig first = ModelPresets.Get("smollm2-135m");
        LlamaConfig second = ModelPresets.Get("smollm2-135m");
        Assert.That(second, Is.Not.SameAs(first));
    }

    [Test]
    public void Unknown_name_lists_the_known_presets()
    {
        var ex = Assert.Throws<ArgumentException>(() => ModelPresets.Get("gpt-5"));
        Assert.That(ex!.Message, Does.Contain("gpt-5").And.Contain("tinyllama-1.1b").And.Contain("smollm2-135m"));
    }
}
