using ModelSurgery.Reproduction;
using ModelSurgery.Surgery.Planning;

namespace ModelSurgery.Tests.Samples;

public sealed class ReproductionAnalysisTests
{
    [Test]
    public void Crossing_is_interpolated_between_the_last_point_above_and_the_first_at_or_below_the_target()
    {
        (double, double)[] curve = [(100, 5.0), (200, 4.0), (300, 3.0), (400, 2.5)];
        Assert.That(Analysis.FirstCrossingBelow(curve, 3.5), Is.EqualTo(250).Within(1e-9));
        Assert.That(Analysis.FirstCrossingBelow(curve, 3.0), Is.EqualTo(300).Within(1e-9), "reaching the target exactly counts");
        Assert.That(Analysis.FirstCrossingBelow(curve, 2.75), Is.EqualTo(350).Within(1e-9));
        Assert.That(Analysis.FirstCrossingBelow(curve, 6.0), Is.EqualTo(100), "already below at the first evaluation");
        Assert.That(Analysis.FirstCrossingBelow(curve, 2.0), Is.Null, "never reached");
        Assert.That(Analysis.FirstCrossingBelow([], 1.0), Is.Null);

        // A curve that dips, rises and dips again crosses at its first dip.
        Assert.That(Analysis.FirstCrossingBelow([(1, 4.0), (2, 2.0), (3, 5.0), (4, 1.0)], 3.0), Is.EqualTo(1.5).Within(1e-9));
        Assert.That(() => Analysis.FirstCrossingBelow([(2, 4.0), (1, 3.0)], 3.5), Throws.ArgumentException.With.Message.Contains("ascend"));
        Assert.That(() => Analysis.FirstCrossingBelow(curve, double.NaN), Throws.ArgumentException);
    }

    [Test]
    public void Verdict_reproduces_only_when_every_seed_agrees_beyond_the_noise_and_the_minimum_effect()
    {
        Assert.That(Verdict.Decide("c", [0.10, 0.08], 0.02).Outcome, Is.EqualTo(Outcome.Reproduces));
        Assert.That(Verdict.Decide("c", [0.10, -0.01], 0.02).Outcome, Is.EqualTo(Outcome.Inconclusive), "seeds disagree");
        Assert.That(Verdict.Decide("c", [0.03], 0.05).Outcome, Is.EqualTo(Outcome.Inconclusive), "within the evaluation noise");
        Assert.That(Verdict.Decide("c", [0.003], 0.0001).Outcome, Is.EqualTo(Outcome.Inconclusive), "below the minimum effect");
        Assert.That(Verdict.Decide("c", [-0.2, -0.3], 0.05).Outcome, Is.EqualTo(Outcome.DoesNotReproduce));
        Assert.That(Verdict.Decide("c", [-0.2, -0.3], 0.3).Outcome, Is.EqualTo(Outcome.Inconclusive));
        Assert.That(Verdict.Decide("c", [0, 0], 0).Outcome, Is.EqualTo(Outcome.Inconclusive));

        Verdict verdict = Verdict.Decide("inherited beats random", [0.412, 0.398], 0.021);
        Assert.That(verdict.MeanDifference, Is.EqualTo(0.405).Within(1e-12));
        Assert.That(verdict.ToMarkdown(), Is.EqualTo("**Verdict: reproduces**: inherited beats random (difference +0.405 bits/byte in the claim's favour, evaluation noise ±0.021, 2 seeds: +0.412, +0.398)"));
        Assert.That(Verdict.Decide("c", [-0.0002, 0.0001], 0).ToMarkdown(), Does.Contain("difference 0.000 bits/byte").And.Contain("2 seeds: 0.000, 0.000)"));
        Assert.That((Verdict.SignedDifference(0.0376), Verdict.SignedDifference(-0.0376), Verdict.SignedDifference(-0.0004)), Is.EqualTo(("+0.038", "-0.038", "0.000")));
        Assert.That(() => Verdict.Decide("c", [], 0), Throws.ArgumentException.With.Message.Contains("'c'"));
        Assert.That(() => Verdict.Decide("c", [double.NaN], 0), Throws.ArgumentException);
        Assert.That(() => Verdict.Decide("c", [0.1], -1), Throws.ArgumentException);
    }

    [Test]
    public void Section_outcome_is_its_primary_claim()
    {
        AblationSection Section(params Outcome[] outcomes) => new(
            Ablation.Inheritance, "t", "p", "", "s", [], [], [],
            [.. outcomes.Select(o => new Verdict("c", o, 0, [0], 0))], "", [], new Dictionary<string, double?>());
        Assert.That(Section(Outcome.Reproduces, Outcome.Inconclusive).Overall, Is.EqualTo(Outcome.Reproduces));
        Assert.That(Section(Outcome.DoesNotReproduce, Outcome.Reproduces).Overall, Is.EqualTo(Outcome.DoesNotReproduce));
        Assert.That(Section().Overall, Is.EqualTo(Outcome.Inconclusive));
    }

    [Test]
    public void Paired_bootstrap_is_zero_for_identical_models_and_excludes_zero_for_a_uniform_gap()
    {
        var better = new DocumentLosses([100, 220, 150, 90, 300, 120], [50, 100, 70, 40, 140, 60]);
        (double low, double high) = Analysis.PairedBootstrap(better, better);
        Assert.That((low, high), Is.EqualTo((0.0, 0.0)));

        // Every document at 2.0 bits per byte against 2.2: the difference is 0.2 whatever the resample.
        var even = new DocumentLosses([.. better.Bytes.Select(b => 2.0 * Math.Log(2) * b)], better.Bytes);
        var worse = new DocumentLosses([.. even.NllNats.Select(n => n * 1.1)], better.Bytes);
        (low, high) = Analysis.PairedBootstrap(even, worse);
        Assert.That(low, Is.EqualTo(0.2).Within(1e-9));
        Assert.That(high, Is.EqualTo(0.2).Within(1e-9));

        // Mixed gaps: the interval contains the observed difference and is seeded.
        var mixed = new DocumentLosses([110, 200, 170, 95, 330, 118], better.Bytes);
        (low, high) = Analysis.PairedBootstrap(better, mixed);
        double observed = mixed.BitsPerByte - better.BitsPerByte;
        Assert.That(observed, Is.InRange(low, high));
        Assert.That(Analysis.PairedBootstrap(better, mixed), Is.EqualTo((low, high)));
        Assert.That(Analysis.BootstrapHalfWidth(better, mixed), Is.EqualTo((high - low) / 2));
        Assert.That(() => Analysis.PairedBootstrap(better, new DocumentLosses([1], [1])), Throws.ArgumentException);
    }

    [Test]
    public void Document_losses_give_bits_per_byte_and_average_over_seeds()
    {
        var a = new DocumentLosses([Math.Log(2) * 10, Math.Log(2) * 30], [10, 10]);
        Assert.That(a.BitsPerByte, Is.EqualTo(2.0).Within(1e-12));
        var b = new DocumentLosses([Math.Log(2) * 20, Math.Log(2) * 10], [10, 10]);
        DocumentLosses mean = DocumentLosses.Mean([a, b]);
        Assert.That(mean.NllNats, Is.EqualTo(new[] { Math.Log(2) * 15, Math.Log(2) * 20 }).Within(1e-12));
        Assert.That(() => DocumentLosses.Mean([a, new DocumentLosses([1], [10])]), Throws.ArgumentException);
        Assert.That(Analysis.MeanAndSpread([2.0, 2.2]), Is.EqualTo("2.100 ± 0.100"));
        Assert.That(Analysis.MeanAndSpread([2.0]), Is.EqualTo("2.000"));
        Assert.That(Analysis.Quantile([1.0, 2.0, 3.0], 0.25), Is.EqualTo(1.5));
    }

    [Test]
    public void Vocabulary_sweep_shapes_hold_the_budget_at_fixed_width_and_lose_depth_as_the_vocabulary_grows()
    {
        const long Budget = 1_600_000;
        int[] vocabularies = [1024, 2048, 4096, 8192, 12288];
        ShapeCandidate[] shapes = [.. vocabularies.Select(v => ShapeSolver.ForVocabulary(Budget, v, hidden: 96))];
        foreach ((ShapeCandidate shape, int vocab) in shapes.Zip(vocabularies))
        {
            Assert.That(shape.Shape.HiddenSize, Is.EqualTo(96));
            Assert.That(shape.Shape.VocabSize, Is.EqualTo(vocab));
            Assert.That(Math.Abs(shape.Parameters.Total - Budget), Is.LessThanOrEqualTo(ShapeSolver.Tolerance * Budget), shape.ToString());
            Assert.That(shape.FfnRatio, Is.InRange(2.0, 4.0));
            Assert.That(shape.Parameters.Embeddings, Is.EqualTo((long)vocab * 96), "tied: the vocabulary is paid once");
        }

        Assert.That(shapes.Select(s => s.Shape.NumHiddenLayers), Is.Ordered.Descending);
        Assert.That(shapes[0].Shape.NumHiddenLayers, Is.GreaterThan(shapes[^1].Shape.NumHiddenLayers));
        Assert.That(() => ShapeSolver.ForVocabulary(1_000_000, 16384, 96), Throws.ArgumentException.With.Message.Contains("embedding alone"));
        Assert.That(() => ShapeSolver.ForVocabulary(1_000_000, 1024, 100), Throws.ArgumentException.With.Message.Contains("multiple"));
    }

    [Test]
    public void Depth_sweep_shapes_hold_the_budget_and_get_thinner_as_they_get_deeper()
    {
        const long Budget = 900_000;
        int[] depths = [1, 2, 4, 8];
        ShapeCandidate[] shapes = [.. depths.Select(d => ShapeSolver.ForDepth(Budget, d, vocab: 4096))];
        foreach ((ShapeCandidate shape, int depth) in shapes.Zip(depths))
        {
            Assert.That(shape.Shape.NumHiddenLayers, Is.EqualTo(depth));
            Assert.That(Math.Abs(shape.Parameters.Total - Budget), Is.LessThanOrEqualTo(ShapeSolver.Tolerance * Budget), shape.ToString());
            Assert.That(shape.FfnRatio, Is.InRange(2.0, 4.0));
            Assert.That(shape.Shape.HiddenSize % ShapeSolver.HeadDim, Is.Zero);
            Assert.That(shape.Shape.NumAttentionHeads * ShapeSolver.HeadDim, Is.EqualTo(shape.Shape.HiddenSize));
        }

        Assert.That(shapes.Select(s => s.Shape.HiddenSize), Is.Ordered.Descending);
        Assert.That(shapes[0].Shape.HiddenSize, Is.GreaterThan(shapes[^1].Shape.HiddenSize));
        Assert.That(() => ShapeSolver.ForDepth(10_000, 8, 4096), Throws.ArgumentException.With.Message.Contains("8 layers"));

        var config = ShapeSolver.ConfigOf(shapes[2].Shape, seqLen: 64, separatorId: 7);
        Assert.That((config.NumHiddenLayers, config.HiddenSize, config.HeadDim, config.MaxPositionEmbeddings, config.BosTokenId, config.TieWordEmbeddings),
            Is.EqualTo((4, shapes[2].Shape.HiddenSize, ShapeSolver.HeadDim, 64, 7, true)));
    }

    [Test]
    public void Both_run_sizes_have_feasible_sweeps()
    {
        foreach (ReproductionSizes sizes in new[] { ReproductionSizes.Full, ReproductionSizes.Fast })
        {
            foreach (int vocab in sizes.VocabSizes)
            {
                Assert.That(() => ShapeSolver.ForVocabulary(sizes.VocabBudget, vocab, sizes.VocabHidden), Throws.Nothing, $"vocab {vocab}");
            }

            foreach (int depth in sizes.ShapeDepths)
            {
                Assert.That(() => ShapeSolver.ForDepth(sizes.ShapeBudget, depth, sizes.VocabSize), Throws.Nothing, $"depth {depth}");
            }

            Assert.That(sizes.VocabSizes, Does.Contain(sizes.VocabSize), "the main vocabulary's corpus is reused by the sweep");
            Assert.That(sizes.StudentLayers, Is.LessThan(sizes.TeacherLayers));
        }
    }

    [Test]
    public void Options_parse_the_documented_flags()
    {
        ReproductionOptions options = ReproductionOptions.Parse(["--fast", "--fresh", "--out", "o", "--teacher", "t", "--data", "d", "--only", "vocab, 1,layers", "--seeds", "3", "--threads", "2"])!;
        Assert.That((options.Fast, options.Fresh, options.OutputDir, options.TeacherDir, options.DataDir, options.Seeds, options.Threads), Is.EqualTo((true, true, "o", "t", "d", (int?)3, (int?)2)));
        Assert.That(options.Only, Is.EqualTo(new[] { Ablation.Vocabulary, Ablation.Inheritance, Ablation.LayerSelection }));
        Assert.That(options.Ablations, Is.EqualTo(new[] { Ablation.Inheritance, Ablation.LayerSelection, Ablation.Vocabulary }), "report order");
        Assert.That(options.ResolvedSeeds, Is.EqualTo(3));
        Assert.That(options.Sizes, Is.EqualTo(ReproductionSizes.Fast));

        var defaults = new ReproductionOptions();
        Assert.That(defaults.Ablations, Has.Count.EqualTo(6));
        Assert.That(defaults.ResolvedSeeds, Is.EqualTo(ReproductionSizes.Full.Seeds));
        Assert.That(defaults.ResolvedOutputDir, Is.EqualTo("artifacts/reproduction"));
        Assert.That(new ReproductionOptions { Fast = true }.ResolvedOutputDir, Is.EqualTo("artifacts/reproduction-fast"));
        Assert.That(new ReproductionOptions { OutputDir = "o" }.ResolvedTeacherDir, Is.EqualTo(Path.Combine("o", "teacher")));
        Assert.That(ReproductionOptions.Parse(["--only", "multiround,distillation,shape"])!.Ablations, Is.EqualTo(new[] { Ablation.DepthWidth, Ablation.MultiRound, Ablation.Distillation }));
        Assert.That(ReproductionOptions.Parse(["--help"]), Is.Null);

        Assert.That(() => ReproductionOptions.Parse(["--bogus"]), Throws.ArgumentException.With.Message.Contains("--bogus"));
        Assert.That(() => ReproductionOptions.Parse(["--out"]), Throws.ArgumentException.With.Message.Contains("--out"));
        Assert.That(() => ReproductionOptions.Parse(["--seeds", "0"]), Throws.ArgumentException.With.Message.Contains("--seeds"));
        Assert.That(() => ReproductionOptions.Parse(["--only", "pruning"]), Throws.ArgumentException.With.Message.Contains("pruning").And.Message.Contains("inheritance"));
        Assert.That(() => ReproductionOptions.Parse(["--only", "7"]), Throws.ArgumentException.With.Message.Contains("'7'"));
        Assert.That(() => ReproductionOptions.Parse(["--only", ","]), Throws.ArgumentException.With.Message.Contains("--only"));
    }
}
