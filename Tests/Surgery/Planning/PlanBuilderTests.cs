using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;

// Expected values read best as inline literal arrays in assertions.
#pragma warning disable CA1861

namespace ModelSurgery.Tests.Planning;

public sealed class PlanBuilderTests
{
    /// <summary>Head scores on the toy teacher (8 query heads, KV groups {0..3} and {4..7}), the same for every layer.</summary>
    private static ImportanceScores HeadScores(double[] perHead, double[]? perKvGroup = null)
    {
        LlamaConfig toy = PlanningFixtures.Toy();
        return PlanningFixtures.Scores(toy) with
        {
            Heads = ScoreMatrix.Create(toy.NumHiddenLayers, 8, (_, h) => perHead[h]),
            KvGroups = perKvGroup is null ? null : ScoreMatrix.Create(toy.NumHiddenLayers, 2, (_, g) => perKvGroup[g]),
        };
    }

    [Test]
    public void Whole_kv_groups_keep_the_best_group_with_all_its_query_heads()
    {
        // Group 0 sums to 1 + 1 + 1 + 9 = 12, group 1 to 4 * 4 = 16: group 1 wins although head 3 is the single best head.
        ImportanceScores scores = HeadScores([1, 1, 1, 9, 4, 4, 4, 4]);
        SurgeryPlan plan = PlanBuilder.For(PlanningFixtures.Toy(), scores).KeepHeads(4, GqaHeadMode.WholeKvGroups).Build();

        Assert.That(plan.Layers.Select(l => l.KvHeads), Has.All.EqualTo(new[] { 1 }));
        Assert.That(plan.Layers.Select(l => l.QueryHeads), Has.All.EqualTo(new[] { 4, 5, 6, 7 }));
        Assert.That((plan.Student.NumAttentionHeads, plan.Student.NumKeyValueHeads), Is.EqualTo((4, 1)));
    }

    [Test]
    public void Whole_kv_groups_prefer_kv_group_scores_when_present()
    {
        ImportanceScores scores = HeadScores([1, 1, 1, 9, 4, 4, 4, 4], perKvGroup: [2, 1]);
        SurgeryPlan plan = PlanBuilder.For(PlanningFixtures.Toy(), scores).KeepWholeKvGroups(1).Build();
        Assert.That(plan.Layers[0].QueryHeads, Is.EqualTo(new[] { 0, 1, 2, 3 }));
    }

    [Test]
    public void Same_query_heads_per_group_keep_every_kv_head_and_the_best_heads_inside_each()
    {
        ImportanceScores scores = HeadScores([5, 1, 7, 3, 0, 8, 2, 6]);
        SurgeryPlan plan = PlanBuilder.For(PlanningFixtures.Toy(), scores).KeepHeads(4, GqaHeadMode.SameQueryHeadsPerGroup).Build();

        Assert.That(plan.Layers[0].KvHeads, Is.EqualTo(new[] { 0, 1 }));
        Assert.That(plan.Layers[0].QueryHeads, Is.EqualTo(new[] { 0, 2, 5, 7 }));
        Assert.That((plan.Student.NumAttentionHeads, plan.Student.NumKeyValueHeads), Is.EqualTo((4, 2)));
    }

    [Test]
    public void Head_counts_that_do_not_fit_the_mode_are_rejected()
    {
        var builder = PlanBuilder.For(PlanningFixtures.Toy(), HeadScores([1, 2, 3, 4, 5, 6, 7, 8]));
        Assert.That(Assert.Throws<ArgumentException>(() => builder.KeepHeads(6, GqaHeadMode.WholeKvGroups))!.Message, Does.Contain("KV groups of 4"));
        Assert.That(Assert.Throws<ArgumentException>(() => builder.KeepHeads(3, GqaHeadMode.SameQueryHeadsPerGroup))!.Message, Does.Contain("2 KV heads"));
        Assert.Throws<ArgumentOutOfRangeException>(() => builder.KeepHeads(16, GqaHeadMode.SameQueryHeadsPerGroup));
    }

    [TestCase(100, 11008, 64, 128)]
    [TestCase(96, 11008, 64, 128)]
    [TestCase(95, 11008, 64, 64)]
    [TestCase(10, 11008, 64, 64)]
    [TestCase(11008, 11008, 64, 11008)]
    [TestCase(4990, 5000, 64, 4992)]
    [TestCase(4999, 5000, 64, 4992)]
    [TestCase(5000, 5000, 64, 5000)]
    [TestCase(30, 48, 64, 48)]
    [TestCase(37, 4096, 1, 37)]
    public void Widths_round_to_the_nearest_multiple_within_the_teacher(int requested, int teacher, int multiple, int expected) =>
        Assert.That(PlanBuilder.RoundWidth(requested, teacher, multiple), Is.EqualTo(expected));

    [Test]
    public void Rounding_applies_to_neurons_and_hidden_channels_but_not_heads()
    {
        LlamaConfig toy = PlanningFixtures.Toy();
        SurgeryPlan plan = PlanBuilder.For(toy, PlanningFixtures.Scores(toy))
            .KeepNeurons(20).KeepHiddenChannelFraction(0.7).KeepQueryHeadsPerGroup(3).RoundWidthsTo(16).Build();
        // 20 neurons -> 16; 0.7 * 32 = 22.4 -> 22 channels -> 16 (22 / 16 = 1.375 rounds to 1); 3 heads per group stay 3.
        Assert.That(plan.Student.IntermediateSize, Is.EqualTo(16));
        Assert.That(plan.Student.HiddenSize, Is.EqualTo(16));
        Assert.That(plan.Student.NumAttentionHeads, Is.EqualTo(6));
    }

    [Test]
    public void Neurons_and_channels_are_the_top_scores_of_each_layer_with_one_count_for_all_layers()
    {
        LlamaConfig toy = PlanningFixtures.Toy();
        // Layer l prefers neurons l*10 .. l*10+4; hidden channels prefer the odd ones.
        var scores = PlanningFixtures.Scores(toy) with
        {
            Neurons = ScoreMatrix.Create(4, 48, (l, n) => n >= l * 10 && n < (l * 10) + 5 ? 10 + n : 0),
            HiddenChannels = [.. Enumerable.Range(0, 32).Select(c => c % 2 == 1 ? 1.0 : 0.0)],
        };
        SurgeryPlan plan = PlanBuilder.For(toy, scores).KeepNeurons(5).KeepHiddenChannels(16).Build();

        for (int l = 0; l < 4; l++)
        {
            Assert.That(plan.Layers[l].Neurons, Is.EqualTo(Enumerable.Range(l * 10, 5)));
        }

        Assert.That(plan.HiddenChannels, Is.EqualTo(Enumerable.Range(0, 16).Select(i => (2 * i) + 1)));
    }

    [Test]
    public void Ties_go_to_the_lower_index()
    {
        LlamaConfig toy = PlanningFixtures.Toy();
        var scores = PlanningFixtures.Scores(toy) with { HiddenChannels = [.. Enumerable.Repeat(1.0, 32)] };
        SurgeryPlan plan = PlanBuilder.For(toy, scores).KeepHiddenChannels(3).Build();
        Assert.That(plan.HiddenChannels, Is.EqualTo(new[] { 0, 1, 2 }));
    }

    [Test]
    public void Position_prior_keeps_the_first_and_last_layers_and_thins_the_middle_uniformly()
    {
        Assert.That(PlanBuilder.PositionPriorLayers(4, 2), Is.EqualTo(new[] { 0, 3 }));
        Assert.That(PlanBuilder.PositionPriorLayers(5, 3), Is.EqualTo(new[] { 0, 2, 4 }));
        Assert.That(PlanBuilder.PositionPriorLayers(4, 4), Is.EqualTo(new[] { 0, 1, 2, 3 }));
        int[] twenty = PlanBuilder.PositionPriorLayers(32, 20);
        Assert.That(twenty, Has.Length.EqualTo(20));
        Assert.That(twenty[0], Is.EqualTo(0));
        Assert.That(twenty[^1], Is.EqualTo(31));
        Assert.That(twenty, Is.Ordered.Ascending.And.Unique);
        Assert.That(twenty.Zip(twenty.Skip(1), (a, b) => b - a), Has.All.InRange(1, 2), "gaps differ by at most one");

        SurgeryPlan plan = PlanBuilder.For(PlanningFixtures.Toy()).KeepLayersByPositionPrior(3).Build();
        Assert.That(plan.Layers.Select(l => l.TeacherLayer), Is.EqualTo(new[] { 0, 2, 3 }));
    }

    [Test]
    public void Layers_can_be_chosen_by_score_or_by_hand()
    {
        LlamaConfig toy = PlanningFixtures.Toy();
        var scores = PlanningFixtures.Scores(toy) with { Layers = [0.1, 0.9, 0.5, 0.7] };
        Assert.That(PlanBuilder.For(toy, scores).KeepTopLayers(2).Build().Layers.Select(l => l.TeacherLayer), Is.EqualTo(new[] { 1, 3 }));
        Assert.That(PlanBuilder.For(toy).KeepLayers([3, 0]).Build().Layers.Select(l => l.TeacherLayer), Is.EqualTo(new[] { 0, 3 }));
        Assert.Throws<ArgumentException>(() => PlanBuilder.For(toy).KeepLayers([1, 1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => PlanBuilder.For(toy).KeepLayers([4]));
    }

    [Test]
    public void A_choice_without_the_scores_it_ranks_by_names_the_missing_component()
    {
        LlamaConfig toy = PlanningFixtures.Toy();
        var ex = Assert.Throws<ArgumentException>(() => PlanBuilder.For(toy, PlanningFixtures.Scores(toy) with { Neurons = null }).KeepNeurons(8).Build());
        Assert.That(ex!.Message, Does.Contain("'neurons'"));
        Assert.That(Assert.Throws<ArgumentException>(() => PlanBuilder.For(toy).KeepTopLayers(2).Build())!.Message, Does.Contain("'layers'"));
        Assert.DoesNotThrow(() => PlanBuilder.For(toy).KeepNeurons(48).Build(), "keeping everything needs no scores");
    }

    [Test]
    public void Scores_that_do_not_fit_the_teacher_are_rejected_up_front()
    {
        LlamaConfig toy = PlanningFixtures.Toy();
        var ex = Assert.Throws<ArgumentException>(() => PlanBuilder.For(toy, PlanningFixtures.Scores(toy) with { HiddenChannels = [1, 2] }));
        Assert.That(ex!.Message, Does.Contain("hidden_channels: 2 values, expected 32"));
    }

    [Test]
    public void Top_tokens_always_keep_the_special_tokens()
    {
        LlamaConfig toy = PlanningFixtures.Toy();
        var scores = PlanningFixtures.Scores(toy) with { Tokens = [.. Enumerable.Range(0, 40).Select(i => (double)i)] };
        SurgeryPlan plan = PlanBuilder.For(toy, scores).KeepTopTokens(5).Build();
        Assert.That(plan.KeptTokens, Is.EqualTo(new[] { 1, 2, 37, 38, 39 }));
        Assert.That((plan.Student.VocabSize, plan.Student.BosTokenId, plan.Student.EosTokenIds[0]), Is.EqualTo((5, 0, 1)));
    }

    [Test]
    public void A_shape_smaller_vocabulary_requires_kept_tokens()
    {
        LlamaConfig toy = PlanningFixtures.Toy();
        var builder = PlanBuilder.For(toy, PlanningFixtures.Scores(toy)).WithShape(new StudentShape(2, 16, 16, 4, 1, 20));
        Assert.That(Assert.Throws<ArgumentException>(() => builder.Build())!.Message, Does.Contain("vocab 20"));
        Assert.That(builder.KeepTopTokens(20).Build().Student.VocabSize, Is.EqualTo(20));
    }
}
