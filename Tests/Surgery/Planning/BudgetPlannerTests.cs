using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Planning;

// Expected values read best as inline literal arrays in assertions.
#pragma warning disable CA1861

namespace ModelSurgery.Tests.Planning;

public sealed class BudgetPlannerTests
{
    [Test]
    public void A_llama2_7b_teacher_at_1_1b_lists_the_papers_20_layer_hidden_1792_student()
    {
        // Llama-2-7B shapes with a 48k vocabulary (PanGu-pi Pro's teacher tokenizer is larger; its student keeps 48k tokens).
        LlamaConfig teacher = PlanningFixtures.Llama2_7B() with { VocabSize = 100_000 };
        const long budget = 1_100_000_000;
        IReadOnlyList<ShapeCandidate> candidates = BudgetPlanner.Candidates(teacher, budget, new BudgetConstraints { VocabSize = 48000 });

        // PanGu-pi Pro's 1B student: 20-21 layers, hidden 1792, 14 heads of 128, vocab 48k.
        ShapeCandidate[] paperLike = [.. candidates.Where(c => c.Shape.NumHiddenLayers is 20 or 21 && c.Shape.HiddenSize == 1792)];
        Assert.That(paperLike, Is.Not.Empty, string.Join(Environment.NewLine, candidates.Take(40)));
        Assert.That(paperLike.Select(c => (c.Shape.NumAttentionHeads, c.Shape.NumKeyValueHeads, c.Shape.VocabSize, c.Config.HeadDim)), Has.All.EqualTo((14, 14, 48000, 128)));

        Assert.That(candidates.Select(c => Math.Abs(c.BudgetDeviation)), Has.All.LessThanOrEqualTo(0.05));
        Assert.That(candidates.Select(c => c.Shape.NumHiddenLayers), Is.Ordered.Descending, "deep and thin first");
        Assert.That(candidates.Select(c => c.Shape.NumHiddenLayers), Has.All.InRange(1, 32));
        foreach (ShapeCandidate c in candidates)
        {
            Assert.That(c.Parameters, Is.EqualTo(LlamaTensorLayout.CountParameters(c.Config)), c.ToString());
            Assert.That(c.Shape.HiddenSize % 64, Is.Zero);
            Assert.That(c.Shape.IntermediateSize % 64, Is.Zero);
            Assert.That(c.FfnRatio, Is.InRange(2.0, 4.0));
            Assert.That(c.Shape.HiddenSize, Is.EqualTo(c.Shape.NumAttentionHeads * 128));
        }
    }

    [Test]
    public void A_candidate_turns_into_a_plan_with_the_same_parameter_count()
    {
        LlamaConfig teacher = PlanningFixtures.Toy();
        long budget = LlamaTensorLayout.CountParameters(teacher).Total / 2;
        IReadOnlyList<ShapeCandidate> candidates = BudgetPlanner.Candidates(teacher, budget,
            new BudgetConstraints { HiddenMultiple = 4, IntermediateMultiple = 4, Tolerance = 0.15, MinFfnRatio = 1, MaxFfnRatio = 3 });
        Assert.That(candidates, Is.Not.Empty);

        ShapeCandidate best = candidates[0];
        SurgeryPlan plan = PlanBuilder.For(teacher, PlanningFixtures.Scores(teacher)).WithShape(best.Shape).Build();
        Assert.That(plan.ParameterCount, Is.EqualTo(best.Parameters));
        Assert.That(StudentShape.Of(plan.Student), Is.EqualTo(best.Shape));
    }

    [Test]
    public void Grouped_query_teachers_get_the_fewest_kv_heads_that_keep_groups_inheritable()
    {
        LlamaConfig gqa = PlanningFixtures.Toy(); // 8 heads in 2 groups of 4
        Assert.That(BudgetPlanner.FewestKvHeads(gqa, 8), Is.EqualTo(2));
        Assert.That(BudgetPlanner.FewestKvHeads(gqa, 4), Is.EqualTo(1));
        Assert.That(BudgetPlanner.FewestKvHeads(gqa, 6), Is.EqualTo(2));
        Assert.That(BudgetPlanner.FewestKvHeads(gqa, 5), Is.Null, "5 heads need groups of 1, but only 2 KV heads exist");
        Assert.That(BudgetPlanner.FewestKvHeads(PlanningFixtures.Llama2_7B(), 14), Is.EqualTo(14));
    }

    [Test]
    public void Out_of_range_constraints_are_rejected()
    {
        LlamaConfig teacher = PlanningFixtures.Llama2_7B();
        Assert.Throws<ArgumentException>(() => BudgetPlanner.Candidates(teacher, 1_000_000_000, new BudgetConstraints { MaxLayers = 40 }));
        Assert.Throws<ArgumentException>(() => BudgetPlanner.Candidates(teacher, 1_000_000_000, new BudgetConstraints { VocabSize = 64000 }));
        Assert.Throws<ArgumentException>(() => BudgetPlanner.Candidates(teacher, 1_000_000_000, new BudgetConstraints { MinFfnRatio = 3, MaxFfnRatio = 2 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => BudgetPlanner.Candidates(teacher, 0));
    }
}
