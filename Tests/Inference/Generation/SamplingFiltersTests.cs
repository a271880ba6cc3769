using ModelSurgery.Inference.Generation;
using TorchSharp;

namespace ModelSurgery.Tests.Generation;

public sealed class SamplingFiltersTests
{
    // Probabilities 0.15, 0.5, 0.05, 0.3 in shuffled order; sorted: 0.5 (1), 0.3 (3), 0.15 (0), 0.05 (2).
    private static readonly float[] Probabilities = [0.15f, 0.5f, 0.05f, 0.3f];

    private static bool[] Kept(torch.Tensor filtered) => [.. filtered.data<float>().ToArray().Select(float.IsFinite)];

    [TestCase(0.1, new[] { false, true, false, false })]
    [TestCase(0.5, new[] { false, true, false, false })]
    [TestCase(0.7, new[] { false, true, false, true })]
    [TestCase(0.9, new[] { true, true, false, true })]
    [TestCase(0.99, new[] { true, true, true, true })]
    [TestCase(1.0, new[] { true, true, true, true })]
    public void Top_p_keeps_the_smallest_most_likely_set_reaching_p(double p, bool[] expected)
    {
        using var logits = torch.tensor(Probabilities).log();
        using var filtered = SamplingFilters.TopP(logits, p);
        Assert.That(Kept(filtered), Is.EqualTo(expected));
    }

    [Test]
    public void Top_p_leaves_kept_logits_unchanged_and_works_on_batches()
    {
        using var logits = torch.tensor(Probabilities.Concat(Probabilities.Reverse()).ToArray(), [2, 4]).log();
        using var filtered = SamplingFilters.TopP(logits, 0.7);
        float[] values = filtered.data<float>().ToArray();
        bool[] expected = [false, true, false, true, true, false, true, false];
        Assert.That(values.Select(float.IsFinite), Is.EqualTo(expected));
        Assert.That(values[1], Is.EqualTo(MathF.Log(0.5f)).Within(1e-6));
    }

    [TestCase(1, new[] { false, true, false, false })]
    [TestCase(2, new[] { false, true, false, true })]
    [TestCase(3, new[] { true, true, false, true })]
    [TestCase(0, new[] { true, true, true, true })]
    [TestCase(9, new[] { true, true, true, true })]
    public void Top_k_keeps_the_k_largest(int k, bool[] expected)
    {
        using var logits = torch.tensor(Probabilities).log();
        using var filtered = SamplingFilters.TopK(logits, k);
        Assert.That(Kept(filtered), Is.EqualTo(expected));
    }

    [Test]
    public void Sampler_only_draws_kept_tokens_and_follows_the_seed()
    {
        using var logits = torch.tensor(Probabilities).log();
        var options = new GenerationOptions { Temperature = 1.0, TopP = 0.7, Seed = 42 };
        using var sampler = new TokenSampler(options);
        using var again = new TokenSampler(options);
        int[] draws = [.. Enumerable.Range(0, 200).Select(_ => sampler.Next(logits))];
        int[] repeat = [.. Enumerable.Range(0, 200).Select(_ => again.Next(logits))];
        int[] kept = [1, 3];
        Assert.That(draws.Distinct().Order(), Is.EqualTo(kept));
        Assert.That(repeat, Is.EqualTo(draws));
    }
}
