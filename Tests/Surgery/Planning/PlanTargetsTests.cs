using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;

namespace ModelSurgery.Tests.Planning;

public sealed class PlanTargetsTests
{
    private static readonly LlamaConfig Toy = PlanningFixtures.Toy();
    private static readonly ImportanceScores Scores = PlanningFixtures.Scores(Toy);

    /// <summary>Each target next to the builder calls it stands for (on the toy teacher: 4 layers, 8 heads in 2 KV groups, FFN 48, hidden 32, vocab 40).</summary>
    private static IEnumerable<TestCaseData> EachTarget()
    {
        static TestCaseData Case(string name, PlanTargets targets, Func<PlanBuilder, PlanBuilder> calls) => new TestCaseData(targets, calls).SetName($"{{m}}({name})");
        yield return Case("layers by prior", new() { Layers = 2 }, b => b.KeepLayersByPositionPrior(2));
        yield return Case("layers by scores", new() { Layers = 2, LayerSelection = LayerSelection.TopScores }, b => b.KeepTopLayers(2));
        yield return Case("keep layers", new() { KeepLayers = [3, 0] }, b => b.KeepLayers([0, 3]));
        yield return Case("kv groups", new() { KvGroups = 1 }, b => b.KeepWholeKvGroups(1));
        yield return Case("heads per group", new() { HeadsPerGroup = 2 }, b => b.KeepQueryHeadsPerGroup(2));
        yield return Case("kv groups and heads per group", new() { KvGroups = 1, HeadsPerGroup = 3 }, b => b.KeepHeads(1, 3));
        yield return Case("query heads, whole groups", new() { QueryHeads = 4 }, b => b.KeepHeads(4, GqaHeadMode.WholeKvGroups));
        yield return Case("query heads, same per group", new() { QueryHeads = 4, GqaMode = GqaHeadMode.SameQueryHeadsPerGroup }, b => b.KeepHeads(4, GqaHeadMode.SameQueryHeadsPerGroup));
        yield return Case("neurons", new() { Neurons = 20 }, b => b.KeepNeurons(20));
        yield return Case("neuron fraction", new() { NeuronFraction = 0.5 }, b => b.KeepNeuronFraction(0.5));
        yield return Case("hidden channels", new() { HiddenChannels = 16 }, b => b.KeepHiddenChannels(16));
        yield return Case("hidden fraction", new() { HiddenFraction = 0.25 }, b => b.KeepHiddenChannelFraction(0.25));
        yield return Case("vocab size", new() { VocabSize = 10 }, b => b.KeepTopTokens(10));
        yield return Case("kept token ids", new() { KeptTokenIds = [0, 1, 2, 7, 9] }, b => b.KeepTokens([0, 1, 2, 7, 9]));
        yield return Case("round to", new() { Neurons = 20, RoundTo = 8 }, b => b.KeepNeurons(20).RoundWidthsTo(8));
    }

    [TestCaseSource(nameof(EachTarget))]
    public void Each_target_builds_the_plan_of_its_builder_call(PlanTargets targets, Func<PlanBuilder, PlanBuilder> calls)
    {
        SurgeryPlan expected = calls(PlanBuilder.For(Toy, Scores)).Build();
        SurgeryPlan plan = targets.Build(Toy, Scores);

        Assert.That(plan.ToJson(), Is.EqualTo(expected.ToJson()));
        Assert.That(plan.ToJson(), Is.Not.EqualTo(PlanBuilder.Identity(Toy).ToJson()), "the target changes the plan");
    }

    [Test]
    public void No_targets_keep_the_whole_teacher() =>
        Assert.That(StudentShape.Of(new PlanTargets().Build(Toy).Student), Is.EqualTo(StudentShape.Of(Toy)));

    [Test]
    public void A_budget_takes_the_deepest_thinnest_candidate_and_explicit_targets_override_it()
    {
        // The toy's FFN (1.5 x hidden) is below the planner's default FFN ratio range (2..4): widen it.
        LlamaConfig teacher = Toy with { IntermediateSize = 128 };
        ImportanceScores scores = PlanningFixtures.Scores(teacher);
        long budget = LlamaTensorLayout.CountParameters(teacher).Total / 2;
        var targets = new PlanTargets { BudgetParameters = budget, RoundTo = 4, LayerSelection = LayerSelection.TopScores };
        IReadOnlyList<ShapeCandidate> candidates = targets.BudgetCandidates(teacher);
        Assert.That(candidates, Is.Not.Empty);
        Assert.That(candidates, Is.EqualTo(BudgetPlanner.Candidates(teacher, budget, new BudgetConstraints { HiddenMultiple = 4, IntermediateMultiple = 4 })));

        SurgeryPlan plan = targets.Build(teacher, scores);
        SurgeryPlan expected = PlanBuilder.For(teacher, scores).WithShape(candidates[0].Shape, LayerSelection.TopScores).RoundWidthsTo(4).Build();
        Assert.That(plan.ToJson(), Is.EqualTo(expected.ToJson()));
        Assert.That(StudentShape.Of(plan.Student), Is.EqualTo(candidates[0].Shape));

        SurgeryPlan overridden = (targets with { Layers = 1 }).Build(teacher, scores);
        Assert.That(overridden.Layers, Has.Count.EqualTo(1));
        Assert.That(overridden.Student.HiddenSize, Is.EqualTo(candidates[0].Shape.HiddenSize));
        Assert.That(new PlanTargets().BudgetCandidates(teacher), Is.Empty);
    }

    [TestCase("layers", 0)]
    [TestCase("kv_groups", 0)]
    [TestCase("heads_per_group", -1)]
    [TestCase("query_heads", 0)]
    [TestCase("neurons", 0)]
    [TestCase("neuron_fraction", 1.5)]
    [TestCase("hidden_channels", 0)]
    [TestCase("hidden_fraction", 0.0)]
    [TestCase("vocab_size", 0)]
    [TestCase("round_to", 0)]
    [TestCase("budget_parameters", -5)]
    public void An_out_of_range_value_is_rejected_naming_its_target(string key, double value)
    {
        int count = (int)value;
        PlanTargets targets = key switch
        {
            PlanTargets.Keys.Layers => new() { Layers = count },
            PlanTargets.Keys.KvGroups => new() { KvGroups = count },
            PlanTargets.Keys.HeadsPerGroup => new() { HeadsPerGroup = count },
            PlanTargets.Keys.QueryHeads => new() { QueryHeads = count },
            PlanTargets.Keys.Neurons => new() { Neurons = count },
            PlanTargets.Keys.NeuronFraction => new() { NeuronFraction = value },
            PlanTargets.Keys.HiddenChannels => new() { HiddenChannels = count },
            PlanTargets.Keys.HiddenFraction => new() { HiddenFraction = value },
            PlanTargets.Keys.VocabSize => new() { VocabSize = count },
            PlanTargets.Keys.RoundTo => new() { RoundTo = count },
            _ => new() { BudgetParameters = count },
        };

        Assert.That(targets.Validate(), Has.Count.EqualTo(1));
        Assert.That(targets.Validate()[0], Does.StartWith($"{key}: "));
        Assert.That(targets.Validate(k => "--" + k.Replace('_', '-'))[0], Does.StartWith($"--{key.Replace('_', '-')}: "));
        Assert.That(() => targets.Build(Toy, Scores), Throws.ArgumentException.With.Message.StartWith($"{key}: "));
    }

    [TestCase("layers", "keep_layers")]
    [TestCase("query_heads", "kv_groups")]
    [TestCase("neurons", "neuron_fraction")]
    [TestCase("hidden_channels", "hidden_fraction")]
    [TestCase("vocab_size", "kept_token_ids")]
    public void Two_targets_for_one_dimension_are_rejected_naming_both(string first, string second)
    {
        PlanTargets targets = first switch
        {
            PlanTargets.Keys.Layers => new() { Layers = 2, KeepLayers = [0, 1] },
            PlanTargets.Keys.QueryHeads => new() { QueryHeads = 4, KvGroups = 1 },
            PlanTargets.Keys.Neurons => new() { Neurons = 8, NeuronFraction = 0.5 },
            PlanTargets.Keys.HiddenChannels => new() { HiddenChannels = 8, HiddenFraction = 0.5 },
            _ => new() { VocabSize = 5, KeptTokenIds = [0, 1, 2] },
        };

        IReadOnlyList<string> errors = targets.Validate();
        Assert.That(errors, Has.Count.EqualTo(1));
        Assert.That(errors[0], Does.StartWith($"{first}: ").And.Contain(second).And.Contain("not both"));
    }

    [Test]
    public void A_target_the_teacher_cannot_meet_is_rejected_naming_the_target_and_value()
    {
        string Message(PlanTargets targets) => Assert.Throws<ArgumentException>(() => targets.Build(Toy, Scores, k => $"plan.{k}"))!.Message;

        Assert.Multiple(() =>
        {
            Assert.That(Message(new() { Layers = 9 }), Does.StartWith("plan.layers 9: ").And.Contain("1..4").And.Not.Contain("Parameter"));
            Assert.That(Message(new() { KeepLayers = [0, 7] }), Does.StartWith("plan.keep_layers 0,7: "));
            Assert.That(Message(new() { QueryHeads = 6 }), Does.StartWith("plan.query_heads 6: ").And.Contain("KV groups of 4"));
            Assert.That(Message(new() { KvGroups = 3 }), Does.StartWith("plan.kv_groups 3: "));
            Assert.That(Message(new() { HeadsPerGroup = 5 }), Does.StartWith("plan.heads_per_group 5: "));
            Assert.That(Message(new() { Neurons = 49 }), Does.StartWith("plan.neurons 49: "));
            Assert.That(Message(new() { BudgetParameters = 10 }), Does.StartWith("plan.budget_parameters 10: ").And.Contain("no student shape"));
        });
    }
}
