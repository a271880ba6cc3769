using System.Diagnostics;
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
        await foreach (int id in GenerateAsync(model, promptIds, options, null, cancellationToken).ConfigureAwait(false))
        {
            yield return id;
        }
    }

    /// <summary>
    /// As <see cref="GenerateAsync(LlamaForCausalLM, IReadOnlyList{int}, GenerationOptions, CancellationToken)"/>, timing
    /// the prompt pass and the decoding steps into <paramref name="statistics"/> (when given). Only the model's own work is
    /// timed, not the time the caller spends between tokens.
    /// </summary>
    public static async IAsyncEnumerable<int> GenerateAsync(
        LlamaForCausalLM model,
        IReadOnlyList<int> promptIds,
        GenerationOptions options,
        GenerationStatistics? statistics,
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
            long started = Stopwatch.GetTimestamp();
            int next = Step(model, input, cache, sampler);
            statistics?.Record(input.Length, step == 0, Stopwatch.GetElapsedTime(started));
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
        Tensor logits = model.NextTokenLogits(ids, cache); // [1, V]
        return sampler.NextOfRow(logits); // the only host sync of a step: the chosen id
    }
}

/// <summary>
/// Throughput of one <see cref="TextGenerator"/> run, reported as llama.cpp and llama2.c's run.c do: the prompt pass
/// (prefill, which also picks the first new token) apart from the one-token decoding steps that follow.
/// </summary>
public sealed class GenerationStatistics
{
    /// <summary>Tokens of the prompt pass.</summary>
    public int PromptTokens { get; private set; }

    /// <summary>Time of the prompt pass, sampling the first token included.</summary>
    public TimeSpan PromptTime { get; private set; }

    /// <summary>One-token decoding steps after the prompt pass.</summary>
    public int DecodeTokens { get; private set; }

    /// <summary>Time of the decoding steps together.</summary>
    public TimeSpan DecodeTime { get; private set; }

    /// <summary>Prompt tokens per second (0 before the prompt pass).</summary>
    public double PromptTokensPerSecond => PromptTime > TimeSpan.Zero ? PromptTokens / PromptTime.TotalSeconds : 0;

    /// <summary>Decoded tokens per second (0 before the first decoding step).</summary>
    public double DecodeTokensPerSecond => DecodeTime > TimeSpan.Zero ? DecodeTokens / DecodeTime.TotalSeconds : 0;

    internal void Record(int tokens, bool prompt, TimeSpan elapsed)
    {
        if (prompt)
        {
            PromptTokens += tokens;
            PromptTime += elapsed;
        }
        else
        {
            DecodeTokens += tokens;
            DecodeTime += elapsed;
        }
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

    /// <summary>
    /// As <see cref="Next"/> for logits [1, V]; greedy choice over a contiguous fp32 CPU row is made in managed code, as
    /// <c>argmax</c> chooses (the first largest value, or the first NaN), without the tensors of an index and an argmax.
    /// </summary>
    internal unsafe int NextOfRow(Tensor logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        if (_generator is not null || logits.dtype != ScalarType.Float32 || logits.device_type != DeviceType.CPU
            || logits.dim() != 2 || logits.size(0) != 1 || logits.size(1) == 0 || !logits.is_contiguous())
        {
            using var scope = NewDisposeScope();
            return Next(logits[0]);
        }

        return ArgMax(new ReadOnlySpan<float>(Checkpoints.TensorMemory.DataPointer(logits), checked((int)logits.size(1))));
    }

    /// <summary>Index of the first largest value, or of the first NaN (which LibTorch's argmax takes as the largest).</summary>
    internal static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 0; i < values.Length; i++)
        {
            if (float.IsNaN(values[i]))
            {
                return i;
            }

            if (values[i] > values[best])
            {
                best = i;
            }
        }

        return best;
    }

    /// <summary>Releases the generator.</summary>
    public void Dispose() => _generator?.Dispose();
}
