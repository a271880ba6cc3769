using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using static TorchSharp.torch;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Inference.Evaluation;

/// <summary>The perplexity of a model on a token sequence.</summary>
/// <param name="Perplexity">exp(<paramref name="MeanNll"/>).</param>
/// <param name="MeanNll">Mean negative log-likelihood per scored token, in nats.</param>
/// <param name="TokensScored">Tokens predicted (every token but the first).</param>
/// <param name="Context">Window length used.</param>
/// <param name="Stride">Window step used: the requested stride, capped at <paramref name="Context"/> - 1.</param>
public sealed record PerplexityResult(double Perplexity, double MeanNll, long TokensScored, int Context, int Stride);

/// <summary>Progress of a perplexity run.</summary>
/// <param name="Completed">Tokens scored so far.</param>
/// <param name="Total">Tokens that will be scored in all.</param>
/// <param name="RunningPerplexity">Perplexity over the tokens scored so far.</param>
public sealed record PerplexityProgress(long Completed, long? Total, double RunningPerplexity) : IProgressReport
{
    /// <summary>Always <see cref="ProgressUnit.Tokens"/>.</summary>
    public ProgressUnit Unit => ProgressUnit.Tokens;

    /// <summary>The running perplexity, e.g. <c>ppl 12.345</c>.</summary>
    public string Status => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"ppl {RunningPerplexity:F3}");
}

/// <summary>
/// Perplexity with Hugging Face's sliding-window method: windows of <c>context</c> tokens start every <c>stride</c>
/// tokens; each window scores only the tokens after the previous window's end, so every token (but the first) is scored
/// exactly once, with up to <c>context - stride</c> tokens of earlier text as context that is not rescored. Unlike the
/// Hugging Face recipe, a stride equal to the context is reduced by one, so the first token of each window is not
/// dropped from the score.
/// </summary>
public static partial class PerplexityEvaluator
{
    /// <summary>Evaluates <paramref name="model"/> on <paramref name="tokens"/>.</summary>
    /// <param name="model">The model (run under no_grad, batch of one).</param>
    /// <param name="tokens">The token ids; at least two.</param>
    /// <param name="context">Window length, at most the model's <c>max_position_embeddings</c>.</param>
    /// <param name="stride">Window step, 1..context; equal to <paramref name="context"/> means (almost) disjoint windows.</param>
    /// <param name="progress">Receives progress after each window.</param>
    /// <param name="logger">Receives a summary line.</param>
    /// <param name="cancellationToken">Checked between windows.</param>
    /// <exception cref="ArgumentException">Too few tokens, an id outside the vocabulary, or a bad context or stride.</exception>
    public static async Task<PerplexityResult> EvaluateAsync(
        LlamaForCausalLM model,
        IReadOnlyList<int> tokens,
        int context,
        int stride,
        IProgress<PerplexityProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokens);
        logger ??= NullLogger.Instance;
        int[] ids = tokens as int[] ?? [.. tokens];
        Validate(model, ids, context, stride);

        long total = ids.Length - 1;
        double nllSum = 0;
        long scored = 0;
        foreach ((int begin, int end, int firstTarget) in Windows(ids.Length, context, stride))
        {
            cancellationToken.ThrowIfCancellationRequested();
            await Task.Yield();
            nllSum += ScoreWindow(model, ids.AsSpan(begin, end - begin), firstTarget - begin);
            scored += end - firstTarget;
            progress?.Report(new PerplexityProgress(scored, total, Math.Exp(nllSum / scored)));
        }

        double meanNll = nllSum / scored;
        var result = new PerplexityResult(Math.Exp(meanNll), meanNll, scored, context, Math.Min(stride, context - 1));
        LogResult(logger, result.Perplexity, result.MeanNll, result.TokensScored, context, result.Stride);
        return result;
    }

    /// <summary>
    /// The windows the evaluator runs: tokens [Begin, End) go through the model and positions [FirstTarget, End) are
    /// scored; FirstTarget is the previous window's end (or 1), so the scored ranges tile 1..tokenCount-1 exactly once.
    /// Windows start every min(stride, context - 1) tokens so that every scored token has at least one token of context.
    /// </summary>
    public static IReadOnlyList<(int Begin, int End, int FirstTarget)> Windows(int tokenCount, int context, int stride)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tokenCount, 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(context, 2);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(stride);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(stride, context);
        // Each window's first token has nothing before it inside the window, so a window may add at most context - 1
        // new targets; a larger stride would leave tokens unscored (as Hugging Face's recipe does with stride = context).
        int step = Math.Min(stride, context - 1);
        var windows = new List<(int, int, int)>();
        int previousEnd = 1;
        for (int begin = 0; previousEnd < tokenCount; begin += step)
        {
            int end = Math.Min(begin + context, tokenCount);
            windows.Add((begin, end, previousEnd));
            previousEnd = end;
        }

        return windows;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Perplexity {Perplexity:F4} (mean NLL {MeanNll:F4}) over {Tokens} tokens, context {Context}, stride {Stride}.")]
    private static partial void LogResult(ILogger logger, double perplexity, double meanNll, long tokens, int context, int stride);

    // Sum of -log p(token[t] | tokens[..t]) over window positions firstTarget..end-1.
    private static double ScoreWindow(LlamaForCausalLM model, ReadOnlySpan<int> window, int firstTarget)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        long[] ids = new long[window.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            ids[i] = window[i];
        }

        Tensor input = torch.tensor(ids, [1, ids.Length], device: model.Device); // [1, W]
        Tensor logits = model.forward(input); // [1, W, V]
        long targets = ids.Length - firstTarget;
        Tensor predicting = logits[0].narrow(0, firstTarget - 1, targets); // [N, V]
        Tensor targetIds = input[0].narrow(0, firstTarget, targets).unsqueeze(1); // [N, 1]
        Tensor logProbabilities = predicting.log_softmax(-1).gather(1, targetIds); // [N, 1]
        return -logProbabilities.to_type(ScalarType.Float64).sum().item<double>();
    }

    private static void Validate(LlamaForCausalLM model, ReadOnlySpan<int> tokens, int context, int stride)
    {
        if (tokens.Length < 2)
        {
            throw new ArgumentException($"Perplexity needs at least 2 tokens, got {tokens.Length}.", nameof(tokens));
        }

        if (context < 2 || context > model.Config.MaxPositionEmbeddings)
        {
            throw new ArgumentException($"Perplexity context must be in 2..{model.Config.MaxPositionEmbeddings} (max_position_embeddings), got {context}.", nameof(context));
        }

        if (stride < 1 || stride > context)
        {
            throw new ArgumentException($"Perplexity stride must be in 1..context ({context}), got {stride}.", nameof(stride));
        }

        foreach (int id in tokens)
        {
            if (id < 0 || id >= model.Config.VocabSize)
            {
                throw new ArgumentException($"Token id {id} is outside the vocabulary of {model.Config.VocabSize}.", nameof(tokens));
            }
        }
    }
}
