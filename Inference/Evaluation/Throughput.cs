using System.Diagnostics;
using ModelSurgery.Inference.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Evaluation;

/// <summary>Scoring speed at one batch size.</summary>
/// <param name="BatchSize">Requests per forward pass (1: batching off).</param>
/// <param name="Requests">Requests scored.</param>
/// <param name="ScoredTokens">Continuation tokens whose log-probabilities were summed.</param>
/// <param name="InputTokens">Tokens fed to the model, without padding.</param>
/// <param name="Seconds">Wall-clock time of the scoring.</param>
public sealed record ThroughputResult(int BatchSize, int Requests, long ScoredTokens, long InputTokens, double Seconds)
{
    /// <summary>Scored (continuation) tokens per second.</summary>
    public double ScoredTokensPerSecond => ScoredTokens / Seconds;

    /// <summary>Input tokens per second.</summary>
    public double InputTokensPerSecond => InputTokens / Seconds;
}

/// <summary>Measures log-likelihood scoring throughput, e.g. batching on against off.</summary>
public static class Throughput
{
    /// <summary>Scores the same requests once per batch size (after one untimed warm-up batch) and times each run.</summary>
    /// <param name="model">Causal LM.</param>
    /// <param name="tokenizer">Its tokenizer.</param>
    /// <param name="requests">Requests to score.</param>
    /// <param name="batchSizes">Batch sizes to compare, e.g. [1, 16].</param>
    /// <param name="options">Other scorer settings (its batch size is replaced).</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>One result per batch size.</returns>
    public static async Task<IReadOnlyList<ThroughputResult>> MeasureAsync(
        nn.Module<Tensor, Tensor> model,
        ModelTokenizer tokenizer,
        IReadOnlyList<LogLikelihoodRequest> requests,
        IReadOnlyList<int> batchSizes,
        EvaluationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(requests);
        ArgumentNullException.ThrowIfNull(batchSizes);
        if (requests.Count == 0 || batchSizes.Count == 0)
        {
            throw new ArgumentException("Throughput needs at least one request and one batch size.", nameof(requests));
        }

        options ??= new EvaluationOptions();
        var tokenizerScorer = new LogLikelihoodScorer(model, tokenizer, options);
        TokenizedRequest[] tokenized = [.. requests.Select(tokenizerScorer.Encode)];
        long scored = tokenized.Sum(r => (long)Math.Min(r.Continuation.Count, options.MaxLength));
        long input = tokenized.Sum(r => (long)Math.Min(r.Context.Count + r.Continuation.Count - 1, options.MaxLength));

        var results = new List<ThroughputResult>();
        foreach (int batchSize in batchSizes)
        {
            var scorer = new LogLikelihoodScorer(model, tokenizer, options with { BatchSize = batchSize });
            await scorer.ScoreTokensAsync(tokenized[..Math.Min(batchSize, tokenized.Length)], null, cancellationToken).ConfigureAwait(false);
            var watch = Stopwatch.StartNew();
            await scorer.ScoreTokensAsync(tokenized, null, cancellationToken).ConfigureAwait(false);
            watch.Stop();
            results.Add(new ThroughputResult(batchSize, tokenized.Length, scored, input, watch.Elapsed.TotalSeconds));
        }

        return results;
    }
}
