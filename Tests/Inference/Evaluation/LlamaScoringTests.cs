using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Modeling;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Evaluation;

/// <summary>Scoring a real Llama module, whose head runs only where targets are.</summary>
public sealed class LlamaScoringTests
{
    private static LlamaForCausalLM TinyLlama()
    {
        var config = new LlamaConfig
        {
            ModelType = "llama",
            HiddenSize = 16,
            IntermediateSize = 32,
            NumHiddenLayers = 2,
            NumAttentionHeads = 4,
            NumKeyValueHeads = 2,
            VocabSize = 40,
            MaxPositionEmbeddings = 64,
        };
        var model = new LlamaForCausalLM(config);
        model.InitializeWeights(seed: 11);
        return model;
    }

    [Test]
    public void LogitsFrom_equals_the_tail_of_the_full_logits()
    {
        using var model = TinyLlama();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Tensor ids = randint(40, [3, 12], dtype: ScalarType.Int64, generator: new Generator(5)); // [B, T]

        Tensor full = model.forward(ids); // [B, T, V]
        Tensor tail = model.LogitsFrom(ids, 7); // [B, 5, V]

        Assert.That(tail.shape, Is.EqualTo(new long[] { 3, 5, 40 }));
        Assert.That((tail - full[.., 7..]).abs().max().item<float>(), Is.LessThan(1e-5f));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.LogitsFrom(ids, 12));
    }

    [TestCase(1)]
    [TestCase(3)]
    [TestCase(8)]
    public async Task Scores_equal_log_softmax_of_the_full_forward_at_every_batch_size(int batchSize)
    {
        using var model = TinyLlama();
        var random = new Random(2);
        TokenizedRequest[] requests =
        [
            .. Enumerable.Range(0, 7).Select(_ => new TokenizedRequest(
                [.. Enumerable.Range(0, random.Next(1, 20)).Select(_ => random.Next(40))],
                [.. Enumerable.Range(0, random.Next(1, 6)).Select(_ => random.Next(40))])),
        ];
        var scorer = new LogLikelihoodScorer(model, new CharTokenizer("abc"), new EvaluationOptions { BatchSize = batchSize, MaxLength = 64 });

        IReadOnlyList<LogLikelihoodResult> results = await scorer.ScoreTokensAsync(requests);

        for (int i = 0; i < requests.Length; i++)
        {
            int[] all = [.. requests[i].Context, .. requests[i].Continuation];
            double expected;
            bool greedy;
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                Tensor logProbs = nn.functional.log_softmax(model.forward(tensor(all.Select(t => (long)t).ToArray()).unsqueeze(0)).squeeze(0), -1); // [T, V]
                int start = requests[i].Context.Count - 1;
                Tensor rows = logProbs[start..^1]; // [C, V]
                Tensor targets = tensor(requests[i].Continuation.Select(t => (long)t).ToArray()).unsqueeze(1); // [C, 1]
                expected = rows.gather(1, targets).sum().item<float>();
                greedy = rows.argmax(1).eq(targets.squeeze(1)).all().item<bool>();
            }

            Assert.That(results[i].LogLikelihood, Is.EqualTo(expected).Within(1e-4), $"request {i}");
            Assert.That(results[i].IsGreedy, Is.EqualTo(greedy), $"request {i}");
            Assert.That(results[i].ContinuationTokens, Is.EqualTo(requests[i].Continuation.Count));
        }
    }
}
