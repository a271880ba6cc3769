using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Generation;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Tests.Modeling;
using TorchSharp;

namespace ModelSurgery.Tests.Generation;

public sealed class TextGeneratorTests
{
    private static readonly int[] Prompt = [3, 14, 15, 9, 26];

    private static async Task<List<int>> GenerateAsync(LlamaForCausalLM model, IReadOnlyList<int> prompt, GenerationOptions options, CancellationToken ct = default)
    {
        var tokens = new List<int>();
        await foreach (int token in TextGenerator.GenerateAsync(model, prompt, options, ct))
        {
            tokens.Add(token);
        }

        return tokens;
    }

    // Reference: rerun the whole sequence without a cache and take the argmax of the last position each time.
    private static List<int> GreedyByFullForward(LlamaForCausalLM model, IReadOnlyList<int> prompt, int count)
    {
        var sequence = prompt.Select(id => (long)id).ToList();
        var generated = new List<int>();
        using var noGrad = torch.no_grad();
        for (int i = 0; i < count; i++)
        {
            using var scope = torch.NewDisposeScope();
            var logits = model.forward(TinyModels.Ids([.. sequence]));
            int next = (int)logits[0, -1].argmax().item<long>();
            generated.Add(next);
            sequence.Add(next);
        }

        return generated;
    }

    [Test]
    public async Task Greedy_generation_equals_repeated_argmax_of_the_full_forward()
    {
        using var model = TinyModels.Create(TinyModels.Config(), seed: 31);
        List<int> generated = await GenerateAsync(model, Prompt, new GenerationOptions { MaxNewTokens = 12 });
        Assert.That(generated, Is.EqualTo(GreedyByFullForward(model, Prompt, 12)));
    }

    // Mistral-style windows on every layer, or Qwen2 layer_types mixing windowed and full layers, shorter than the run, so
    // decoding steps read only the last W positions of the preallocated cache while other layers read all of it.
    [TestCase("mistral", 3)]
    [TestCase("qwen2", 4)]
    public async Task Greedy_generation_filling_the_preallocated_cache_with_windowed_layers_equals_the_full_forward(string kind, int window)
    {
        var root = (JsonObject)JsonNode.Parse(TinyModels.Config(kind, layers: 3).ToJson())!;
        root["sliding_window"] = window;
        if (kind == "qwen2")
        {
            root["use_sliding_window"] = true;
            root["layer_types"] = new JsonArray("sliding_attention", "full_attention", "sliding_attention");
        }

        LlamaConfig config = LlamaConfig.Parse(root.ToJsonString(), "test config.json");
        Assert.That(Enumerable.Range(0, 3).Count(i => config.AttentionWindow(i) == window), Is.GreaterThan(0), "the config has windowed layers");
        using var model = TinyModels.Create(config, seed: 39);
        const int newTokens = 14;

        // MaxContext = prompt + new tokens: the cache is allocated to exactly that length once and filled to its end.
        List<int> generated = await GenerateAsync(model, Prompt, new GenerationOptions { MaxNewTokens = newTokens, MaxContext = Prompt.Length + newTokens });
        Assert.That(generated, Has.Count.EqualTo(newTokens));
        Assert.That(generated, Is.EqualTo(GreedyByFullForward(model, Prompt, newTokens)));
    }

    [Test]
    public void Next_token_logits_are_the_last_position_of_the_full_logits()
    {
        using var model = TinyModels.Create(TinyModels.Config(), seed: 40);
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        using var fullCache = model.CreateKvCache(16);
        using var lastCache = model.CreateKvCache(16);
        var ids = TinyModels.Ids([.. Prompt.Select(id => (long)id)]);
        var full = model.forward(ids, fullCache); // [1, T, V]
        var last = model.NextTokenLogits(ids, lastCache); // [1, V]
        Assert.That(last.shape, Is.EqualTo(new long[] { 1, model.Config.VocabSize }));

        // One row of the head's matmul may be blocked differently from T rows: float32 roundoff of a D-term dot product.
        double scale = full.abs().max().item<float>();
        double tolerance = model.Config.HiddenSize * Math.Pow(2, -24) * scale * 4;
        Assert.That(TinyModels.MaxAbsDiff(full[0, -1], last[0]), Is.LessThanOrEqualTo(tolerance));
        Assert.That(lastCache.Length, Is.EqualTo(Prompt.Length), "the prompt's keys and values are cached");
    }

    [Test]
    public async Task Statistics_time_the_prompt_pass_apart_from_each_decoding_step()
    {
        using var model = TinyModels.Create(TinyModels.Config(), seed: 41);
        var statistics = new GenerationStatistics();
        var tokens = new List<int>();
        await foreach (int token in TextGenerator.GenerateAsync(model, Prompt, new GenerationOptions { MaxNewTokens = 9 }, statistics))
        {
            tokens.Add(token);
        }

        Assert.That(tokens, Has.Count.EqualTo(9));
        Assert.That(statistics.PromptTokens, Is.EqualTo(Prompt.Length));
        Assert.That(statistics.DecodeTokens, Is.EqualTo(8), "the prompt pass picks the first token; each later one is a step");
        Assert.That(statistics.PromptTime, Is.GreaterThan(TimeSpan.Zero));
        Assert.That(statistics.DecodeTime, Is.GreaterThan(TimeSpan.Zero));
        Assert.That(statistics.DecodeTokensPerSecond, Is.EqualTo(8 / statistics.DecodeTime.TotalSeconds).Within(1e-9).Percent);
        Assert.That(statistics.PromptTokensPerSecond, Is.EqualTo(Prompt.Length / statistics.PromptTime.TotalSeconds).Within(1e-9).Percent);
    }

    [Test]
    public async Task Seeded_sampling_is_reproducible_and_seeds_differ()
    {
        using var model = TinyModels.Create(TinyModels.Config(), seed: 32);
        var options = new GenerationOptions { MaxNewTokens = 20, Temperature = 1.0, Seed = 7 };
        List<int> first = await GenerateAsync(model, Prompt, options);
        List<int> second = await GenerateAsync(model, Prompt, options);
        List<int> other = await GenerateAsync(model, Prompt, options with { Seed = 8 });
        Assert.That(first, Has.Count.EqualTo(20));
        Assert.That(second, Is.EqualTo(first));
        Assert.That(other, Is.Not.EqualTo(first));
    }

    [Test]
    public async Task Top_k_of_one_equals_greedy()
    {
        using var model = TinyModels.Create(TinyModels.Config(), seed: 33);
        List<int> greedy = await GenerateAsync(model, Prompt, new GenerationOptions { MaxNewTokens = 10 });
        List<int> topOne = await GenerateAsync(model, Prompt, new GenerationOptions { MaxNewTokens = 10, Temperature = 1.5, TopK = 1, Seed = 3 });
        Assert.That(topOne, Is.EqualTo(greedy));
    }

    [Test]
    public async Task Generation_stops_before_a_stop_token()
    {
        using var model = TinyModels.Create(TinyModels.Config(), seed: 34);
        List<int> free = await GenerateAsync(model, Prompt, new GenerationOptions { MaxNewTokens = 10 });
        int stop = free[3];
        List<int> stopped = await GenerateAsync(model, Prompt, new GenerationOptions { MaxNewTokens = 10, StopTokenIds = [stop] });
        Assert.That(stopped, Is.EqualTo(free.TakeWhile(t => t != stop)));
    }

    [Test]
    public async Task Generation_stops_at_the_context_limit()
    {
        using var model = TinyModels.Create(TinyModels.Config(), seed: 35);
        List<int> generated = await GenerateAsync(model, Prompt, new GenerationOptions { MaxNewTokens = 50, MaxContext = Prompt.Length + 4 });
        Assert.That(generated, Has.Count.EqualTo(4));
    }

    [Test]
    public void Prompt_filling_the_context_is_rejected()
    {
        using var model = TinyModels.Create(TinyModels.Config(), seed: 36);
        var ex = Assert.ThrowsAsync<ArgumentException>(() => GenerateAsync(model, Prompt, new GenerationOptions { MaxContext = Prompt.Length }));
        Assert.That(ex!.Message, Does.Contain("MaxContext"));
        Assert.ThrowsAsync<ArgumentException>(() => GenerateAsync(model, [60], new GenerationOptions()));
        Assert.ThrowsAsync<ArgumentException>(() => GenerateAsync(model, Prompt, new GenerationOptions { TopP = 0 }));
    }

    [Test]
    public async Task Generation_observes_cancellation()
    {
        using var model = TinyModels.Create(TinyModels.Config(), seed: 37);
        using var cts = new CancellationTokenSource();
        var received = new List<int>();
        Assert.ThrowsAsync<OperationCanceledException>(async () =>
        {
            await foreach (int token in TextGenerator.GenerateAsync(model, Prompt, new GenerationOptions { MaxNewTokens = 50 }, cts.Token))
            {
                received.Add(token);
                if (received.Count == 2)
                {
                    await cts.CancelAsync();
                }
            }
        });
        Assert.That(received, Has.Count.EqualTo(2));
    }

    [TestCase(0.0)]
    [TestCase(0.8)]
    public async Task Live_tensor_count_does_not_grow_over_200_steps(double temperature)
    {
        using var model = TinyModels.Create(TinyModels.Config(), seed: 38);
        var options = new GenerationOptions { MaxNewTokens = 200, Temperature = temperature, TopK = 20, TopP = 0.9, Seed = 1 };
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long afterFirstSteps = 0, atEnd = 0;
        int steps = 0;
        await foreach (int _ in TextGenerator.GenerateAsync(model, [1], options))
        {
            steps++;
            if (steps == 5)
            {
                afterFirstSteps = torch.Tensor.TotalCount;
            }

            atEnd = torch.Tensor.TotalCount;
        }

        Assert.That(steps, Is.EqualTo(200));
        Assert.That(atEnd, Is.EqualTo(afterFirstSteps), "every per-step tensor is disposed");
    }
}
