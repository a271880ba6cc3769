using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Reporting;

// Expected token lists are written inline next to the arithmetic that explains them.
#pragma warning disable CA1861

namespace ModelSurgery.Tests.Evaluation;

public sealed class LogLikelihoodScorerTests
{
    private static readonly CharTokenizer Tokenizer = new(StandIns.Alphabet);

    private static LogLikelihoodScorer Scorer(BigramLm model, int batchSize = 1, int maxLength = 64) =>
        new(model, Tokenizer, new EvaluationOptions { BatchSize = batchSize, MaxLength = maxLength, PrefixTokenId = CharTokenizer.Bos });

    [Test]
    public void Trailing_space_of_the_context_moves_to_the_continuation()
    {
        var scorer = Scorer(new BigramLm(StandIns.Probabilities));
        TokenizedRequest encoded = scorer.Encode(new LogLikelihoodRequest("ab  ", "a"));

        // ' ' = 1, 'a' = 2, 'b' = 3: context "ab", continuation "  a".
        Assert.That(encoded.Context, Is.EqualTo(new[] { 2, 3 }));
        Assert.That(encoded.Continuation, Is.EqualTo(new[] { 1, 1, 2 }));
    }

    [Test]
    public void Empty_context_becomes_the_prefix_token_and_add_bos_prepends_it()
    {
        var scorer = Scorer(new BigramLm(StandIns.Probabilities));
        Assert.That(scorer.Encode(new LogLikelihoodRequest(string.Empty, "ab")), Is.EqualTo(new TokenizedRequest([0], [2, 3])).Using<TokenizedRequest>(SameTokens));

        var withBos = new LogLikelihoodScorer(new BigramLm(StandIns.Probabilities), Tokenizer, new EvaluationOptions { PrefixTokenId = 0, AddBosToken = true });
        TokenizedRequest encoded = withBos.Encode(new LogLikelihoodRequest("a", " b"));
        Assert.That(encoded.Context, Is.EqualTo(new[] { 0, 2 }));
        Assert.That(encoded.Continuation, Is.EqualTo(new[] { 1, 3 }));
    }

    [Test]
    public void Empty_context_without_a_prefix_token_is_a_clear_error()
    {
        var scorer = new LogLikelihoodScorer(new BigramLm(StandIns.Probabilities), Tokenizer);
        var ex = Assert.Throws<ArgumentException>(() => scorer.Encode(new LogLikelihoodRequest(string.Empty, "a")));
        Assert.That(ex!.Message, Does.Contain("PrefixTokenId"));
    }

    [Test]
    public async Task Log_likelihoods_match_hand_computed_bigram_values()
    {
        var scorer = Scorer(new BigramLm(StandIns.Probabilities));
        IReadOnlyList<LogLikelihoodResult> results = await scorer.ScoreAsync(
        [
            new LogLikelihoodRequest("a ", "b"),  // context "a", continuation " b": P(' '|a) P(b|' ') = 0.4 * 0.3
            new LogLikelihoodRequest(string.Empty, "ab"), // BOS then "ab": P(a|BOS) P(b|a) = 0.3 * 0.3
            new LogLikelihoodRequest("b", " a"), // P(' '|b) P(a|' ') = 0.6 * 0.5
        ]);

        Assert.That(results[0].LogLikelihood, Is.EqualTo(Math.Log(0.4) + Math.Log(0.3)).Within(1e-6));
        Assert.That(results[1].LogLikelihood, Is.EqualTo(Math.Log(0.3) + Math.Log(0.3)).Within(1e-6));
        Assert.That(results[2].LogLikelihood, Is.EqualTo(Math.Log(0.6) + Math.Log(0.5)).Within(1e-6));

        // Greedy: after 'a' the argmax is ' ' (0.4) but after ' ' it is 'a' (0.5), not 'b'; after BOS it is 'b', not 'a';
        // after 'b' it is ' ' (0.6) and after ' ' it is 'a' (0.5): all greedy.
        Assert.That(results.Select(r => r.IsGreedy), Is.EqualTo(new[] { false, false, true }));
        Assert.That(results.Select(r => r.ContinuationTokens), Is.EqualTo(new[] { 2, 2, 2 }));
    }

    [Test]
    public async Task Batching_on_and_off_give_identical_results_in_request_order()
    {
        LogLikelihoodRequest[] requests =
        [
            new("a", " b"), new("ab ab", " a"), new(string.Empty, "b"), new("b a b", " ab"), new("a", " a"), new("ba", "b ab a"), new("a b", " b"),
        ];
        IReadOnlyList<LogLikelihoodResult> single = await Scorer(new BigramLm(StandIns.Probabilities), batchSize: 1).ScoreAsync(requests);
        var batchedModel = new BigramLm(StandIns.Probabilities);
        var reports = new List<LogLikelihoodProgress>();
        IReadOnlyList<LogLikelihoodResult> batched = await Scorer(batchedModel, batchSize: 3).ScoreAsync(requests, new SynchronousProgress<LogLikelihoodProgress>(reports.Add));

        Assert.That(batched, Is.EqualTo(single));
        Assert.That(batchedModel.SeenShapes.Select(s => s[0]), Is.EqualTo(new long[] { 3, 3, 1 }));
        Assert.That(reports.Select(r => (r.Completed, r.Total)), Is.EqualTo(new (long, long?)[] { (3, 7), (6, 7), (7, 7) }), "one report per batch: requests scored, of all requests");

        // Longest first: the first batch is padded to the longest input, "ba" + "b ab a" minus the last token = 7.
        Assert.That(batchedModel.SeenShapes[0][1], Is.EqualTo(7));
        Assert.That(single[1].LogLikelihood, Is.EqualTo(Math.Log(0.6) + Math.Log(0.5)).Within(1e-6));
    }

    [Test]
    public async Task Long_inputs_are_truncated_on_the_left_to_the_model_length()
    {
        var model = new BigramLm(StandIns.Probabilities);
        IReadOnlyList<LogLikelihoodResult> results = await Scorer(model, maxLength: 3).ScoreAsync([new LogLikelihoodRequest("ab ab ab", " b")]);

        // Input is (context + continuation)[-(3 + 1):][:-1] = "b a" (3 tokens); a bigram only needs the last context token.
        Assert.That(model.SeenShapes.Single(), Is.EqualTo(new long[] { 1, 3 }));
        Assert.That(results[0].LogLikelihood, Is.EqualTo(Math.Log(0.6) + Math.Log(0.3)).Within(1e-6));
    }

    [Test]
    public async Task Bits_per_byte_sums_every_token_once_whatever_the_windows()
    {
        const string text = "ab ab";

        // BOS->a 0.3, a->b 0.3, b->' ' 0.6, ' '->a 0.5, a->b 0.3; 5 bytes.
        double nll = -(Math.Log(0.3) + Math.Log(0.3) + Math.Log(0.6) + Math.Log(0.5) + Math.Log(0.3));
        var disjointModel = new BigramLm(StandIns.Probabilities);
        var disjoint = await new LogLikelihoodScorer(disjointModel, Tokenizer, new EvaluationOptions { MaxLength = 2, PrefixTokenId = 0 }).ScoreTextAsync(text);
        var slidingModel = new BigramLm(StandIns.Probabilities);
        var sliding = await new LogLikelihoodScorer(slidingModel, Tokenizer, new EvaluationOptions { MaxLength = 8, TextContextLength = 3, TextStride = 1, PrefixTokenId = 0, BatchSize = 2 }).ScoreTextAsync(text);

        Assert.That(disjoint.TotalNllNats, Is.EqualTo(nll).Within(1e-5));
        Assert.That(sliding.TotalNllNats, Is.EqualTo(nll).Within(1e-5));
        Assert.That(disjoint.BitsPerByte, Is.EqualTo(nll / (Math.Log(2) * 5)).Within(1e-6));
        Assert.That(disjoint.TokenPerplexity, Is.EqualTo(Math.Exp(nll / 5)).Within(1e-5));
        Assert.That((disjoint.Bytes, disjoint.Tokens, disjoint.ContextLength, disjoint.Stride), Is.EqualTo((5L, 5, 2, 2)));
        Assert.That((sliding.ContextLength, sliding.Stride), Is.EqualTo((3, 1)));

        // Disjoint: windows of 2, 2, 1 new tokens. Sliding: the first window scores 3 tokens, then one per window.
        Assert.That(disjointModel.SeenShapes.Sum(s => s[0]), Is.EqualTo(3));
        Assert.That(slidingModel.SeenShapes.Sum(s => s[0]), Is.EqualTo(3));
        Assert.That(slidingModel.SeenShapes.Max(s => s[1]), Is.EqualTo(3));
    }

    [Test]
    public async Task Bits_per_byte_counts_utf8_bytes_not_characters()
    {
        var tokenizer = new CharTokenizer("é");
        var model = new BigramLm(new double[,] { { 0.5, 0.5 }, { 0.5, 0.5 } });
        var result = await new LogLikelihoodScorer(model, tokenizer, new EvaluationOptions { PrefixTokenId = 0 }).ScoreTextAsync("éé");

        // Two tokens of probability 0.5 over four UTF-8 bytes: 2 bits / 4 bytes.
        Assert.That(result.Bytes, Is.EqualTo(4));
        Assert.That(result.BitsPerByte, Is.EqualTo(0.5).Within(1e-6));
    }

    private static bool SameTokens(TokenizedRequest a, TokenizedRequest b) =>
        a.Context.SequenceEqual(b.Context) && a.Continuation.SequenceEqual(b.Continuation);
}
