using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Generation;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Tests.Evaluation;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Modeling;

/// <summary>
/// Sliding-window attention on every path of the model (full forward, KV-cache prefill, single steps and chunks, batched
/// right-padded scoring, perplexity, greedy generation, hidden-state capture), checked against the independent float64
/// <see cref="ReferenceLlamaForward"/> with the windows spelled out per layer.
/// </summary>
public sealed class SlidingWindowTests
{
    /// <summary>Unit roundoff of float32 (half its machine epsilon 2^-23).</summary>
    private const double Float32Roundoff = 1.0 / (1 << 24);

    /// <summary>
    /// How far float32 logits may be from the float64 reference. A dot product of n terms computed in float32 is off by at
    /// most about n * u * (sum of |terms|), u the unit roundoff; to first order the relative errors of the stages a logit
    /// goes through add up. Per layer those are the input RMSNorm (D), q/k/v_proj (D), the scores (hd), the softmax and
    /// its weighted sum of values (up to T keys), o_proj (H*hd), the post-attention RMSNorm (D), gate/up_proj (D) and
    /// down_proj (F); then the final norm (D) and the head (D); and RoPE angles computed in float32 from positions below T
    /// are off by up to u * T radians. The sum, times the largest reference logit as the scale of the terms, bounds the
    /// error without any constant fitted to a run (random-sign rounding errors grow more slowly than this worst case).
    /// </summary>
    private static double Tolerance(LlamaConfig config, int length, double scale)
    {
        long d = config.HiddenSize, perLayer = (4 * d) + ((long)config.NumAttentionHeads * config.HeadDim) + config.HeadDim + length + config.IntermediateSize;
        long path = (config.NumHiddenLayers * perLayer) + (2 * d) + length;
        return Float32Roundoff * path * scale;
    }

    /// <summary>A config.json text with the sliding-window keys added, parsed as a checkpoint's config would be.</summary>
    private static LlamaConfig WithKeys(LlamaConfig config, JsonObject keys)
    {
        var root = (JsonObject)JsonNode.Parse(config.ToJson())!;
        foreach (var (key, value) in keys)
        {
            root[key] = value?.DeepClone();
        }

        return LlamaConfig.Parse(root.ToJsonString(), "test config.json");
    }

    private static LlamaConfig Mistral(int window, int layers = 3) =>
        WithKeys(TinyModels.Config("mistral", heads: 4, kvHeads: 2, layers: layers), new JsonObject { ["sliding_window"] = window });

    private static LlamaConfig Qwen2MaxWindowLayers(int window, int maxWindowLayers, int layers = 3) =>
        WithKeys(TinyModels.Config("qwen2", heads: 4, kvHeads: 2, layers: layers), new JsonObject
        {
            ["use_sliding_window"] = true,
            ["sliding_window"] = window,
            ["max_window_layers"] = maxWindowLayers,
        });

    private static LlamaConfig Qwen2LayerTypes(int window, params string[] types) =>
        WithKeys(TinyModels.Config("qwen2", heads: 4, kvHeads: 2, layers: types.Length), new JsonObject
        {
            ["use_sliding_window"] = true,
            ["sliding_window"] = window,
            ["max_window_layers"] = 0, // layer_types decides; transformers does not read this when both are present
            ["layer_types"] = new JsonArray([.. types.Select(t => (JsonNode?)JsonValue.Create(t))]),
        });

    /// <summary>The same architecture without any window (the keys dropped): what the library computed before windows were honoured.</summary>
    private static LlamaConfig WithoutWindows(LlamaConfig config)
    {
        var extra = (JsonObject)config.ExtraProperties.DeepClone();
        foreach (string key in new[] { "sliding_window", "use_sliding_window", "max_window_layers", "layer_types" })
        {
            extra.Remove(key);
        }

        return config with { ExtraProperties = config.ModelType == "mistral" ? new JsonObject { ["sliding_window"] = null } : extra };
    }

    /// <summary>A model with weights large enough that attention is far from uniform, so every key a window hides matters.</summary>
    private static LlamaForCausalLM Create(LlamaConfig config, long seed)
    {
        LlamaForCausalLM model = TinyModels.Create(config, seed);
        using var noGrad = torch.no_grad();
        var generator = new Generator((ulong)seed);
        foreach (var (name, parameter) in model.named_parameters())
        {
            using var scope = NewDisposeScope();
            Tensor values = torch.randn(parameter.shape, generator: generator);
            parameter.copy_(name.EndsWith("norm.weight", StringComparison.Ordinal) ? values.mul(0.2).add(1.0) : values.mul(0.3));
        }

        return model;
    }

    private static LlamaForCausalLM SameWeights(LlamaForCausalLM model, LlamaConfig config, ScalarType dtype = ScalarType.Float32)
    {
        var copy = new LlamaForCausalLM(config, dtype);
        copy.LoadStateDict(model.ToStateDict());
        copy.eval();
        return copy;
    }

    /// <summary>Logits of a forward pass that records gradients, as a training step's.</summary>
    private static double[][] TrainingLogits(LlamaForCausalLM model, long[] tokens)
    {
        using var scope = NewDisposeScope();
        Tensor logits = model.forward(TinyModels.Ids(tokens))[0];
        Assert.That(logits.requires_grad, Is.True);
        return Rows(logits);
    }

    private static ReferenceLlamaForward Reference(LlamaForCausalLM model, IReadOnlyList<int?> windows) =>
        new(model.Config, model.ToStateDict(), windows);

    private static double[][] Rows(Tensor logits) // [T, V] -> T rows
    {
        long vocab = logits.shape[^1];
        float[] flat = logits.detach().cpu().to_type(ScalarType.Float32).data<float>().ToArray();
        return [.. Enumerable.Range(0, flat.Length / (int)vocab).Select(r => flat.AsSpan(r * (int)vocab, (int)vocab).ToArray().Select(v => (double)v).ToArray())];
    }

    private static double MaxAbsDiff(double[][] a, double[][] b)
    {
        Assert.That(a, Has.Length.EqualTo(b.Length));
        return a.Zip(b).Max(p => p.First.Zip(p.Second).Max(q => Math.Abs(q.First - q.Second)));
    }

    private static double MaxAbs(double[][] a) => a.Max(row => row.Max(Math.Abs));

    private static double[][] ModelLogits(LlamaForCausalLM model, long[] tokens)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        return Rows(model.forward(TinyModels.Ids(tokens))[0]);
    }

    public static IEnumerable<TestCaseData> Configs()
    {
        // Sequences 4x the window, so most keys of most queries are outside it.
        yield return new TestCaseData("mistral", 4, 16).SetArgDisplayNames("Mistral window 4 16 tokens");
        yield return new TestCaseData("mistral", 16, 64).SetArgDisplayNames("Mistral window 16 64 tokens");
        yield return new TestCaseData("qwen2-max-window-layers", 4, 16).SetArgDisplayNames("Qwen2 max_window_layers window 4 16 tokens");
        yield return new TestCaseData("qwen2-max-window-layers", 16, 64).SetArgDisplayNames("Qwen2 max_window_layers window 16 64 tokens");
        yield return new TestCaseData("qwen2-layer-types", 4, 16).SetArgDisplayNames("Qwen2 layer_types window 4 16 tokens");
        yield return new TestCaseData("qwen2-layer-types", 16, 64).SetArgDisplayNames("Qwen2 layer_types window 16 64 tokens");
    }

    /// <summary>The config of a case and the windows the reference applies, written out independently of the config reader.</summary>
    private static (LlamaConfig Config, int?[] Windows) Case(string kind, int window) => kind switch
    {
        "mistral" => (Mistral(window), [window, window, window]),
        "qwen2-max-window-layers" => (Qwen2MaxWindowLayers(window, maxWindowLayers: 1), [null, window, window]),
        "qwen2-layer-types" => (Qwen2LayerTypes(window, "sliding_attention", "full_attention", "sliding_attention"), [window, null, window]),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    [TestCaseSource(nameof(Configs))]
    public void Full_forward_matches_the_float64_reference_and_differs_from_full_attention(string kind, int window, int length)
    {
        var (config, windows) = Case(kind, window);
        Assert.That(config.LayerAttentionWindows, Is.EqualTo(windows), "the config reader gives the windows the reference was told");
        using LlamaForCausalLM model = Create(config, seed: 7);
        long[] tokens = TinyModels.RandomIds(length, config.VocabSize, seed: 8);

        double[][] expected = Reference(model, windows).Logits(tokens);
        double[][] actual = ModelLogits(model, tokens);
        double tolerance = Tolerance(config, length, MaxAbs(expected));
        double difference = MaxAbsDiff(actual, expected);
        TestContext.Out.WriteLine($"{kind} W={window} T={length}: max |logit diff| {difference:E3} (max relative {difference / MaxAbs(expected):E3}), tolerance {tolerance:E3}");
        Assert.That(difference, Is.LessThan(tolerance));

        // Sharpness: the same weights with full attention everywhere, the library's behaviour before windows were
        // honoured, miss the windowed reference by far more than the tolerance.
        using LlamaForCausalLM unwindowed = SameWeights(model, WithoutWindows(config));
        Assert.That(unwindowed.Config.HasSlidingWindowLayers, Is.False);
        double unwindowedDifference = MaxAbsDiff(ModelLogits(unwindowed, tokens), expected);
        TestContext.Out.WriteLine($"  without the window: {unwindowedDifference:E3}");
        Assert.That(unwindowedDifference, Is.GreaterThan(100 * tolerance));
    }

    [TestCaseSource(nameof(Configs))]
    public void Bf16_training_forward_takes_eager_attention_and_is_as_close_to_the_reference_as_the_fused_kernel(string kind, int window, int length)
    {
        // A forward pass that records gradients in bf16 on the CPU takes EagerAttention, one without takes the fused
        // kernel; both round to bf16 at every step, so the fused kernel's distance from the float64 reference (same bf16
        // weights) is the yardstick, and the windowless model's distance shows the comparison would see a wrong mask.
        var (config, windows) = Case(kind, window);
        Assert.That(EagerAttention.AppliesInTraining(ScalarType.BFloat16, DeviceType.CPU, length), Is.True);
        using LlamaForCausalLM fp32 = Create(config, seed: 7);
        using LlamaForCausalLM model = SameWeights(fp32, config, ScalarType.BFloat16);
        using LlamaForCausalLM unwindowed = SameWeights(fp32, WithoutWindows(config), ScalarType.BFloat16);
        long[] tokens = TinyModels.RandomIds(length, config.VocabSize, seed: 8);
        double[][] expected = Reference(model, windows).Logits(tokens);

        double eager = MaxAbsDiff(TrainingLogits(model, tokens), expected);
        double fused = MaxAbsDiff(ModelLogits(model, tokens), expected);
        double withoutWindow = MaxAbsDiff(TrainingLogits(unwindowed, tokens), expected);
        TestContext.Out.WriteLine($"{kind} W={window} T={length}: bf16 max |logit diff| eager {eager:E3}, fused {fused:E3}, without the window {withoutWindow:E3} (max logit {MaxAbs(expected):E3})");
        Assert.That(eager, Is.LessThanOrEqualTo(2 * fused));
        Assert.That(withoutWindow, Is.GreaterThan(4 * Math.Max(eager, fused)));
    }

    [TestCaseSource(nameof(Configs))]
    public void Kv_cache_prefill_single_steps_and_chunks_match_the_reference(string kind, int window, int length)
    {
        var (config, windows) = Case(kind, window);
        using LlamaForCausalLM model = Create(config, seed: 9);
        long[] first = TinyModels.RandomIds(length, config.VocabSize, seed: 10), second = TinyModels.RandomIds(length, config.VocabSize, seed: 11);
        ReferenceLlamaForward reference = Reference(model, windows);
        double[][] expectedFirst = reference.Logits(first), expectedSecond = reference.Logits(second);
        double tolerance = Tolerance(config, length, Math.Max(MaxAbs(expectedFirst), MaxAbs(expectedSecond)));

        // A prompt prefill longer than the window, single-token steps across the window boundary, then multi-token chunks
        // that start after cached positions (their queries must count positions from the cache, not from the chunk).
        int prefill = window + 3;
        var pieces = new List<(int Start, int Length)> { (0, prefill) };
        int position = prefill;
        for (int step = 0; step < window && position < length - 5; step++, position++)
        {
            pieces.Add((position, 1));
        }

        while (position < length)
        {
            int chunk = Math.Min(position % 2 == 0 ? 3 : window + 1, length - position);
            pieces.Add((position, chunk));
            position += chunk;
        }

        using var noGrad = torch.no_grad();
        using KvCache cache = model.CreateKvCache(length);
        var firstRows = new List<double[]>();
        var secondRows = new List<double[]>();
        foreach (var (start, count) in pieces)
        {
            using var scope = NewDisposeScope();
            Assert.That(cache.Length, Is.EqualTo(start));
            Tensor logits = model.forward(TinyModels.Ids(first[start..(start + count)], second[start..(start + count)]), cache); // [2, count, V]
            firstRows.AddRange(Rows(logits[0]));
            secondRows.AddRange(Rows(logits[1]));
        }

        Assert.That(pieces.Count(p => p.Length == 1), Is.GreaterThan(1));
        Assert.That(pieces.Count(p => p.Start > 0 && p.Length > 1), Is.GreaterThan(0));
        Assert.That(MaxAbsDiff([.. firstRows], expectedFirst), Is.LessThan(tolerance));
        Assert.That(MaxAbsDiff([.. secondRows], expectedSecond), Is.LessThan(tolerance));
    }

    [TestCaseSource(nameof(Configs))]
    public async Task Greedy_generation_with_the_kv_cache_follows_the_reference_token_for_token(string kind, int window, int length)
    {
        var (config, windows) = Case(kind, window);
        using LlamaForCausalLM model = Create(config, seed: 12);
        long[] prompt = TinyModels.RandomIds(5, config.VocabSize, seed: 13);
        int newTokens = length - prompt.Length;

        List<long> expected = Reference(model, windows).Greedy(prompt, newTokens);
        var actual = new List<long>();
        await foreach (int token in TextGenerator.GenerateAsync(model, [.. prompt.Select(t => (int)t)], new GenerationOptions { MaxNewTokens = newTokens, Temperature = 0 }))
        {
            actual.Add(token);
        }

        Assert.That(actual, Is.EqualTo(expected));

        using LlamaForCausalLM unwindowed = SameWeights(model, WithoutWindows(config));
        var withoutWindow = new List<long>();
        await foreach (int token in TextGenerator.GenerateAsync(unwindowed, [.. prompt.Select(t => (int)t)], new GenerationOptions { MaxNewTokens = newTokens, Temperature = 0 }))
        {
            withoutWindow.Add(token);
        }

        int diverges = withoutWindow.Zip(expected).TakeWhile(p => p.First == p.Second).Count();
        TestContext.Out.WriteLine($"{kind} W={window}: without the window greedy decoding diverges after {diverges} of {newTokens} tokens");
        Assert.That(withoutWindow, Is.Not.EqualTo(expected));
    }

    [TestCase("mistral", 16, 64)]
    [TestCase("qwen2-max-window-layers", 16, 64)]
    [TestCase("qwen2-layer-types", 4, 24)]
    public async Task Perplexity_over_a_window_longer_than_the_attention_window_matches_the_reference(string kind, int window, int length)
    {
        var (config, windows) = Case(kind, window);
        using LlamaForCausalLM model = Create(config, seed: 14);
        int[] tokens = [.. TinyModels.RandomIds(length, config.VocabSize, seed: 15).Select(t => (int)t)];

        PerplexityResult result = await PerplexityEvaluator.EvaluateAsync(model, tokens, context: length, stride: length);

        ReferenceLlamaForward reference = Reference(model, windows);
        double nll = 0;
        long scored = 0;
        foreach ((int begin, int end, int firstTarget) in PerplexityEvaluator.Windows(tokens.Length, length, length))
        {
            long[] input = [.. tokens[begin..end].Select(t => (long)t)];
            double[][] logits = reference.Logits(input);
            for (int t = firstTarget; t < input.Length; t++)
            {
                nll -= ReferenceLlamaForward.LogProbability(logits[t - 1], input[t]);
                scored++;
            }
        }

        double expected = Math.Exp(nll / scored);
        using LlamaForCausalLM unwindowed = SameWeights(model, WithoutWindows(config));
        PerplexityResult withoutWindow = await PerplexityEvaluator.EvaluateAsync(unwindowed, tokens, context: length, stride: length);
        TestContext.Out.WriteLine($"{kind} W={window} over {length} tokens: perplexity {result.Perplexity:F4}, float64 reference {expected:F4}, without the window {withoutWindow.Perplexity:F4}");

        // The mean NLL inherits the logits' error bound (log-softmax is 1-Lipschitz in each logit, twice for the log-sum).
        double tolerance = 2 * Tolerance(config, length, 1 + Math.Abs(nll / scored));
        Assert.That(result.MeanNll, Is.EqualTo(nll / scored).Within(tolerance));
        Assert.That(Math.Abs(withoutWindow.MeanNll - (nll / scored)), Is.GreaterThan(100 * tolerance));
    }

    [TestCase("mistral", 4)]
    [TestCase("qwen2-layer-types", 4)]
    public async Task Batched_right_padded_scoring_matches_the_reference_per_request(string kind, int window)
    {
        var (config, windows) = Case(kind, window);
        using LlamaForCausalLM model = Create(config, seed: 16);
        var random = new Random(17);
        TokenizedRequest[] requests =
        [
            .. Enumerable.Range(0, 7).Select(_ => new TokenizedRequest(
                [.. Enumerable.Range(0, random.Next(1, 5 * window)).Select(_ => random.Next(config.VocabSize))],
                [.. Enumerable.Range(0, random.Next(1, 6)).Select(_ => random.Next(config.VocabSize))])),
        ];
        var scorer = new LogLikelihoodScorer(model, new CharTokenizer("abc"), new EvaluationOptions { BatchSize = 4, MaxLength = 64 });

        IReadOnlyList<LogLikelihoodResult> results = await scorer.ScoreTokensAsync(requests);

        ReferenceLlamaForward reference = Reference(model, windows);
        int longest = requests.Max(r => r.Context.Count + r.Continuation.Count);
        Assert.That(requests.Select(r => r.Context.Count + r.Continuation.Count).Distinct().Count(), Is.GreaterThan(2), "batches hold requests of different lengths, so they are padded");
        for (int i = 0; i < requests.Length; i++)
        {
            long[] all = [.. requests[i].Context.Concat(requests[i].Continuation).Select(t => (long)t)];
            double[][] logits = reference.Logits(all[..^1]);
            int continuation = requests[i].Continuation.Count;
            double expected = Enumerable.Range(all.Length - continuation, continuation).Sum(t => ReferenceLlamaForward.LogProbability(logits[t - 1], all[t]));
            double tolerance = 2 * continuation * Tolerance(config, longest, 1 + MaxAbs(logits));
            Assert.That(results[i].LogLikelihood, Is.EqualTo(expected).Within(tolerance), $"request {i}");
            Assert.That(results[i].ContinuationTokens, Is.EqualTo(continuation));
        }
    }

    [TestCaseSource(nameof(Configs))]
    public void Hidden_state_capture_is_the_same_forward_pass(string kind, int window, int length)
    {
        var (config, _) = Case(kind, window);
        using LlamaForCausalLM model = Create(config, seed: 18);
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        Tensor ids = TinyModels.Ids(TinyModels.RandomIds(length, config.VocabSize, seed: 19), TinyModels.RandomIds(length, config.VocabSize, seed: 20));

        (Tensor logits, IReadOnlyList<Tensor> hidden) = model.ForwardWithHiddenStates(ids);

        Assert.That(TinyModels.AreEqual(logits, model.forward(ids)), Is.True);
        Assert.That(hidden, Has.Count.EqualTo(config.NumHiddenLayers));
        Tensor state = model.Embed(ids);
        using RotaryTables rope = model.CreateRotaryTables(0, length);
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            state = model.Layers[l].forward(state, rope);
            Assert.That(TinyModels.AreEqual(hidden[l], state), Is.True, $"layer {l}");
        }
    }

    [Test]
    public void Masks_are_built_once_per_window_and_shared_by_the_layers_of_a_forward()
    {
        LlamaConfig config = Qwen2LayerTypes(4, "sliding_attention", "full_attention", "sliding_attention", "full_attention");
        using LlamaForCausalLM model = Create(config, seed: 21);
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        Tensor ids = TinyModels.Ids(TinyModels.RandomIds(12, config.VocabSize, seed: 22));
        using RotaryTables rope = model.CreateRotaryTables(0, 12);
        using var masks = new AttentionMasks();
        Tensor hidden = model.Embed(ids);
        foreach (LlamaDecoderLayer layer in model.Layers)
        {
            hidden = layer.forward(hidden, rope, null, masks);
        }

        // Full layers of a sequence from position 0 use SDPA's causal flag (no mask); the two windowed layers share one.
        Assert.That(masks.Count, Is.EqualTo(1));
        Assert.That(TinyModels.AreEqual(model.FinalNormAndHead(hidden), model.forward(ids)), Is.True);
    }

    [Test]
    public void Mask_allows_exactly_the_keys_within_the_window_before_each_query()
    {
        using var scope = NewDisposeScope();
        // 3 new queries after 4 cached positions (keys 0..6), window 3: query at position 4 sees 2..4, 5 sees 3..5, 6 sees 4..6.
        bool[] mask = AttentionMasks.Build(3, 7, 3, torch.CPU).data<bool>().ToArray();
        bool[] expected =
        [
            false, false, true, true, true, false, false,
            false, false, false, true, true, true, false,
            false, false, false, false, true, true, true,
        ];
        Assert.That(mask, Is.EqualTo(expected));
        bool[] causal = AttentionMasks.Build(2, 3, null, torch.CPU).data<bool>().ToArray();
        Assert.That(causal, Is.EqualTo(new[] { true, true, false, true, true, true }));
    }

    [Test]
    public void A_window_at_least_as_long_as_the_sequence_changes_nothing_bit_for_bit()
    {
        // The fast path: when no key can fall outside the window the layer runs exactly as a full-attention layer.
        LlamaConfig config = Mistral(window: 16);
        using LlamaForCausalLM model = Create(config, seed: 23);
        using LlamaForCausalLM unwindowed = SameWeights(model, WithoutWindows(config));
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        Tensor ids = TinyModels.Ids(TinyModels.RandomIds(16, config.VocabSize, seed: 24));
        Assert.That(TinyModels.AreEqual(model.forward(ids), unwindowed.forward(ids)), Is.True);
        Tensor longer = TinyModels.Ids(TinyModels.RandomIds(17, config.VocabSize, seed: 24));
        Assert.That(TinyModels.AreEqual(model.forward(longer), unwindowed.forward(longer)), Is.False, "one token more and the window hides the first key");
    }
}
