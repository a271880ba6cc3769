using System.Runtime.CompilerServices;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Generation;

/// <summary>
/// Autoregressive token generation with a KV cache: the prompt is run once (prefill), then one token per step.
/// Each step runs under <c>torch.no_grad()</c> in its own dispose scope, so memory stays flat however long it runs.
/// </summary>
public static class TextGenerator
{
    /// <summary>
    /// Generates tokens after <paramref name="promptIds"/> (batch of one), yielding each id as soon as it is chosen. Stops
    /// after <see cref="GenerationOptions.MaxNewTokens"/>, at a stop token (not yielded), or when the sequence reaches the
    /// context limit. Sampling with a <see cref="GenerationOptions.Seed"/> is reproducible on a given device.
    /// </summary>
    /// <exception cref="ArgumentException">The prompt is empty, holds ids outside the vocabulary, or leaves no room in the context; or an option is invalid.</exception>
    public static async IAsyncEnumerable<int> GenerateAsync(
        LlamaForCausalLM model,
        IReadOnlyList<int> promptIds,
        GenerationOptions options,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(promptIds);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        int maxContext = Math.Min(options.MaxContext ?? model.Config.MaxPositionEmbeddings, model.Config.MaxPositionEmbeddings);
        if (promptIds.Count == 0)
        {
            throw new ArgumentException("The prompt must hold at least one token.", nameof(promptIds));
        }

        if (promptIds.Count >= maxContext)
        {
            throw new ArgumentException($"The prompt has {promptIds.Count} tokens, leaving no room under the context limit of {maxContext} (GenerationOptions.MaxContext).", nameof(promptIds));
        }

        foreach (int id in promptIds)
        {
            if (id < 0 || id >= model.Config.VocabSize)
            {
                throw new ArgumentException($"The prompt holds token id {id}, outside the vocabulary of {model.Config.VocabSize}.", nameof(promptIds));
            }
        }

        if (options.MaxNewTokens == 0)
        {
            yield break;
        }

        var stopIds = options.StopTokenIds.ToHashSet();
        int cacheLength = Math.Min(maxContext, promptIds.Count + options.MaxNewTokens);
        using KvCache cache = model.CreateKvCache(cacheLength);
        using var sampler = new TokenSampler(options);
        long[] input = [.. promptIds.Select(id => (long)id)];
        for (int step = 0; step < options.MaxNewTokens; step++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            await Task.Yield();
            int next = Step(model, input, cache, sampler);
            if (stopIds.Contains(next))
            {
                yield break;
            }

            yield return next;
            if (promptIds.Count + step + 1 >= maxContext)
            {
                yield break;
            }

            input = [next];
        }
    }

    // Runs one forward pass and picks the next token. Grad mode and dispose scopes are per thread, so both are opened and
    // closed here and never held across an await.
    private static int Step(LlamaForCausalLM model, long[] input, KvCache cache, TokenSampler sampler)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        Tensor ids = torch.tensor(input, [1, input.Length], device: model.Device); // [1, T]
        Tensor logits = model.forward(ids, cache); // [1, T, V]
        Tensor last = logits[0, -1]; // [V]
        return sampler.Next(last);
    }
}

/// <summary>
/// Picks a token from logits per <see cref="GenerationOptions"/>: argmax when the temperature is 0, else temperature,
/// top-k and top-p filtering and a draw from its own CPU generator (seeded, so the draws do not depend on the device).
/// </summary>
public sealed class TokenSampler : IDisposable
{
    private readonly GenerationOptions _options;
    private readonly Generator? _generator;

    /// <summary>Creates a sampler; the generator is seeded from <see cref="GenerationOptions.Seed"/> (random when null).</summary>
    public TokenSampler(GenerationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        if (options.Temperature > 0)
        {
            ulong seed = options.Seed ?? (ulong)Random.Shared.NextInt64();
            _generator = new Generator(seed, torch.CPU);
        }
    }

    /// <summary>Chooses a token id from logits of one position, [V].</summary>
    public int Next(Tensor logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        using var scope = NewDisposeScope();
        if (_generator is null)
        {
            return (int)logits.argmax().item<long>();
        }

        Tensor scaled = logits.to_type(ScalarType.Float32) / _options.Temperature; // [V]
        Tensor filtered = SamplingFilters.TopP(SamplingFilters.TopK(scaled, _options.TopK), _options.TopP); // [V]
        Tensor probabilities = filtered.softmax(-1).cpu(); // [V]
        return (int)probabilities.multinomial(1, generator: _generator).item<long>();
    }

    /// <summary>Releases the generator.</summary>
    public void Dispose() => _generator?.Dispose();
}
