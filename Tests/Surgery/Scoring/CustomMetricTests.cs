using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Surgery;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Tests.Checkpoints;
using ModelSurgery.Training.Recipes;
using TorchSharp;
using static ModelSurgery.Tests.Scoring.ScoringToyModels;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Scoring;

/// <summary>A metric defined outside the library plugs in by registration alone: no shared code knows it.</summary>
public sealed class CustomMetricTests
{
    [Test]
    public async Task A_registered_metric_runs_in_the_shared_pass_and_its_name_works_everywhere_until_unregistered()
    {
        var config = Config(heads: 4, kvHeads: 2);
        using LlamaForCausalLM model = Create(config);
        CalibrationData data = Data(config);
        var source = new CountingSource(new StateDictWeightSource(config, model.ToStateDict()));
        using var teacher = new TempDirectory();
        config.Save(Path.Combine(teacher.Path, CheckpointWeightSource.ConfigFileName));
        using var scope = torch.NewDisposeScope();

        IReadOnlyList<ImportanceScores> scores;
        using (ScoringMetrics.Register(new RelativeUpdateMetric()))
        {
            Assert.That(ScoringMetrics.All.Select(m => m.Name), Does.Contain(RelativeUpdateMetric.MetricName));
            Assert.That(() => Surgeon.ForTeacher(teacher.Path).ScoreWith(RelativeUpdateMetric.MetricName), Throws.Nothing);
            Assert.That(RecipeErrors(RelativeUpdateMetric.MetricName), Is.Empty);

            scores = await ImportanceScorer.ScoreAsync(source, data, new ScoringOptions { Metrics = [RelativeUpdateMetric.MetricName, ScoringMetrics.BlockInfluence, ScoringMetrics.L1], BatchSize = 3 });
        }

        // One pass served all three: every tensor was read once.
        Assert.That(source.Reads.Values, Has.All.EqualTo(1));
        Assert.That(source.Reads.Keys, Is.EquivalentTo(model.ToStateDict().Keys));

        using var noGrad = torch.no_grad();
        Tensor ids = data.Batch(0, data.SequenceCount, torch.CPU);
        (_, IReadOnlyList<Tensor> hidden) = model.ForwardWithHiddenStates(ids);
        Tensor[] states = [model.Embed(ids), .. hidden];
        double[] expected = [.. Enumerable.Range(0, config.NumHiddenLayers).Select(l => RelativeUpdate(states[l], states[l + 1]).mean().item<double>())];
        Assert.Multiple(() =>
        {
            Assert.That(scores.Select(s => s.Metric), Is.EqualTo(new[] { RelativeUpdateMetric.MetricName, ScoringMetrics.BlockInfluence, ScoringMetrics.L1 }));
            Assert.That(scores[0].Layers, Is.EqualTo(expected).Within(1e-5));
            Assert.That(scores[0].Heads, Is.Null);
        });

        Assert.That(() => ScoringMetrics.Get(RelativeUpdateMetric.MetricName), Throws.ArgumentException.With.Message.Contains("Unknown scoring metric"));
        Assert.That(() => Surgeon.ForTeacher(teacher.Path).ScoreWith(RelativeUpdateMetric.MetricName), Throws.ArgumentException);
        Assert.That(RecipeErrors(RelativeUpdateMetric.MetricName), Has.Some.Contains("scoring.metrics").And.Some.Contains(ScoringMetrics.Wanda));
    }

    [Test]
    public void A_metric_whose_declaration_does_not_fit_how_it_computes_is_refused_at_registration()
    {
        Assert.Multiple(() =>
        {
            Assert.That(() => ScoringMetrics.Register(new RelativeUpdateMetric(needs: MetricNeeds.Gradients)), Throws.ArgumentException.With.Message.Contains(RelativeUpdateMetric.MetricName).And.Message.Contains("layer pass"));
            Assert.That(() => ScoringMetrics.Register(new RelativeUpdateMetric(name: ScoringMetrics.L1)), Throws.ArgumentException.With.Message.Contains("clashes"));
            Assert.That(() => ScoringMetrics.Register(new RelativeUpdateMetric(name: "angular-9")), Throws.ArgumentException.With.Message.Contains("clashes"));
            Assert.That(ScoringMetrics.All, Is.EqualTo(ScoringMetrics.BuiltIn), "nothing refused stays registered");
        });
    }

    [Test]
    public void A_metric_that_scores_other_units_than_it_declares_fails_by_name()
    {
        var config = Config();
        using LlamaForCausalLM model = Create(config);
        using (ScoringMetrics.Register(new RelativeUpdateMetric(scores: ScoredUnits.Layers | ScoredUnits.Heads)))
        {
            var error = Assert.ThrowsAsync<InvalidOperationException>(() => ImportanceScorer.ScoreAsync(model, Data(config), new ScoringOptions { Metrics = [RelativeUpdateMetric.MetricName] }));
            Assert.That(error!.Message, Does.Contain(RelativeUpdateMetric.MetricName).And.Contain("declares"));
        }
    }

    /// <summary>Per token, ||output - input|| / ||input|| of a layer: [..., D] -> [...].</summary>
    private static Tensor RelativeUpdate(Tensor input, Tensor output) =>
        (output - input).to_type(ScalarType.Float64).norm(-1) / input.to_type(ScalarType.Float64).norm(-1);

    private static IReadOnlyList<string> RecipeErrors(string metric) => new DistillationRecipe
    {
        Teacher = "t",
        Data = new RecipeData { Corpus = ["c.jsonl"] },
        Scoring = new ScoringOptions { Metrics = [metric] },
        Plan = new PlanTargets(),
        Distillation = new DistillationOptions(),
    }.Validate();

    /// <summary>How far a layer moves the residual stream relative to its size, averaged over calibration tokens.</summary>
    private sealed class RelativeUpdateMetric(string name = RelativeUpdateMetric.MetricName, MetricNeeds needs = MetricNeeds.Activations, ScoredUnits scores = ScoredUnits.Layers) : ILayerPassMetric
    {
        public const string MetricName = "relative-update";

        public string Name => name;

        public string Description => "mean ||layer output - input|| / ||input||";

        public MetricNeeds Needs => needs;

        public ScoredUnits Scores => scores;

        public LayerPassObserver CreateObserver(MetricContext context) => new Observer(context.Config);

        private sealed class Observer(LlamaConfig config) : LayerPassObserver
        {
            private readonly double[] _layers = new double[config.NumHiddenLayers];
            private double _sum;
            private long _tokens;

            public override void OnBatch(int layer, Tensor input, Tensor output)
            {
                using var scope = torch.NewDisposeScope();
                Tensor update = RelativeUpdate(input, output); // [B, T]
                _sum += update.sum().item<double>();
                _tokens += update.numel();
            }

            public override void OnLayer(int layer, LlamaDecoderLayer weights)
            {
                _layers[layer] = _sum / _tokens;
                (_sum, _tokens) = (0, 0);
            }

            // Layers only, whatever the metric declares: a declaration of more must be caught by the scorer.
            public override UnitScores Finish() => new() { Layers = _layers };
        }
    }

    private sealed class CountingSource(IWeightSource inner) : IWeightSource
    {
        public Dictionary<string, int> Reads { get; } = [];

        public LlamaConfig Config => inner.Config;

        public string Location => inner.Location;

        public Tensor ReadTensor(string name)
        {
            Reads[name] = Reads.GetValueOrDefault(name) + 1;
            return inner.ReadTensor(name);
        }
    }
}
