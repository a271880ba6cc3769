using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Tests.Modeling;
using TorchSharp;

namespace ModelSurgery.Tests.Evaluation;

public sealed class PerplexityTests
{
    private static int[] Tokens(int count, int seed) => [.. TinyModels.RandomIds(count, 50, seed).Select(id => (int)id)];

    [Test]
    public async Task Zero_head_gives_uniform_predictions_and_perplexity_equal_to_the_vocabulary()
    {
        using var model = TinyModels.Create(TinyModels.Config(tied: false));
        using (torch.no_grad())
        {
            model.LmHead!.Weight.zero_();
        }

        PerplexityResult result = await PerplexityEvaluator.EvaluateAsync(model, Tokens(40, 1), context: 16, stride: 8);
        Assert.That(result.Perplexity, Is.EqualTo(50.0).Within(1e-3));
        Assert.That(result.MeanNll, Is.EqualTo(Math.Log(50)).Within(1e-5));
        Assert.That(result.TokensScored, Is.EqualTo(39));
        Assert.That((result.Context, result.Stride), Is.EqualTo((16, 8)));
        PerplexityResult disjoint = await PerplexityEvaluator.EvaluateAsync(model, Tokens(40, 1), context: 16, stride: 16);
        Assert.That(disjoint.Stride, Is.EqualTo(15), "a window's first token only gives context");
    }

    [TestCase(23, 8, 3)]
    [TestCase(23, 8, 8)]
    [TestCase(8, 8, 1)]
    [TestCase(50, 16, 5)]
    public void Windows_score_every_token_after_the_first_exactly_once(int count, int context, int stride)
    {
        var windows = PerplexityEvaluator.Windows(count, context, stride);
        var scored = windows.SelectMany(w => Enumerable.Range(w.FirstTarget, w.End - w.FirstTarget)).ToList();
        Assert.That(scored, Is.EqualTo(Enumerable.Range(1, count - 1)));
        Assert.That(windows.All(w => w.End - w.Begin <= context && w.Begin < w.FirstTarget), Is.True);
        Assert.That(windows.Select(w => w.Begin), Is.Ordered.Ascending);
    }

    [Test]
    public void Disjoint_windows_keep_one_token_of_context_so_no_token_is_skipped()
    {
        // Context 8, stride 8 on 20 tokens: windows start every 7 tokens; token 8 is scored with token 7 as context.
        Assert.That(PerplexityEvaluator.Windows(20, 8, 8), Is.EqualTo(new[] { (0, 8, 1), (7, 15, 8), (14, 20, 15) }));
    }

    [Test]
    public void Overlapping_windows_score_only_the_new_tokens()
    {
        // Context 8, stride 3 on 14 tokens: [0,8) scores 1..7, [3,11) scores 8..10, [6,14) scores 11..13.
        Assert.That(PerplexityEvaluator.Windows(14, 8, 3), Is.EqualTo(new[] { (0, 8, 1), (3, 11, 8), (6, 14, 11) }));
    }

    [Test]
    public async Task One_window_covering_the_text_equals_the_mean_nll_of_a_full_forward()
    {
        using var model = TinyModels.Create(TinyModels.Config(), seed: 9);
        int[] tokens = Tokens(20, 2);
        double expected;
        using (torch.no_grad())
        using (var scope = torch.NewDisposeScope())
        {
            var logProbabilities = model.forward(TinyModels.Ids([.. tokens.Select(t => (long)t)]))[0].log_softmax(-1); // [T, V]
            expected = -Enumerable.Range(1, tokens.Length - 1).Average(t => logProbabilities[t - 1, tokens[t]].item<float>());
        }

        PerplexityResult result = await PerplexityEvaluator.EvaluateAsync(model, tokens, context: 32, stride: 32);
        Assert.That(result.MeanNll, Is.EqualTo(expected).Within(1e-5));
        Assert.That(result.Perplexity, Is.EqualTo(Math.Exp(expected)).Within(1e-4));
    }

    [Test]
    public async Task Longer_overlap_gives_different_but_complete_scoring_and_reports_progress()
    {
        using var model = TinyModels.Create(TinyModels.Config(), seed: 10);
        int[] tokens = Tokens(30, 3);
        var reports = new List<PerplexityProgress>();
        var progress = new SynchronousProgress<PerplexityProgress>(reports.Add);

        PerplexityResult disjoint = await PerplexityEvaluator.EvaluateAsync(model, tokens, context: 8, stride: 8);
        PerplexityResult sliding = await PerplexityEvaluator.EvaluateAsync(model, tokens.ToList(), context: 8, stride: 2, progress);

        Assert.That(sliding.TokensScored, Is.EqualTo(29));
        Assert.That(disjoint.TokensScored, Is.EqualTo(29));
        Assert.That(sliding.MeanNll, Is.Not.EqualTo(disjoint.MeanNll).Within(1e-9), "overlap changes the context tokens see");
        Assert.That(reports, Has.Count.EqualTo(PerplexityEvaluator.Windows(30, 8, 2).Count));
        Assert.That(reports[^1].Completed, Is.EqualTo(29));
        Assert.That(reports[^1].RunningPerplexity, Is.EqualTo(sliding.Perplexity).Within(1e-9));
    }

    [Test]
    public void Bad_arguments_name_the_problem()
    {
        using var model = TinyModels.Create(TinyModels.Config());
        Assert.That(Assert.ThrowsAsync<ArgumentException>(() => PerplexityEvaluator.EvaluateAsync(model, [1], 8, 8))!.Message, Does.Contain("at least 2 tokens"));
        Assert.That(Assert.ThrowsAsync<ArgumentException>(() => PerplexityEvaluator.EvaluateAsync(model, [1, 2, 3], 8, 9))!.Message, Does.Contain("stride"));
        Assert.That(Assert.ThrowsAsync<ArgumentException>(() => PerplexityEvaluator.EvaluateAsync(model, [1, 2, 3], 1024, 8))!.Message, Does.Contain("context"));
        Assert.That(Assert.ThrowsAsync<ArgumentException>(() => PerplexityEvaluator.EvaluateAsync(model, [1, 99], 8, 8))!.Message, Does.Contain("99"));
    }
}
