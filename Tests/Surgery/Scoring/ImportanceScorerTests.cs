using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Tests.Checkpoints;
using TorchSharp;
using static ModelSurgery.Tests.Scoring.ScoringToyModels;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Scoring;

public sealed class ImportanceScorerTests
{
    private static readonly string[] UnitMetrics = ["l1", "l2", "activation", "wanda", "taylor"];

    [Test]
    public async Task Zeroed_head_neuron_and_channel_score_lowest_for_every_unit_metric()
    {
        var config = Config();
        using LlamaForCausalLM model = Create(config);
        ZeroHead(model, layer: 1, head: 2);
        ZeroNeuron(model, layer: 2, neuron: 5);
        ZeroChannel(model, channel: 3);

        var scores = await ImportanceScorer.ScoreAsync(model, Data(config), new ScoringOptions { Metrics = UnitMetrics });

        Assert.That(scores.Select(s => s.Metric), Is.EqualTo(UnitMetrics));
        foreach (ImportanceScores s in scores)
        {
            double[] heads = s.Heads!.Row(1);
            double[] neurons = s.Neurons!.Row(2);
            IReadOnlyList<double> channels = s.HiddenChannels!;
            Assert.Multiple(() =>
            {
                Assert.That(heads[2], Is.LessThan(heads.Where((_, i) => i != 2).Min()), $"{s.Metric}: head");
                Assert.That(neurons[5], Is.LessThan(neurons.Where((_, i) => i != 5).Min()), $"{s.Metric}: neuron");
                Assert.That(channels[3], Is.LessThan(channels.Where((_, i) => i != 3).Min()), $"{s.Metric}: channel");
                Assert.That(heads[2], Is.EqualTo(0).Within(1e-9), $"{s.Metric}: a zero head has nothing to score");
            });
        }
    }

    [Test]
    public async Task Zeroed_kv_group_scores_lowest_with_grouped_query_attention()
    {
        var config = Config(heads: 4, kvHeads: 2);
        using LlamaForCausalLM model = Create(config);
        ZeroKvGroup(model, layer: 0, group: 1);

        var scores = await ImportanceScorer.ScoreAsync(model, Data(config), new ScoringOptions { Metrics = ["l1", "wanda", "taylor"] });

        foreach (ImportanceScores s in scores)
        {
            Assert.That(s.KvGroups!.Row(0), Is.EqualTo(Values(s.KvGroups[0, 0], 0.0)).Within(1e-9), s.Metric);
            Assert.That(s.KvGroups[0, 0], Is.GreaterThan(0), s.Metric);
        }
    }

    [Test]
    public async Task Identity_layer_has_no_block_influence_and_no_skip_loss()
    {
        var config = Config(layers: 4);
        using LlamaForCausalLM model = Create(config);
        MakeIdentity(model, layer: 2);

        var scores = await ImportanceScorer.ScoreAsync(model, Data(config), new ScoringOptions { Metrics = ["block-influence", "skip-loss"] });

        IReadOnlyList<double> influence = scores[0].Layers!;
        IReadOnlyList<double> skip = scores[1].Layers!;
        Assert.Multiple(() =>
        {
            Assert.That(influence[2], Is.EqualTo(0).Within(1e-6));
            Assert.That(ArgMin(influence), Is.EqualTo(2));
            Assert.That(influence.Where((_, i) => i != 2), Has.All.GreaterThan(1e-3));
            Assert.That(skip[2], Is.EqualTo(0).Within(1e-5));
            Assert.That(skip.Where((_, i) => i != 2).Select(Math.Abs), Has.All.GreaterThan(1e-3));
        });
    }

    [Test]
    public async Task Angular_distance_finds_the_block_of_layers_that_changes_nothing()
    {
        var config = Config(layers: 5);
        using LlamaForCausalLM model = Create(config);
        MakeIdentity(model, layer: 2);
        MakeIdentity(model, layer: 3);

        var scores = await ImportanceScorer.ScoreAsync(model, Data(config), new ScoringOptions { Metrics = ["angular-2", "angular-n"], AngularSpan = 1 });

        Assert.That(scores.Select(s => s.Metric), Is.EqualTo(Values("angular-2", "angular-1")));
        IReadOnlyList<double> span2 = scores[0].Layers!;
        Assert.Multiple(() =>
        {
            Assert.That(span2[2], Is.EqualTo(0).Within(1e-6));
            Assert.That(span2[3], Is.EqualTo(0).Within(1e-6));
            Assert.That(new[] { span2[0], span2[1], span2[4] }, Has.All.GreaterThan(1e-3));
        });
    }

    [Test]
    public async Task Streaming_from_a_checkpoint_gives_the_same_scores_as_the_model_in_memory()
    {
        const double Float32Epsilon = 1.1920928955078125e-7; // 2^-23
        var config = Config(heads: 4, kvHeads: 2);
        using LlamaForCausalLM model = Create(config);
        CalibrationData data = Data(config);
        using var directory = new TempDirectory();
        await CheckpointWriter.WriteAsync(directory.Path, [.. model.ToStateDict().Select(kv => (kv.Key, kv.Value))]);
        config.Save(Path.Combine(directory.Path, CheckpointWeightSource.ConfigFileName));
        var options = new ScoringOptions { Metrics = ["l1", "l2", "activation", "wanda", "block-influence", "angular-2"], BatchSize = 3 };

        var inMemory = await ImportanceScorer.ScoreAsync(model, data, options);
        var streamed = await ImportanceScorer.ScoreAsync(directory.Path, data, options);
        var fromStateDict = await ImportanceScorer.ScoreAsync(new StateDictWeightSource(config, model.ToStateDict()), data, options);

        for (int i = 0; i < inMemory.Count; i++)
        {
            foreach (var other in new[] { streamed[i], fromStateDict[i] })
            {
                // Same weights bit for bit, but float32 kernels may sum in another order (oneDNN picks kernels by
                // memory alignment), so allow float32 rounding of each reduction (hidden + FFN terms) in every layer.
                double[] expected = Flatten(inMemory[i]);
                double tolerance = config.NumHiddenLayers * (config.HiddenSize + config.IntermediateSize) * Float32Epsilon * expected.Max(Math.Abs);
                Assert.That(Flatten(other), Is.EqualTo(expected).Within(tolerance), inMemory[i].Metric);
            }
        }

        static double[] Flatten(ImportanceScores s) =>
            [.. s.Layers ?? [], .. s.Heads?.Values ?? [], .. s.KvGroups?.Values ?? [], .. s.Neurons?.Values ?? [], .. s.HiddenChannels ?? []];
    }

    [Test]
    public async Task Whole_model_metrics_from_a_checkpoint_match_the_model_in_memory()
    {
        var config = Config(layers: 2);
        using LlamaForCausalLM model = Create(config);
        CalibrationData data = Data(config);
        using var directory = new TempDirectory();
        await CheckpointWriter.WriteAsync(directory.Path, [.. model.ToStateDict().Select(kv => (kv.Key, kv.Value))]);
        config.Save(Path.Combine(directory.Path, CheckpointWeightSource.ConfigFileName));
        var options = new ScoringOptions { Metrics = ["taylor", "skip-loss"], BatchSize = 2 };

        var inMemory = await ImportanceScorer.ScoreAsync(model, data, options);
        var fromDisk = await ImportanceScorer.ScoreAsync(directory.Path, data, options);

        Assert.Multiple(() =>
        {
            Assert.That(fromDisk[0].Heads!.Values, Is.EqualTo(inMemory[0].Heads!.Values).Within(1e-6));
            Assert.That(fromDisk[0].HiddenChannels, Is.EqualTo(inMemory[0].HiddenChannels).Within(1e-6));
            Assert.That(fromDisk[1].Layers, Is.EqualTo(inMemory[1].Layers).Within(1e-6));
        });
    }

    [Test]
    public async Task Forward_metrics_read_every_tensor_once_and_report_progress_per_layer()
    {
        var config = Config(layers: 3);
        using LlamaForCausalLM model = Create(config);
        var source = new CountingSource(new StateDictWeightSource(config, model.ToStateDict()));
        var reports = new List<ScoringProgress>();
        var progress = new SynchronousProgress<ScoringProgress>(reports.Add);

        await ImportanceScorer.ScoreAsync(source, Data(config), new ScoringOptions { Metrics = ["l1", "l2", "activation", "wanda", "block-influence", "angular-2"] }, progress);

        Assert.Multiple(() =>
        {
            Assert.That(source.Reads.Keys, Is.EquivalentTo(model.ToStateDict().Keys));
            Assert.That(source.Reads.Values, Has.All.EqualTo(1));
            Assert.That(reports.Select(r => r.Completed), Is.EqualTo(Values(1, 2, 3)));
        });
    }

    [Test]
    public void Cancellation_stops_scoring()
    {
        var config = Config();
        using LlamaForCausalLM model = Create(config);
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();

        Assert.That(
            () => ImportanceScorer.ScoreAsync(model, Data(config), new ScoringOptions { Metrics = ["activation"] }, cancellationToken: cancelled.Token),
            Throws.InstanceOf<OperationCanceledException>());
    }

    [Test]
    public async Task Learned_masks_push_the_gates_of_useless_heads_lowest()
    {
        var config = Config(layers: 2, heads: 4, kvHeads: 4, hidden: 32, intermediate: 32, vocab: 12);
        using LlamaForCausalLM model = Create(config, seed: 3, scale: 1);
        int[] useless = [1, 3];
        foreach (int layer in new[] { 0, 1 })
        {
            foreach (int head in useless)
            {
                ZeroHead(model, layer, head);
            }
        }

        // Sequences repeat with period 3, so the next token is only predictable by attending back: useful heads learn that.
        CalibrationData data = PeriodicData(config.VocabSize, sequences: 8, length: 12);
        Train(model, data, steps: 60);

        var scores = await ImportanceScorer.ScoreAsync(model, data, new ScoringOptions { Metrics = ["learned-mask"], MaskSteps = 80, MaskLearningRate = 0.1, BatchSize = 8 });

        ScoreMatrix heads = scores[0].Heads!;
        for (int layer = 0; layer < 2; layer++)
        {
            double[] row = heads.Row(layer);
            Assert.That(useless.Select(h => row[h]).Max(), Is.LessThan(new[] { row[0], row[2] }.Min()), $"layer {layer}: {string.Join(", ", row)}");
        }
    }

    [Test]
    public async Task Random_scores_are_deterministic_for_a_seed()
    {
        var config = Config();
        var first = await ImportanceScorer.ScoreAsync(new StateDictWeightSource(config, new Dictionary<string, Tensor>()), null, new ScoringOptions { Metrics = ["random"], Seed = 5 });
        var again = await ImportanceScorer.ScoreAsync(new StateDictWeightSource(config, new Dictionary<string, Tensor>()), null, new ScoringOptions { Metrics = ["random"], Seed = 5 });
        var other = await ImportanceScorer.ScoreAsync(new StateDictWeightSource(config, new Dictionary<string, Tensor>()), null, new ScoringOptions { Metrics = ["random"], Seed = 6 });

        Assert.Multiple(() =>
        {
            Assert.That(again[0], Is.EqualTo(first[0]));
            Assert.That(other[0].Heads, Is.Not.EqualTo(first[0].Heads));
            Assert.That(first[0].ShapeErrors(config), Is.Empty);
        });
    }

    [Test]
    public void Whole_model_metrics_refuse_up_front_when_the_estimate_exceeds_the_budget()
    {
        var config = Config();
        using LlamaForCausalLM model = Create(config);
        var options = new ScoringOptions { Metrics = ["taylor"], MemoryBudgetBytes = 1000 };

        var error = Assert.ThrowsAsync<InvalidOperationException>(() => ImportanceScorer.ScoreAsync(model, Data(config), options));

        Assert.That(error!.Message, Does.Contain("taylor").And.Contain("bytes").And.Contain("MemoryBudgetBytes"));
    }

    [Test]
    public void Forward_metrics_without_calibration_data_are_rejected_by_name()
    {
        var config = Config();
        using LlamaForCausalLM model = Create(config);

        var error = Assert.ThrowsAsync<ArgumentException>(() => ImportanceScorer.ScoreAsync(model, null, new ScoringOptions { Metrics = ["l1", "wanda"] }));

        Assert.That(error!.Message, Does.Contain("wanda"));
    }

    [Test]
    public void Scoring_through_layer_taps_is_the_model_forward_bit_for_bit()
    {
        var config = Config(heads: 4, kvHeads: 2);
        using LlamaForCausalLM model = Create(config, scale: 1);
        using Tensor ids = Data(config).Batch(0, 2, torch.CPU);
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();

        Tensor expected = model.forward(ids); // [B, T, V]
        Tensor hidden = model.Embed(ids); // [B, T, D]
        using RotaryTables rope = model.CreateRotaryTables(0, ids.shape[1]);
        using var masks = new AttentionMasks();
        long observed = 0;
        Tensor ones = torch.ones(1); // gates of ones must leave every bit as it was
        var taps = new LayerTaps(ones.expand(config.NumAttentionHeads), ones.expand(config.IntermediateSize), ones.expand(config.HiddenSize), a => observed += a.AttentionInput.shape[0] * a.AttentionInput.shape[1]);
        foreach (LlamaDecoderLayer layer in model.Layers)
        {
            hidden = layer.forward(hidden, rope, null, masks, taps);
        }

        Tensor actual = model.FinalNormAndHead(hidden); // [B, T, V]
        Assert.That(actual.eq(expected).all().item<bool>(), Is.True);
        Assert.That(observed, Is.EqualTo(ids.numel() * config.NumHiddenLayers), "the observer saw every layer's call");
        Assert.That(WholeModelScoring.LanguageModelLoss(model, ids).item<float>(), Is.EqualTo(WholeModelScoring.NextTokenLoss(expected, ids).item<float>()));
    }

    private static CalibrationData PeriodicData(int vocab, int sequences, int length)
    {
        var random = new Random(11);
        var tokens = new List<long>();
        for (int s = 0; s < sequences; s++)
        {
            long[] period = [random.Next(vocab), random.Next(vocab), random.Next(vocab)];
            tokens.AddRange(Enumerable.Range(0, length).Select(t => period[t % 3]));
        }

        return new CalibrationData(tokens, sequences, length);
    }

    private static void Train(LlamaForCausalLM model, CalibrationData data, int steps)
    {
        using var optimizer = torch.optim.Adam(model.parameters(), 0.01);
        using Tensor ids = data.Batch(0, data.SequenceCount, torch.CPU);
        for (int step = 0; step < steps; step++)
        {
            using var scope = torch.NewDisposeScope();
            optimizer.zero_grad();
            WholeModelScoring.NextTokenLoss(model.forward(ids), ids).backward();
            optimizer.step();
        }
    }

    private static T[] Values<T>(params T[] values) => values;

    private sealed class CountingSource(IWeightSource inner) : IWeightSource
    {
        public Dictionary<string, int> Reads { get; } = [];

        public ModelSurgery.Inference.Configuration.LlamaConfig Config => inner.Config;

        public string Location => inner.Location;

        public Tensor ReadTensor(string name)
        {
            Reads[name] = Reads.GetValueOrDefault(name) + 1;
            return inner.ReadTensor(name);
        }
    }
}
