using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Modeling;

public sealed class LlamaForCausalLMTests
{
    [TestCase("llama", false)]
    [TestCase("llama", true)]
    [TestCase("qwen2", true)]
    public void State_dict_keys_and_shapes_equal_the_tensor_layout_in_order(string modelType, bool tied)
    {
        LlamaConfig config = TinyModels.Config(modelType, tied: tied);
        using var model = new LlamaForCausalLM(config);
        var stateDict = model.ToStateDict();
        IReadOnlyList<TensorSpec> specs = LlamaTensorLayout.Tensors(config);

        Assert.That(stateDict.Keys, Is.EqualTo(specs.Select(s => s.Name)));
        Assert.That(stateDict.Values.Select(t => t.shape), Is.EqualTo(specs.Select(s => s.Shape)));
        Assert.That(model.state_dict().Keys, Is.EquivalentTo(specs.Select(s => s.Name)), "TorchSharp's own state_dict uses the same names");
        Assert.That(model.parameters().Sum(p => p.numel()), Is.EqualTo(LlamaTensorLayout.CountParameters(config).Total));
    }

    [Test]
    public void Logits_are_float32_batch_by_time_by_vocab()
    {
        using var model = TinyModels.Create(TinyModels.Config());
        using var ids = TinyModels.Ids([1, 2, 3], [4, 5, 6]);
        using var logits = model.forward(ids);
        Assert.That(logits.shape, Is.EqualTo(new long[] { 2, 3, 50 }));
        Assert.That(logits.dtype, Is.EqualTo(ScalarType.Float32));
    }

    [Test]
    public void Kv_cache_prefill_then_single_steps_equals_full_sequence()
    {
        using var model = TinyModels.Create(TinyModels.Config());
        long[] tokens = TinyModels.RandomIds(12, 50, seed: 3);
        using var noGrad = torch.no_grad();
        using var full = model.forward(TinyModels.Ids(tokens)); // [1, 12, V]

        using KvCache cache = model.CreateKvCache(12);
        var pieces = new List<Tensor> { model.forward(TinyModels.Ids(tokens[..5]), cache) };
        for (int t = 5; t < tokens.Length; t++)
        {
            Assert.That(cache.Length, Is.EqualTo(t));
            pieces.Add(model.forward(TinyModels.Ids([tokens[t]]), cache));
        }

        using var incremental = torch.cat(pieces, 1);
        Assert.That(TinyModels.MaxAbsDiff(full, incremental), Is.LessThan(1e-5));
        Assert.That(cache.Length, Is.EqualTo(12));
    }

    [Test]
    public void Kv_cache_chunked_prefill_equals_full_sequence_for_a_batch()
    {
        using var model = TinyModels.Create(TinyModels.Config(layers: 3));
        long[] first = TinyModels.RandomIds(11, 50, seed: 4), second = TinyModels.RandomIds(11, 50, seed: 5);
        using var noGrad = torch.no_grad();
        using var full = model.forward(TinyModels.Ids(first, second)); // [2, 11, V]

        using KvCache cache = model.CreateKvCache(16);
        var pieces = new List<Tensor>();
        foreach ((int start, int length) in new[] { (0, 4), (4, 3), (7, 1), (8, 3) })
        {
            pieces.Add(model.forward(TinyModels.Ids(first[start..(start + length)], second[start..(start + length)]), cache));
        }

        using var chunked = torch.cat(pieces, 1);
        Assert.That(TinyModels.MaxAbsDiff(full, chunked), Is.LessThan(1e-5));
    }

    [Test]
    public void Kv_cache_refuses_to_grow_past_its_maximum_length()
    {
        using var model = TinyModels.Create(TinyModels.Config());
        using KvCache cache = model.CreateKvCache(4);
        using var noGrad = torch.no_grad();
        model.forward(TinyModels.Ids([1, 2, 3]), cache).Dispose();
        var ex = Assert.Throws<InvalidOperationException>(() => model.forward(TinyModels.Ids([4, 5]), cache));
        Assert.That(ex!.Message, Does.Contain("maximum length 4"));
    }

    [Test]
    public void Layer_by_layer_api_equals_forward()
    {
        using var model = TinyModels.Create(TinyModels.Config(layers: 3));
        using var ids = TinyModels.Ids(TinyModels.RandomIds(7, 50, seed: 6));
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        Tensor hidden = model.Embed(ids);
        foreach (LlamaDecoderLayer layer in model.Layers)
        {
            hidden = layer.forward(hidden, positionOffset: 0);
        }

        Assert.That(TinyModels.MaxAbsDiff(model.FinalNormAndHead(hidden), model.forward(ids)), Is.LessThan(1e-6));
        Assert.That(model.Layers.Select(l => l.LayerIndex), Is.EqualTo(Enumerable.Range(0, 3)));
    }

    [Test]
    public void Strict_load_reports_missing_keys()
    {
        LlamaConfig config = TinyModels.Config();
        using var source = TinyModels.Create(config);
        using var target = new LlamaForCausalLM(config);
        var stateDict = new Dictionary<string, Tensor>(source.ToStateDict());
        stateDict.Remove("model.layers.1.mlp.up_proj.weight");
        stateDict.Remove(LlamaTensorLayout.LmHead);

        var ex = Assert.Throws<InvalidDataException>(() => target.LoadStateDict(stateDict, "test.safetensors"));
        Assert.That(ex!.Message, Does.Contain("test.safetensors").And.Contain("missing (2)")
            .And.Contain("model.layers.1.mlp.up_proj.weight [64, 32]").And.Contain("lm_head.weight [50, 32]"));
    }

    [Test]
    public void Strict_load_reports_unexpected_keys()
    {
        LlamaConfig config = TinyModels.Config();
        using var source = TinyModels.Create(config);
        using var target = new LlamaForCausalLM(config);
        using var extra = torch.zeros(3);
        var stateDict = new Dictionary<string, Tensor>(source.ToStateDict()) { ["model.layers.2.self_attn.q_proj.weight"] = extra };

        var ex = Assert.Throws<InvalidDataException>(() => target.LoadStateDict(stateDict));
        Assert.That(ex!.Message, Does.Contain("unexpected (1): model.layers.2.self_attn.q_proj.weight [3]"));
        Assert.That(ex.Message, Does.Not.Contain("missing"));
    }

    [Test]
    public void Strict_load_reports_shape_mismatches_and_loads_nothing()
    {
        LlamaConfig config = TinyModels.Config();
        using var source = TinyModels.Create(config, seed: 1);
        using var target = TinyModels.Create(config, seed: 2);
        using var before = target.ToStateDict()[LlamaTensorLayout.EmbedTokens].clone();
        using var wrong = torch.zeros(64, 31);
        var stateDict = new Dictionary<string, Tensor>(source.ToStateDict()) { ["model.layers.0.mlp.gate_proj.weight"] = wrong };

        var ex = Assert.Throws<InvalidDataException>(() => target.LoadStateDict(stateDict));
        Assert.That(ex!.Message, Does.Contain("shape mismatch (1): model.layers.0.mlp.gate_proj.weight: expected [64, 32], found [64, 31]"));
        Assert.That(TinyModels.AreEqual(target.ToStateDict()[LlamaTensorLayout.EmbedTokens], before), Is.True, "checks run before any tensor is copied");
    }

    [Test]
    public void Streaming_load_rejects_a_tensor_whose_shape_differs_from_the_declared_one()
    {
        LlamaConfig config = TinyModels.Config();
        using var target = new LlamaForCausalLM(config);
        var shapes = LlamaTensorLayout.Tensors(config).ToDictionary(s => s.Name, s => s.Shape);
        var ex = Assert.Throws<InvalidDataException>(() => target.LoadWeights(shapes, name => torch.zeros(2, 2), "ckpt"));
        Assert.That(ex!.Message, Does.Contain("ckpt: tensor model.embed_tokens.weight was declared [50, 32] but read as [2, 2]"));
    }

    [Test]
    public void State_dict_round_trip_reproduces_the_logits()
    {
        LlamaConfig config = TinyModels.Config();
        using var source = TinyModels.Create(config, seed: 1);
        using var target = TinyModels.Create(config, seed: 2);
        using var ids = TinyModels.Ids(TinyModels.RandomIds(6, 50, seed: 7));
        using var noGrad = torch.no_grad();
        using var before = target.forward(ids);

        target.LoadStateDict(source.ToStateDict());

        using var expected = source.forward(ids);
        using var actual = target.forward(ids);
        Assert.That(TinyModels.AreEqual(actual, expected), Is.True);
        Assert.That(TinyModels.MaxAbsDiff(before, expected), Is.GreaterThan(1e-3), "the two seeds gave different models to begin with");
        foreach (var (name, tensor) in source.ToStateDict())
        {
            Assert.That(TinyModels.AreEqual(target.ToStateDict()[name], tensor), Is.True, name);
        }
    }

    [Test]
    public void Streaming_load_converts_dtype_and_disposes_what_it_read()
    {
        LlamaConfig config = TinyModels.Config();
        using var source = TinyModels.Create(config);
        using var target = new LlamaForCausalLM(config, ScalarType.BFloat16);
        var sourceDict = source.ToStateDict();
        var read = new List<Tensor>();
        target.LoadWeights(
            sourceDict.ToDictionary(kv => kv.Key, kv => kv.Value.shape),
            name =>
            {
                Tensor copy = sourceDict[name].clone();
                read.Add(copy);
                return copy;
            });

        Assert.That(read, Has.Count.EqualTo(sourceDict.Count));
        Assert.That(read.All(t => t.IsInvalid), Is.True, "each tensor read is disposed after copying");
        foreach (var (name, tensor) in target.ToStateDict())
        {
            Assert.That(tensor.dtype, Is.EqualTo(ScalarType.BFloat16), name);
            using var back = tensor.to_type(ScalarType.Float32);
            Assert.That(TinyModels.MaxAbsDiff(back, sourceDict[name]), Is.LessThan(0.01), name);
        }
    }

    [Test]
    public void Tied_model_has_no_head_and_uses_the_embedding()
    {
        using var model = TinyModels.Create(TinyModels.Config(tied: true));
        Assert.That(model.LmHead, Is.Null);
        Assert.That(model.ToStateDict().ContainsKey(LlamaTensorLayout.LmHead), Is.False);
        Assert.That(ReferenceEquals(model.HeadWeight, model.Model.EmbedTokens.Weight), Is.True);

        using var ids = TinyModels.Ids([3, 4, 5]);
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        Tensor hidden = model.Model.forward(ids); // [1, 3, D]
        Tensor expected = hidden.matmul(model.Model.EmbedTokens.Weight.t()); // [1, 3, V]
        Assert.That(TinyModels.MaxAbsDiff(model.forward(ids), expected), Is.LessThan(1e-6));
    }

    [Test]
    public void Untied_model_has_its_own_head()
    {
        using var model = TinyModels.Create(TinyModels.Config(tied: false));
        Assert.That(model.LmHead, Is.Not.Null);
        Assert.That(model.ToStateDict().ContainsKey(LlamaTensorLayout.LmHead), Is.True);
        Assert.That(TinyModels.AreEqual(model.HeadWeight, model.Model.EmbedTokens.Weight), Is.False);
    }

    [Test]
    public void Tied_model_accepts_a_checkpoint_that_still_holds_an_equal_shaped_head()
    {
        using var untied = TinyModels.Create(TinyModels.Config(tied: false));
        using var tied = new LlamaForCausalLM(TinyModels.Config(tied: true));
        tied.LoadStateDict(untied.ToStateDict());
        Assert.That(TinyModels.AreEqual(tied.HeadWeight, untied.Model.EmbedTokens.Weight), Is.True, "the head comes from the embedding");

        using var wrongHead = torch.zeros(51, 32);
        var withBadHead = new Dictionary<string, Tensor>(untied.ToStateDict()) { [LlamaTensorLayout.LmHead] = wrongHead };
        var ex = Assert.Throws<InvalidDataException>(() => tied.LoadStateDict(withBadHead));
        Assert.That(ex!.Message, Does.Contain("unexpected (1): lm_head.weight [51, 32]"));
    }

    [Test]
    public void Qwen2_has_qkv_biases_but_no_output_bias()
    {
        using var model = TinyModels.Create(TinyModels.Config("qwen2", tied: true));
        var stateDict = model.ToStateDict();
        Assert.That(stateDict["model.layers.1.self_attn.q_proj.bias"].shape, Is.EqualTo(new long[] { 32 }));
        Assert.That(stateDict["model.layers.1.self_attn.k_proj.bias"].shape, Is.EqualTo(new long[] { 16 }));
        Assert.That(stateDict["model.layers.1.self_attn.v_proj.bias"].shape, Is.EqualTo(new long[] { 16 }));
        Assert.That(stateDict.Keys.Where(k => k.Contains("o_proj.bias", StringComparison.Ordinal) || k.Contains("mlp", StringComparison.Ordinal) && k.EndsWith(".bias", StringComparison.Ordinal)), Is.Empty);
        Assert.That(model.Layers[0].Attention.OutputProjection.Bias, Is.Null);
    }

    [Test]
    public void Qkv_biases_change_the_output()
    {
        using var model = TinyModels.Create(TinyModels.Config("qwen2"));
        using var ids = TinyModels.Ids([1, 2, 3, 4]);
        using var noGrad = torch.no_grad();
        using var before = model.forward(ids);
        model.Layers[0].Attention.KeyProjection.Bias!.fill_(0.5);
        model.Layers[0].Attention.ValueProjection.Bias!.fill_(0.5);
        using var after = model.forward(ids);
        Assert.That(TinyModels.MaxAbsDiff(before, after), Is.GreaterThan(1e-4));
    }

    [Test]
    public void Llama_attention_and_mlp_biases_follow_the_config()
    {
        LlamaConfig config = TinyModels.Config() with { AttentionBias = true, MlpBias = true };
        using var model = new LlamaForCausalLM(config);
        var keys = model.ToStateDict().Keys;
        Assert.That(keys, Does.Contain("model.layers.0.self_attn.o_proj.bias").And.Contain("model.layers.0.mlp.down_proj.bias"));
    }

    [Test]
    public void Grouped_query_attention_equals_multi_head_attention_with_repeated_kv_weights()
    {
        LlamaConfig gqaConfig = TinyModels.Config(heads: 4, kvHeads: 2);
        LlamaConfig mhaConfig = TinyModels.Config(heads: 4, kvHeads: 4);
        using var gqa = TinyModels.Create(gqaConfig, seed: 11);
        using var mha = new LlamaForCausalLM(mhaConfig);
        int headDim = gqaConfig.HeadDim, group = gqaConfig.QueryGroupSize;

        using (var scope = torch.NewDisposeScope())
        {
            var converted = new Dictionary<string, Tensor>();
            foreach (var (name, tensor) in gqa.ToStateDict())
            {
                bool isKv = name.EndsWith("k_proj.weight", StringComparison.Ordinal) || name.EndsWith("v_proj.weight", StringComparison.Ordinal);
                // Each KV head's rows [hd, D] repeated for the query heads of its group.
                converted[name] = isKv
                    ? tensor.view(gqaConfig.NumKeyValueHeads, headDim, -1).repeat_interleave(group, 0).reshape(mhaConfig.NumKeyValueHeads * headDim, -1)
                    : tensor;
            }

            mha.LoadStateDict(converted);
        }

        using var ids = TinyModels.Ids(TinyModels.RandomIds(9, 50, seed: 12), TinyModels.RandomIds(9, 50, seed: 13));
        using var noGrad = torch.no_grad();
        using var expected = mha.forward(ids);
        using var actual = gqa.forward(ids);
        Assert.That(TinyModels.MaxAbsDiff(expected, actual), Is.LessThan(1e-5));
    }

    [Test]
    public void Rms_norm_matches_a_hand_computation()
    {
        using var norm = new LlamaRmsNorm("norm", 4, 1e-6, ScalarType.Float32, torch.CPU);
        using var noGrad = torch.no_grad();
        using var weight = torch.tensor(new float[] { 0.5f, 1f, 2f, -1f });
        norm.Weight.copy_(weight);
        using var input = torch.tensor(new float[] { 1, 2, 3, 4, -2, 0, 0, 0 }, [2, 4]);

        using var output = norm.forward(input);

        // Row 1: mean square (1+4+9+16)/4 = 7.5; row 2: 4/4 = 1.
        double r1 = 1 / Math.Sqrt(7.5 + 1e-6), r2 = 1 / Math.Sqrt(1 + 1e-6);
        float[] expected = [(float)(0.5 * r1), (float)(2 * r1), (float)(6 * r1), (float)(-4 * r1), (float)(-1 * r2), 0, 0, 0];
        Assert.That(output.data<float>().ToArray(), Is.EqualTo(expected).Within(1e-6));
    }

    [Test]
    public void Rms_norm_in_bfloat16_computes_statistics_in_float32_and_returns_bfloat16()
    {
        using var norm = new LlamaRmsNorm("norm", 3, 1e-6, ScalarType.BFloat16, torch.CPU);
        // 300 squared overflows nothing in float32; in bfloat16 the mean of squares would lose most digits.
        using var input = torch.tensor(new float[] { 300, 300, 300 }).to_type(ScalarType.BFloat16);
        using var output = norm.forward(input);
        Assert.That(output.dtype, Is.EqualTo(ScalarType.BFloat16));
        using var asFloat = output.to_type(ScalarType.Float32);
        Assert.That(asFloat.data<float>().ToArray(), Is.EqualTo(Enumerable.Repeat(1f, 3)).Within(1e-2));
    }

    [Test]
    public void Llama3_rope_scaling_matches_hand_computed_inverse_frequencies()
    {
        LlamaConfig config = ModelPresets.Get("llama-3.2-1b");
        IReadOnlyList<float> inverse = new LlamaRotaryEmbedding(config).InverseFrequencies;

        // Golden values: HF _compute_llama3_parameters evaluated in float64 for theta 500000, head_dim 64, factor 32,
        // low 1, high 4, original 8192. i=0 is high frequency (kept), 15-17 are in the smoothed band, 31 is divided by 32.
        Assert.That(inverse, Has.Count.EqualTo(32));
        Assert.That(inverse[0], Is.EqualTo(1.0f));
        Assert.That(inverse[15], Is.EqualTo(0.001290547928209264).Within(1e-5).Percent);
        Assert.That(inverse[16], Is.EqualTo(0.00042955679655936815).Within(1e-5).Percent);
        Assert.That(inverse[17], Is.EqualTo(9.70828780262767e-05).Within(1e-5).Percent);
        Assert.That(inverse[31], Is.EqualTo(9.418306725434909e-08).Within(1e-5).Percent);

        IReadOnlyList<float> unscaled = new LlamaRotaryEmbedding(config with { RopeScaling = null }).InverseFrequencies;
        Assert.That(unscaled[16], Is.EqualTo(1 / Math.Sqrt(500000)).Within(1e-5).Percent);
        Assert.That(unscaled[31], Is.EqualTo(inverse[31] * 32).Within(1e-5).Percent);
    }

    [Test]
    public void Rotary_apply_rotates_each_first_half_element_with_its_second_half_partner()
    {
        LlamaConfig config = TinyModels.Config(heads: 8, kvHeads: 8); // head_dim 4
        using RotaryTables tables = new LlamaRotaryEmbedding(config).CreateTables(5, 1, ScalarType.Float32, torch.CPU);
        using var x = torch.tensor(new float[] { 1, 2, 3, 4 }, [1, 1, 1, 4]); // [B, H, T, hd]
        using var rotated = tables.Apply(x);

        // rotate_half pairs element i with i + hd/2: (x0, x2) turn by angle 5 * theta^0, (x1, x3) by 5 * theta^(-1/2).
        double a0 = 5.0, a1 = 5.0 / 100.0;
        double[] expected =
        [
            (1 * Math.Cos(a0)) - (3 * Math.Sin(a0)),
            (2 * Math.Cos(a1)) - (4 * Math.Sin(a1)),
            (3 * Math.Cos(a0)) + (1 * Math.Sin(a0)),
            (4 * Math.Cos(a1)) + (2 * Math.Sin(a1)),
        ];
        Assert.That(rotated.data<float>().ToArray(), Is.EqualTo(expected).Within(1e-5));
    }

    [Test]
    public void Rotary_tables_use_the_rotate_half_layout()
    {
        LlamaConfig config = TinyModels.Config(heads: 4, kvHeads: 4);
        var rotary = new LlamaRotaryEmbedding(config);
        using RotaryTables tables = rotary.CreateTables(positionOffset: 3, length: 2, ScalarType.Float32, torch.CPU);
        Assert.That(tables.Cos.shape, Is.EqualTo(new long[] { 2, 8 }));
        float[] cos = tables.Cos.data<float>().ToArray();
        // Row 0 is position 3; columns i and i + 4 share frequency theta^(-2i/8).
        for (int i = 0; i < 4; i++)
        {
            double angle = 3 * Math.Pow(10000, -2.0 * i / 8);
            Assert.That(cos[i], Is.EqualTo(Math.Cos(angle)).Within(1e-5));
            Assert.That(cos[i + 4], Is.EqualTo(Math.Cos(angle)).Within(1e-5));
        }
    }

    [TestCase(ScalarType.BFloat16)]
    [TestCase(ScalarType.Float16)]
    public void Half_precision_model_tracks_the_float32_model(ScalarType dtype)
    {
        LlamaConfig config = TinyModels.Config();
        using var reference = TinyModels.Create(config);
        using var half = new LlamaForCausalLM(config, dtype);
        half.LoadStateDict(reference.ToStateDict());
        using var ids = TinyModels.Ids(TinyModels.RandomIds(8, 50, seed: 21));
        using var noGrad = torch.no_grad();
        using var expected = reference.forward(ids);
        using var actual = half.forward(ids);
        Assert.That(actual.dtype, Is.EqualTo(ScalarType.Float32));
        Assert.That(TinyModels.MaxAbsDiff(expected, actual), Is.LessThan(0.05));
    }

    [Test]
    public void Converting_the_model_dtype_keeps_names_loading_and_forward_working()
    {
        LlamaConfig config = TinyModels.Config();
        using var reference = TinyModels.Create(config);
        using var model = TinyModels.Create(config, seed: 2);
        model.to(ScalarType.BFloat16);

        Assert.That(model.DType, Is.EqualTo(ScalarType.BFloat16));
        Assert.That(model.ToStateDict().Values.Select(t => t.dtype), Is.All.EqualTo(ScalarType.BFloat16));
        model.LoadStateDict(reference.ToStateDict());
        using var ids = TinyModels.Ids([5, 6, 7]);
        using var noGrad = torch.no_grad();
        using var expected = reference.forward(ids);
        using var actual = model.forward(ids);
        Assert.That(TinyModels.MaxAbsDiff(expected, actual), Is.LessThan(0.05));
    }

    [Test]
    public void Initialization_is_reproducible_for_a_seed_with_the_usual_scale()
    {
        LlamaConfig config = TinyModels.Config();
        using var a = TinyModels.Create(config, seed: 5);
        using var b = TinyModels.Create(config, seed: 5);
        using var c = TinyModels.Create(config, seed: 6);
        foreach (var (name, tensor) in a.ToStateDict())
        {
            Assert.That(TinyModels.AreEqual(tensor, b.ToStateDict()[name]), Is.True, name);
        }

        Tensor embedding = a.ToStateDict()[LlamaTensorLayout.EmbedTokens];
        Assert.That(TinyModels.AreEqual(embedding, c.ToStateDict()[LlamaTensorLayout.EmbedTokens]), Is.False);
        Assert.That(embedding.std().item<float>(), Is.EqualTo(0.02).Within(0.003));
        Assert.That(a.ToStateDict()["model.norm.weight"].sum().item<float>(), Is.EqualTo(32f));
    }

    [Test]
    public void Unsupported_dtype_is_rejected()
    {
        var ex = Assert.Throws<ArgumentException>(() => new LlamaForCausalLM(TinyModels.Config(), ScalarType.Int32));
        Assert.That(ex!.Message, Does.Contain("Int32"));
    }
}
