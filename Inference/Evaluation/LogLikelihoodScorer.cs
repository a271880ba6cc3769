using System.Text;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Reporting;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Evaluation;

/// <summary>A log-likelihood request: how likely is <paramref name="Continuation"/> after <paramref name="Context"/>.</summary>
/// <param name="Context">Prompt text (may be empty).</param>
/// <param name="Continuation">Text whose log-probability is measured, usually starting with the target delimiter " ".</param>
public sealed record LogLikelihoodRequest(string Context, string Continuation);

/// <summary>A request after tokenisation.</summary>
/// <param name="Context">Context token ids (never empty: an empty context becomes the prefix token).</param>
/// <param name="Continuation">Continuation token ids.</param>
public sealed record TokenizedRequest(IReadOnlyList<int> Context, IReadOnlyList<int> Continuation);

/// <summary>The answer to a <see cref="LogLikelihoodRequest"/>.</summary>
/// <param name="LogLikelihood">Sum over the continuation tokens of log P(token | preceding tokens), natural log.</param>
/// <param name="IsGreedy">True when every continuation token is the model's argmax prediction.</param>
/// <param name="ContinuationTokens">How many tokens were scored.</param>
public sealed record LogLikelihoodResult(double LogLikelihood, bool IsGreedy, int ContinuationTokens);

/// <summary>Requests scored so far by <see cref="LogLikelihoodScorer"/>, reported after each batch.</summary>
/// <param name="Completed">Requests scored.</param>
/// <param name="RequestCount">Requests in all.</param>
public sealed record LogLikelihoodProgress(long Completed, long RequestCount) : IProgressReport
{
    /// <summary>The requests in all (<see cref="RequestCount"/>).</summary>
    public long? Total => RequestCount;

    /// <summary>Always <see cref="ProgressUnit.Requests"/>.</summary>
    public ProgressUnit Unit => ProgressUnit.Requests;

    /// <summary>Always null.</summary>
    public string? Status => null;
}

/// <summary>The result of scoring a text with sliding windows.</summary>
/// <param name="TotalNllNats">Sum of -log P(token) over all tokens of the text, natural log.</param>
/// <param name="Bytes">UTF-8 byte count of the text.</param>
/// <param name="Tokens">Tokens scored (every token of the text).</param>
/// <param name="ContextLength">Tokens per window.</param>
/// <param name="Stride">New tokens scored per window after the first.</param>
public sealed record BitsPerByteResult(double TotalNllNats, long Bytes, int Tokens, int ContextLength, int Stride)
{
    /// <summary>Total NLL / (ln 2 * bytes): comparable across tokenizers.</summary>
    public double BitsPerByte => Bytes == 0 ? double.NaN : TotalNllNats / (Math.Log(2) * Bytes);

    /// <summary>exp(NLL / tokens): only comparable between models sharing a tokenizer.</summary>
    public double TokenPerplexity => Tokens == 0 ? double.NaN : Math.Exp(TotalNllNats / Tokens);
}

/// <summary>
/// Computes log P(continuation | context) the way lm-evaluation-harness's HF backend does: trailing whitespace of the
/// context moves to the continuation, context+continuation is encoded whole and split after the context's tokens,
/// an empty context becomes the prefix (BOS) token, inputs are truncated on the left to the model length, requests
/// are sorted longest first, batched and right-padded.
/// </summary>
public sealed class LogLikelihoodScorer
{
    private readonly nn.Module<Tensor, Tensor> _model;
    private readonly ModelTokenizer _tokenizer;
    private readonly EvaluationOptions _options;

    /// <summary>Creates a scorer.</summary>
    /// <param name="model">Causal LM: input ids [B, T] int64 to logits [B, T, V].</param>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="options">Batch size, model length and prefix token; defaults when null.</param>
    public LogLikelihoodScorer(nn.Module<Tensor, Tensor> model, ModelTokenizer tokenizer, EvaluationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        _options = options ?? new EvaluationOptions();
        _options.Validate();
        _model = model;
        _tokenizer = tokenizer;
    }

    /// <summary>The options in use.</summary>
    public EvaluationOptions Options => _options;

    /// <summary>
    /// Token used for empty contexts and optional BOS: the option, else the tokenizer's BOS, else its EOS (the
    /// harness's prefix_token_id; GPT-2: &lt;|endoftext|&gt;), else null.
    /// </summary>
    public int? PrefixTokenId => _options.PrefixTokenId ?? _tokenizer.BosId ?? _tokenizer.EosId;

    /// <summary>Encodes text without special tokens (the harness's tok_encode with add_special_tokens=False).</summary>
    /// <param name="text">Text to encode.</param>
    /// <returns>Token ids.</returns>
    public IReadOnlyList<int> EncodeText(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return _tokenizer.Encode(text);
    }

    /// <summary>Tokenises a request exactly as the harness's <c>_encode_pair</c> plus its empty-context rule.</summary>
    /// <param name="request">The request.</param>
    /// <returns>Context and continuation token ids.</returns>
    public TokenizedRequest Encode(LogLikelihoodRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        string context = request.Context;
        string continuation = request.Continuation;
        if (context.Length == 0)
        {
            int prefix = PrefixTokenId ?? throw new ArgumentException(
                "A request has an empty context but the tokenizer has no BOS/EOS token; set EvaluationOptions.PrefixTokenId.", nameof(request));
            return new TokenizedRequest([prefix], EncodeText(continuation));
        }

        // Trailing whitespace of the context belongs to the continuation (" yes", not "Answer: " + "yes").
        string trimmed = context.TrimEnd();
        if (trimmed.Length < context.Length)
        {
            continuation = context[trimmed.Length..] + continuation;
            context = trimmed;
        }

        IReadOnlyList<int> whole = EncodeText(context + continuation);
        List<int> contextIds = [.. EncodeText(context)];
        List<int> continuationIds = [.. whole.Skip(contextIds.Count)];
        if (_options.AddBosToken)
        {
            contextIds.Insert(0, PrefixTokenId ?? throw new ArgumentException(
                "EvaluationOptions.AddBosToken is set but the tokenizer has no BOS token; set EvaluationOptions.PrefixTokenId.", nameof(request)));
        }

        return new TokenizedRequest(contextIds, continuationIds);
    }

    /// <summary>Scores requests; results are in request order and do not depend on the batch size.</summary>
    /// <param name="requests">The requests.</param>
    /// <param name="progress">Receives the requests scored so far after each batch.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>One result per request.</returns>
    public Task<IReadOnlyList<LogLikelihoodResult>> ScoreAsync(IReadOnlyList<LogLikelihoodRequest> requests, IProgress<LogLikelihoodProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(requests);
        TokenizedRequest[] tokenized = [.. requests.Select(Encode)];
        return ScoreTokensAsync(tokenized, progress, cancellationToken);
    }

    /// <summary>Scores already tokenised requests.</summary>
    /// <param name="requests">The requests; each continuation must have at least one token.</param>
    /// <param name="progress">Receives the requests scored so far after each batch.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>One result per request.</returns>
    public Task<IReadOnlyList<LogLikelihoodResult>> ScoreTokensAsync(IReadOnlyList<TokenizedRequest> requests, IProgress<LogLikelihoodProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(requests);
        var items = new ScoringItem[requests.Count];
        for (int i = 0; i < requests.Count; i++)
        {
            items[i] = ToItem(requests[i], i);
        }

        return Task.Run<IReadOnlyList<LogLikelihoodResult>>(() =>
        {
            (double Sum, bool Greedy)[] scored = ScoreItems(items, progress, cancellationToken);
            return [.. scored.Select((s, i) => new LogLikelihoodResult(s.Sum, s.Greedy, items[i].Target.Length))];
        }, cancellationToken);
    }

    /// <summary>
    /// Scores a whole text with sliding windows (the harness's loglikelihood_rolling when stride equals the context
    /// length): the first window predicts the first token from the prefix token, each later window scores
    /// <c>stride</c> new tokens with up to <c>contextLength</c> tokens of input.
    /// </summary>
    /// <param name="text">The text.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>Total NLL, bytes, tokens, and the window settings used.</returns>
    public Task<BitsPerByteResult> ScoreTextAsync(string text, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(text);
        int contextLength = _options.TextContextLength ?? _options.MaxLength;
        int stride = _options.TextStride ?? contextLength;
        if (contextLength < 1 || contextLength > _options.MaxLength)
        {
            throw new ArgumentException($"TextContextLength must be between 1 and MaxLength ({_options.MaxLength}) but is {contextLength}.", nameof(text));
        }

        if (stride < 1 || stride > contextLength)
        {
            throw new ArgumentException($"TextStride must be between 1 and the context length ({contextLength}) but is {stride}.", nameof(text));
        }

        int prefix = PrefixTokenId ?? throw new ArgumentException(
            "Scoring a text needs a BOS/EOS token to predict the first token from; set EvaluationOptions.PrefixTokenId.", nameof(text));
        int[] tokens = [.. EncodeText(text)];
        long bytes = Encoding.UTF8.GetByteCount(text);

        // x[0] is the prefix token, x[j + 1] = tokens[j]; token j is predicted from x[.. j + 1].
        int[] x = [prefix, .. tokens];
        var items = new List<ScoringItem>();
        int start = 0;
        while (start < tokens.Length)
        {
            int end = Math.Min(start + (start == 0 ? contextLength : stride), tokens.Length);
            int inputStart = Math.Max(0, end - contextLength);
            items.Add(new ScoringItem(x[inputStart..end], tokens[start..end], items.Count));
            start = end;
        }

        return Task.Run(() =>
        {
            (double Sum, bool Greedy)[] scored = ScoreItems([.. items], null, cancellationToken);
            return new BitsPerByteResult(-scored.Sum(s => s.Sum), bytes, tokens.Length, contextLength, stride);
        }, cancellationToken);
    }

    private static int? TokenId(IReadOnlyDictionary<string, int>? vocabulary, string? token) =>
        token is not null && vocabulary is not null && vocabulary.TryGetValue(token, out int id) ? id : null;

    private ScoringItem ToItem(TokenizedRequest request, int index)
    {
        if (request.Context.Count == 0 || request.Continuation.Count == 0)
        {
            throw new ArgumentException($"Request {index} has an empty context or continuation after tokenisation.", nameof(request));
        }

        // The harness feeds (context + continuation)[-(max_length + 1):][:-1] and scores the last |continuation| positions.
        int[] all = [.. request.Context, .. request.Continuation];
        int[] target = [.. request.Continuation];
        if (target.Length > _options.MaxLength)
        {
            target = target[^_options.MaxLength..];
        }

        int from = Math.Max(0, all.Length - (_options.MaxLength + 1));
        return new ScoringItem(all[from..^1], target, index);
    }

    /// <summary>Scores items whose targets are predicted at the last positions of their inputs.</summary>
    private (double Sum, bool Greedy)[] ScoreItems(ScoringItem[] items, IProgress<LogLikelihoodProgress>? progress, CancellationToken cancellationToken)
    {
        var results = new (double, bool)[items.Length];

        // Longest first (ties by tokens), as the harness's collator orders requests.
        ScoringItem[] ordered = [.. items.OrderByDescending(i => i.Input.Length).ThenBy(i => i, TokenOrder.Instance)];
        Device device = _model.parameters().FirstOrDefault()?.device ?? CPU;
        bool wasTraining = _model.training;
        _model.eval();
        try
        {
            using var noGrad = no_grad();
            int done = 0;
            foreach (ScoringItem[] batch in ordered.Chunk(_options.BatchSize))
            {
                cancellationToken.ThrowIfCancellationRequested();
                ScoreBatch(batch, device, results);
                done += batch.Length;
                progress?.Report(new LogLikelihoodProgress(done, items.Length));
            }
        }
        finally
        {
            _model.train(wasTraining);
        }

        return results;
    }

    private void ScoreBatch(ScoringItem[] batch, Device device, (double, bool)[] results)
    {
        using var scope = NewDisposeScope();
        int width = batch.Max(i => i.Input.Length);

        // Logits are needed only from the first target position of the batch on: [first, width).
        int first = batch.Min(i => i.Input.Length - i.Target.Length);
        int scoredWidth = width - first;
        var input = new long[batch.Length * width];
        var target = new long[batch.Length * scoredWidth];
        for (int b = 0; b < batch.Length; b++)
        {
            ScoringItem item = batch[b];
            int offset = item.Input.Length - item.Target.Length - first;
            for (int t = 0; t < item.Input.Length; t++)
            {
                input[(b * width) + t] = item.Input[t];
            }

            for (int t = 0; t < item.Target.Length; t++)
            {
                target[(b * scoredWidth) + offset + t] = item.Target[t];
            }
        }

        // Right padding with token 0: a causal model's earlier positions never see it, so no padding mask is needed, and a
        // sliding window (which only hides keys further back) needs none either; real tokens keep positions 0..n-1.
        Tensor inputIds = tensor(input, [batch.Length, width], ScalarType.Int64, device);        // [B, T]
        Tensor targets = tensor(target, [batch.Length, scoredWidth], ScalarType.Int64, device);  // [B, S]
        Tensor logits = _model is LlamaForCausalLM llama
            ? llama.LogitsFrom(inputIds, first)                                                    // [B, S, V]
            : _model.forward(inputIds)[.., first..];                                              // [B, S, V]
        Tensor logProbs = nn.functional.log_softmax(logits.to_type(ScalarType.Float32), -1);     // [B, S, V]
        Tensor tokenLogProbs = logProbs.gather(-1, targets.unsqueeze(-1)).squeeze(-1);           // [B, S]
        Tensor greedy = logProbs.argmax(-1).eq(targets);                                         // [B, S]
        float[] logP = tokenLogProbs.cpu().data<float>().ToArray();
        bool[] isGreedy = greedy.cpu().data<bool>().ToArray();

        for (int b = 0; b < batch.Length; b++)
        {
            ScoringItem item = batch[b];
            int offset = item.Input.Length - item.Target.Length - first;
            double sum = 0;
            bool all = true;
            for (int t = 0; t < item.Target.Length; t++)
            {
                sum += logP[(b * scoredWidth) + offset + t];
                all &= isGreedy[(b * scoredWidth) + offset + t];
            }

            results[item.Index] = (sum, all);
        }
    }

    private sealed record ScoringItem(int[] Input, int[] Target, int Index);

    private sealed class TokenOrder : IComparer<ScoringItem>
    {
        public static readonly TokenOrder Instance = new();

        public int Compare(ScoringItem? x, ScoringItem? y)
        {
            int[] a = [.. x!.Input, .. x.Target];
            int[] b = [.. y!.Input, .. y.Target];
            return a.AsSpan().SequenceCompareTo(b);
        }
    }
}
