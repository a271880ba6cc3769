using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Surgery.Scoring.Metrics;
using TorchSharp;
using static ModelSurgery.Tests.Scoring.ScoringToyModels;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Scoring;

/// <summary>Every metric plugin: its declaration holds, and it computes what its file under Scoring/Metrics says.</summary>
public sealed class MetricPluginTests
{
    private static IEnumerable<string> Registered() => ScoringMetrics.BuiltIn.Select(m => m.Name);

    /// <summary>
    /// With what it declares to read, a metric runs and fills exactly the parts it declares, in the model's shapes;
    /// without calibration data it either runs (weights or nothing) or fails naming itself and the data; a metric that
    /// reads nothing runs on a weight source that holds no tensor at all.
    /// </summary>
    [TestCaseSource(nameof(Registered))]
    public async Task Declaration_is_truthful(string name)
    {
        IImportanceMetric metric = ScoringMetrics.Get(name);
        LlamaConfig config = Teacher();
        using LlamaForCausalLM model = Create(config);
        var options = new ScoringOptions { MaskSteps = 2 };

        ImportanceScores withData = await ScoreAsync(model, name, Data(config), options);
        Assert.That(Parts(withData), Is.EqualTo(metric.Scores), "fills exactly the declared parts");
        Assert.That(withData.ShapeErrors(config), Is.Empty);

        bool needsData = (metric.Needs & (MetricNeeds.Activations | MetricNeeds.Gradients | MetricNeeds.Masks)) != 0;
        if (needsData)
        {
            var error = Assert.ThrowsAsync<ArgumentException>(() => ScoreAsync(model, name, null, options));
            Assert.That(error!.Message, Does.Contain($"'{name}'").And.Contain("needs calibration data"));
            return;
        }

        // Without data a weights-only metric gives the same scores, here streamed one layer at a time.
        var weights = new StateDictWeightSource(config, metric.Needs == MetricNeeds.None ? new Dictionary<string, Tensor>() : model.ToStateDict());
        ImportanceScores withoutData = (await ImportanceScorer.ScoreAsync(weights, null, options with { Metrics = [name] }))[0];
        Assert.That(Flatten(withoutData), Is.EqualTo(Flatten(withData)).Within(1e-9));
    }

    // L1Metric
    [Test]
    public async Task L1_a_head_sums_its_query_rows_and_output_columns_and_a_kv_group_adds_its_key_and_value_rows()
    {
        var config = Teacher();
        using LlamaForCausalLM model = Create(config);
        using var scope = torch.NewDisposeScope();

        ImportanceScores scores = await ScoreAsync(model, ScoringMetrics.L1, null);

        int hd = config.HeadDim;
        LlamaAttention a = model.Layers[1].Attention;
        double Head(int h) => AbsSum(a.QueryProjection.Weight.narrow(0, h * hd, hd)) + AbsSum(a.OutputProjection.Weight.narrow(1, h * hd, hd));
        double group1 = Head(2) + Head(3) + AbsSum(a.KeyProjection.Weight.narrow(0, hd, hd)) + AbsSum(a.ValueProjection.Weight.narrow(0, hd, hd));
        Assert.Multiple(() =>
        {
            Assert.That(scores.Heads![1, 2], Is.EqualTo(Head(2)).Within(1e-9).Percent);
            Assert.That(scores.KvGroups![1, 1], Is.EqualTo(group1).Within(1e-9).Percent);
        });
    }

    private static double AbsSum(Tensor weight) => weight.abs().to_type(ScalarType.Float64).sum().item<double>();

    // L2Metric
    [Test]
    public async Task L2_a_neuron_and_a_hidden_channel_score_the_l2_norm_of_every_weight_they_own()
    {
        var config = Teacher();
        using LlamaForCausalLM model = Create(config);
        using var scope = torch.NewDisposeScope();

        ImportanceScores scores = await ScoreAsync(model, ScoringMetrics.L2, null);

        LlamaMlp mlp = model.Layers[2].Mlp;
        double neuron = Squares(mlp.GateProjection.Weight.narrow(0, 5, 1)) + Squares(mlp.UpProjection.Weight.narrow(0, 5, 1)) + Squares(mlp.DownProjection.Weight.narrow(1, 5, 1));

        // A channel owns its embedding and head columns and final-norm weight, and in every layer its columns of the
        // projections that read the residual stream, its rows of those that write it, and its norm weights.
        const int C = 3;
        double channel = Squares(model.Model.EmbedTokens.Weight.narrow(1, C, 1)) + Squares(model.HeadWeight.narrow(1, C, 1)) + Squares(model.Model.Norm.Weight.narrow(0, C, 1));
        foreach (LlamaDecoderLayer layer in model.Layers)
        {
            LlamaAttention a = layer.Attention;
            LlamaMlp m = layer.Mlp;
            foreach (Tensor reader in new[] { a.QueryProjection.Weight, a.KeyProjection.Weight, a.ValueProjection.Weight, m.GateProjection.Weight, m.UpProjection.Weight })
            {
                channel += Squares(reader.narrow(1, C, 1));
            }

            channel += Squares(a.OutputProjection.Weight.narrow(0, C, 1)) + Squares(m.DownProjection.Weight.narrow(0, C, 1));
            channel += Squares(layer.InputNorm.Weight.narrow(0, C, 1)) + Squares(layer.PostAttentionNorm.Weight.narrow(0, C, 1));
        }

        Assert.Multiple(() =>
        {
            Assert.That(scores.Neurons![2, 5], Is.EqualTo(Math.Sqrt(neuron)).Within(1e-9).Percent);
            Assert.That(scores.HiddenChannels![C], Is.EqualTo(Math.Sqrt(channel)).Within(1e-9).Percent);
        });
    }

    private static double Squares(Tensor weight) => weight.to_type(ScalarType.Float64).pow(2).sum().item<double>();

    // ActivationMetric
    [Test]
    public async Task Activation_scores_are_mean_activation_sizes_over_calibration_tokens_of_every_layer_and_the_final_norm()
    {
        var config = Teacher();
        using LlamaForCausalLM model = Create(config);
        CalibrationData data = Data(config);
        using var scope = torch.NewDisposeScope();

        // Batches of 3 over 4 sequences: the means must weigh every token once, whatever the batches.
        ImportanceScores scores = await ScoreAsync(model, ScoringMetrics.Activation, data, new ScoringOptions { BatchSize = 3 });

        List<Captured> layers = Capture(model, data);
        Captured layer1 = layers[1];
        double head2 = layer1.HeadOutputs.select(1, 2).pow(2).sum(-1).sqrt().mean().item<double>(); // [N, T, hd] -> norm per token
        double neuron5 = layer1.FfnActivation.select(2, 5).abs().mean().item<double>();

        // Each channel averages |normed state| over both norms of every layer and the final norm.
        Tensor ids = data.Batch(0, data.SequenceCount, torch.CPU);
        using var noGrad = torch.no_grad();
        (_, IReadOnlyList<Tensor> hidden) = model.ForwardWithHiddenStates(ids);
        Tensor channelSum = model.Model.Norm.forward(hidden[^1]).to_type(ScalarType.Float64).abs().mean([0, 1]); // [D]
        foreach (Captured layer in layers)
        {
            channelSum = channelSum + layer.AttentionInput.abs().mean([0, 1]) + layer.MlpInput.abs().mean([0, 1]); // [D]
        }

        double[] channels = [.. (channelSum / ((2 * layers.Count) + 1)).data<double>()];
        Assert.Multiple(() =>
        {
            Assert.That(scores.Heads![1, 2], Is.EqualTo(head2).Within(1e-6).Percent);
            Assert.That(scores.Neurons![1, 5], Is.EqualTo(neuron5).Within(1e-6).Percent);
            Assert.That(scores.HiddenChannels, Is.EqualTo(channels).Within(1e-4).Percent);
        });
    }

    // WandaMetric
    [Test]
    public async Task Wanda_a_neuron_sums_its_weights_times_the_norm_of_the_input_column_each_reads()
    {
        var config = Teacher();
        using LlamaForCausalLM model = Create(config);
        CalibrationData data = Data(config);
        using var scope = torch.NewDisposeScope();

        ImportanceScores scores = await ScoreAsync(model, ScoringMetrics.Wanda, data, new ScoringOptions { BatchSize = 3 });

        Captured layer0 = Capture(model, data)[0];
        Tensor mlpNorms = layer0.MlpInput.pow(2).sum([0, 1]).sqrt(); // [D]: ||x_j|| over all tokens
        Tensor activationNorm = layer0.FfnActivation.select(2, 7).pow(2).sum().sqrt(); // []: the input of down_proj's column 7
        LlamaMlp mlp = model.Layers[0].Mlp;
        double expected = Weighted(mlp.GateProjection.Weight[7], mlpNorms) + Weighted(mlp.UpProjection.Weight[7], mlpNorms)
            + Weighted(mlp.DownProjection.Weight.select(1, 7), activationNorm);

        Assert.That(scores.Neurons![0, 7], Is.EqualTo(expected).Within(1e-6).Percent);
    }

    private static double Weighted(Tensor weights, Tensor inputNorms) => (weights.to_type(ScalarType.Float64).abs() * inputNorms).sum().item<double>();

    // TaylorMetric
    [Test]
    public async Task Taylor_a_neuron_sums_weight_times_gradient_and_the_model_is_left_as_it_was()
    {
        var config = Teacher();
        using LlamaForCausalLM model = Create(config);
        CalibrationData data = Data(config);
        using var scope = torch.NewDisposeScope();

        // One batch holds every sequence, so the score is |w * dL/dw| of the mean loss over all of them.
        Tensor ids = data.Batch(0, data.SequenceCount, torch.CPU);
        WholeModelScoring.NextTokenLoss(model.forward(ids), ids).backward();
        LlamaMlp mlp = model.Layers[2].Mlp;
        double expected = Saliency(mlp.GateProjection.Weight, w => w[4]) + Saliency(mlp.UpProjection.Weight, w => w[4]) + Saliency(mlp.DownProjection.Weight, w => w.select(1, 4));
        model.zero_grad();
        model.Layers[0].Attention.QueryProjection.Weight.requires_grad = false;
        var before = model.parameters().Select(p => p.detach().clone()).ToList();

        ImportanceScores scores = await ScoreAsync(model, ScoringMetrics.Taylor, data, new ScoringOptions { BatchSize = data.SequenceCount });

        Assert.Multiple(() =>
        {
            Assert.That(scores.Neurons![2, 4], Is.EqualTo(expected).Within(1e-4).Percent);
            Assert.That(model.parameters().Zip(before).All(p => p.First.eq(p.Second).all().item<bool>()), Is.True, "weights unchanged");
            Assert.That(model.parameters().Select(p => p.grad is null || p.grad.abs().sum().item<float>() == 0), Has.All.True, "gradients cleared");
            Assert.That(model.Layers[0].Attention.QueryProjection.Weight.requires_grad, Is.False, "training flags restored");
            Assert.That(model.Layers[0].Attention.KeyProjection.Weight.requires_grad, Is.True, "training flags restored");
        });
    }

    private static double Saliency(Tensor weight, Func<Tensor, Tensor> unit) =>
        (unit(weight.detach()).to_type(ScalarType.Float64) * unit(weight.grad!).to_type(ScalarType.Float64)).abs().sum().item<double>();

    // LearnedMaskMetric
    [Test]
    public async Task Learned_mask_a_penalty_toward_keeping_nothing_lowers_every_gate_logit_while_the_weights_stay_frozen()
    {
        var config = Teacher();
        using LlamaForCausalLM model = Create(config, scale: 1); // weights at 0.02: the loss pulls the gates far less than the penalty
        using var scope = torch.NewDisposeScope();
        var before = model.parameters().Select(p => p.detach().clone()).ToList();
        var options = new ScoringOptions { MaskSteps = 5, MaskLearningRate = 0.1, MaskTargetFraction = 0, MaskPenalty = 100 };

        ImportanceScores scores = await ScoreAsync(model, ScoringMetrics.LearnedMask, Data(config), options);

        // Gate logits start at 3; five Adam steps of 0.1 against a penalty that dwarfs the loss take each down by about 0.5.
        double[] logits = [.. scores.Heads!.Values, .. scores.Neurons!.Values, .. scores.HiddenChannels!];
        Assert.Multiple(() =>
        {
            Assert.That(logits, Has.All.InRange(2.4, 2.6));
            Assert.That(model.parameters().Zip(before).All(p => p.First.eq(p.Second).all().item<bool>()), Is.True, "weights unchanged");
            Assert.That(model.parameters().Select(p => p.requires_grad), Has.All.True, "training flags restored");
        });
    }

    // RandomMetric
    [Test]
    public async Task Random_scores_are_the_seeds_uniform_draws_in_unit_order()
    {
        var config = Teacher();
        using LlamaForCausalLM model = Create(config);

        ImportanceScores scores = await ScoreAsync(model, ScoringMetrics.Random, null, new ScoringOptions { Seed = 9 });

        UnitScores expected = RandomMetric.Generate(config, seed: 9);
        var draws = new Random(9);
        Assert.Multiple(() =>
        {
            Assert.That(scores.Layers, Is.EqualTo(expected.Layers));
            Assert.That(scores.Heads!.Values, Is.EqualTo(expected.Heads!.SelectMany(r => r)));
            Assert.That(scores.HiddenChannels, Is.EqualTo(expected.Channels));
            Assert.That(scores.Layers, Is.EqualTo(Enumerable.Range(0, config.NumHiddenLayers).Select(_ => draws.NextDouble())), "layers are drawn first");
            Assert.That(Flatten(scores), Has.All.InRange(0.0, 1.0));
        });
    }

    // BlockInfluenceMetric
    [Test]
    public async Task Block_influence_each_layer_scores_one_minus_the_mean_cosine_of_its_input_and_output_over_all_batches()
    {
        var config = Teacher();
        using LlamaForCausalLM model = Create(config);
        CalibrationData data = Data(config);
        using var scope = torch.NewDisposeScope();

        ImportanceScores scores = await ScoreAsync(model, ScoringMetrics.BlockInfluence, data, new ScoringOptions { BatchSize = 3 });

        using var noGrad = torch.no_grad();
        Tensor ids = data.Batch(0, data.SequenceCount, torch.CPU);
        (_, IReadOnlyList<Tensor> hidden) = model.ForwardWithHiddenStates(ids);
        Tensor[] states = [model.Embed(ids), .. hidden];
        double[] expected = [.. Enumerable.Range(0, config.NumHiddenLayers).Select(l => LayerSimilarity.BlockInfluence(states[l], states[l + 1]))];
        Assert.That(scores.Layers, Is.EqualTo(expected).Within(1e-6));
    }

    // AngularDistanceMetric
    [Test]
    public async Task Angular_n_scores_each_layer_by_the_closest_window_of_n_layers_around_it()
    {
        var config = Config(layers: 4);
        using LlamaForCausalLM model = Create(config);
        CalibrationData data = Data(config);
        using var scope = torch.NewDisposeScope();

        IReadOnlyList<ImportanceScores> scores = await ImportanceScorer.ScoreAsync(model, data, new ScoringOptions { Metrics = ["angular-2", "angular-n"], AngularSpan = 3, BatchSize = 3 });

        using var noGrad = torch.no_grad();
        Tensor ids = data.Batch(0, data.SequenceCount, torch.CPU);
        (_, IReadOnlyList<Tensor> hidden) = model.ForwardWithHiddenStates(ids);
        Tensor[] states = [model.Embed(ids), .. hidden];
        Assert.Multiple(() =>
        {
            Assert.That(scores.Select(s => s.Metric), Is.EqualTo(new[] { "angular-2", "angular-3" }));
            Assert.That(scores[0].Layers, Is.EqualTo(LayerSimilarity.LayerScoresFromWindows(LayerSimilarity.AngularDistances(states, 2), 4, 2)).Within(1e-6));
            Assert.That(scores[1].Layers, Is.EqualTo(LayerSimilarity.LayerScoresFromWindows(LayerSimilarity.AngularDistances(states, 3), 4, 3)).Within(1e-6));
        });
    }

    [Test]
    public void Angular_a_span_longer_than_the_model_is_refused_before_any_weight_is_read_naming_the_metric_and_the_option()
    {
        var config = Config(layers: 3);
        var empty = new StateDictWeightSource(config, new Dictionary<string, Tensor>());

        var error = Assert.ThrowsAsync<ArgumentException>(() => ImportanceScorer.ScoreAsync(empty, Data(config), new ScoringOptions { Metrics = ["angular-n"], AngularSpan = 4 }));

        Assert.That(error!.Message, Does.Contain("'angular-n'").And.Contain("span 4").And.Contain("ScoringOptions.AngularSpan"));
    }

    // SkipLossMetric
    [Test]
    public async Task Skip_loss_each_layer_scores_the_loss_without_it_minus_the_full_models_loss()
    {
        var config = Teacher();
        using LlamaForCausalLM model = Create(config);
        CalibrationData data = Data(config);
        using var scope = torch.NewDisposeScope();

        ImportanceScores scores = await ScoreAsync(model, ScoringMetrics.SkipLoss, data, new ScoringOptions { BatchSize = data.SequenceCount });

        using var noGrad = torch.no_grad();
        Tensor ids = data.Batch(0, data.SequenceCount, torch.CPU);
        double full = WholeModelScoring.LanguageModelLoss(model, ids).item<float>();
        double[] expected = [.. Enumerable.Range(0, config.NumHiddenLayers).Select(l => WholeModelScoring.LanguageModelLoss(model, ids, skipLayer: l).item<float>() - full)];
        Assert.That(scores.Layers, Is.EqualTo(expected).Within(1e-5));
    }

    // PositionPriorMetric
    [Test]
    public async Task Position_prior_ends_score_one_and_the_middle_zero_whatever_the_weights()
    {
        var config = Config(layers: 5);
        using LlamaForCausalLM model = Create(config);

        ImportanceScores scores = await ScoreAsync(model, ScoringMetrics.PositionPrior, null);

        Assert.That(scores.Layers, Is.EqualTo(new[] { 1.0, 0.5, 0.0, 0.5, 1.0 }));
    }

    // UniformStrideMetric
    [Test]
    public async Task Uniform_stride_the_top_layers_for_every_count_are_spread_over_the_depth()
    {
        var config = Config(layers: 5);
        using LlamaForCausalLM model = Create(config);

        ImportanceScores scores = await ScoreAsync(model, ScoringMetrics.Uniform, null);

        // Chosen in the order 0, 4, 2, 1, 3: the ends, the middle, then the lower index of the remaining gaps.
        Assert.That(scores.Layers, Is.EqualTo(new[] { 5.0, 2.0, 3.0, 1.0, 4.0 }));
    }

    /// <summary>A GQA toy teacher with 3 layers (4 query heads in 2 KV groups, hidden 16, FFN 24).</summary>
    private static LlamaConfig Teacher() => Config(heads: 4, kvHeads: 2);

    /// <summary>Scores <paramref name="model"/> with one metric.</summary>
    private static async Task<ImportanceScores> ScoreAsync(LlamaForCausalLM model, string metric, CalibrationData? data, ScoringOptions? options = null) =>
        (await ImportanceScorer.ScoreAsync(model, data, (options ?? new ScoringOptions()) with { Metrics = [metric] }))[0];

    /// <summary>The parts the scores fill, as <see cref="ScoredUnits"/>.</summary>
    private static ScoredUnits Parts(ImportanceScores scores) =>
        (scores.Layers is null ? ScoredUnits.None : ScoredUnits.Layers)
        | (scores.Heads is null ? ScoredUnits.None : ScoredUnits.Heads)
        | (scores.KvGroups is null ? ScoredUnits.None : ScoredUnits.KvGroups)
        | (scores.Neurons is null ? ScoredUnits.None : ScoredUnits.Neurons)
        | (scores.HiddenChannels is null ? ScoredUnits.None : ScoredUnits.HiddenChannels);

    /// <summary>Every score, part after part.</summary>
    private static double[] Flatten(ImportanceScores s) =>
        [.. s.Layers ?? [], .. s.Heads?.Values ?? [], .. s.KvGroups?.Values ?? [], .. s.Neurons?.Values ?? [], .. s.HiddenChannels ?? []];

    /// <summary>The activations of every layer's forward pass over <paramref name="data"/>, captured through <see cref="LayerTaps"/> as float64 copies.</summary>
    private static List<Captured> Capture(LlamaForCausalLM model, CalibrationData data)
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        Tensor ids = data.Batch(0, data.SequenceCount, torch.CPU); // [N, T]
        Tensor hidden = model.Embed(ids); // [N, T, D]
        using RotaryTables rope = model.CreateRotaryTables(0, ids.shape[1]);
        var captured = new List<Captured>();
        foreach (LlamaDecoderLayer layer in model.Layers)
        {
            Captured? one = null;
            hidden = layer.forward(hidden, rope, null, null, new LayerTaps(Observer: a => one = new Captured(
                Copy(a.AttentionInput), Copy(a.HeadOutputs), Copy(a.MergedHeads), Copy(a.MlpInput), Copy(a.FfnActivation))));
            captured.Add(one!);
        }

        return captured;

        // The activations die with the layer's dispose scope; the copies belong to no scope.
        static Tensor Copy(Tensor x) => x.detach().to_type(ScalarType.Float64).clone().DetachFromDisposeScope();
    }

    /// <summary>One layer's activations in float64 (see <see cref="LayerActivations"/>).</summary>
    private sealed record Captured(Tensor AttentionInput, Tensor HeadOutputs, Tensor MergedHeads, Tensor MlpInput, Tensor FfnActivation);
}
