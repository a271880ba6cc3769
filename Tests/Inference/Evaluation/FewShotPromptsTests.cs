using ModelSurgery.Inference.Evaluation;

namespace ModelSurgery.Tests.Evaluation;

public sealed class FewShotPromptsTests
{
    private static readonly TaskDocument[] Docs =
    [
        new("Q0", ["x0", "y0"], 0),
        new("Q1", ["x1", "y1"], 1),
        new("Q2", ["x2", "y2"], 0),
        new("Q3", ["x3", "y3"], 1),
        new("Q4", ["x4", "y4"], 0),
    ];

    [Test]
    public void Zero_shot_prompt_is_description_plus_query()
    {
        var doc = new TaskDocument("Q", ["a"], 0, "Intro.\n\n");
        Assert.That(FewShotPrompts.Render(doc, []), Is.EqualTo("Intro.\n\nQ"));
    }

    [Test]
    public void Examples_are_joined_with_blank_lines_and_answered_after_a_space()
    {
        string prompt = FewShotPrompts.Render(new TaskDocument("Q9", ["a"], 0, "D\n\n"), [Docs[1], Docs[2]]);
        Assert.That(prompt, Is.EqualTo("D\n\nQ1 y1\n\nQ2 x2\n\nQ9"));
    }

    [Test]
    public void Sampling_from_the_same_file_picks_the_harness_examples_with_one_generator_shared_across_documents()
    {
        // The harness's ContextSampler with fewshot_split == test_split: rnd.sample(docs, k + 1), drop the doc, keep k.
        // python3 -c "import random; r=random.Random(1234); print([[x for x in r.sample(range(5), 3) if x != d][:2] for d in range(5)])"
        IReadOnlyList<IReadOnlyList<int>> chosen = FewShotPrompts.SelectExamples(Docs, Docs, poolIsDocs: true, k: 2, seed: 1234, firstN: false);
        Assert.That(chosen, Is.EqualTo(new[] { new[] { 3, 4 }, [0, 4], [0, 4], [1, 0], [0, 2] }));

        IReadOnlyList<string> prompts = FewShotPrompts.Build(Docs, Docs, poolIsDocs: true, k: 2, seed: 1234, firstN: false);
        Assert.That(prompts[0], Is.EqualTo("Q3 y3\n\nQ4 x4\n\nQ0"));
        Assert.That(prompts[3], Is.EqualTo("Q1 y1\n\nQ0 x0\n\nQ3"));

        // python3 -c "import random; r=random.Random(7); print([[x for x in r.sample(range(5), 5) if x != d][:4] for d in range(5)])"
        Assert.That(
            FewShotPrompts.SelectExamples(Docs, Docs, poolIsDocs: true, k: 4, seed: 7, firstN: false),
            Is.EqualTo(new[] { new[] { 2, 1, 3, 4 }, [4, 0, 3, 2], [0, 4, 1, 3], [1, 0, 2, 4], [0, 3, 2, 1] }));
    }

    [Test]
    public void A_separate_pool_draws_k_unless_the_task_draws_an_extra_example()
    {
        TaskDocument[] pool = [.. Enumerable.Range(0, 6).Select(i => new TaskDocument($"P{i}", ["p", "q"], i % 2))];
        TaskDocument[] test = [new("T0", ["a", "b"], 0), new("T1", ["a", "b"], 1), new("T2", ["a", "b"], 0)];

        // python3 -c "import random; r=random.Random(1234); print([r.sample(range(6), 2) for d in range(3)])"
        Assert.That(
            FewShotPrompts.SelectExamples(test, pool, poolIsDocs: false, k: 2, seed: 1234, firstN: false),
            Is.EqualTo(new[] { new[] { 3, 0 }, [0, 5], [4, 0] }));

        // hellaswag, piqa, boolq: fewshot_split and test_split are both unset, so the harness draws k + 1 from train.
        // python3 -c "import random; r=random.Random(1234); print([r.sample(range(6), 3)[:2] for d in range(3)])"
        Assert.That(
            FewShotPrompts.SelectExamples(test, pool, poolIsDocs: false, k: 2, seed: 1234, firstN: false, drawExtra: true),
            Is.EqualTo(new[] { new[] { 3, 0 }, [0, 4], [5, 0] }));
        Assert.That(TaskSpec.HellaSwag("h").DrawsExtraFewShot && TaskSpec.Piqa("p").DrawsExtraFewShot && TaskSpec.BoolQ("b").DrawsExtraFewShot, Is.True);
        Assert.That(TaskSpec.ArcEasy("a").DrawsExtraFewShot || TaskSpec.Mmlu("m").DrawsExtraFewShot, Is.False);
        Assert.That((TaskSpec.ArcEasy("a") with { FewShotDrawsExtra = true }).DrawsExtraFewShot, Is.True);
    }

    [Test]
    public void Each_group_samples_with_its_own_generator_like_a_harness_subtask()
    {
        // Groups a (pool 0, 2, 4, 6) and b (pool 1, 3, 5), interleaved; each is a harness subtask seeded with 1234.
        // python3 -c "import random; r=random.Random(1234); a=[[x for x in r.sample(range(4), 3) if x != d][:2] for d in range(4)]; r=random.Random(1234); b=[[x for x in r.sample(range(3), 3) if x != d][:2] for d in range(3)]; print(a, b)"
        // printed [[3, 2], [0, 2], [0, 3], [1, 0]] [[1, 2], [0, 2], [0, 1]] (indices within each group).
        TaskDocument[] docs = [.. Enumerable.Range(0, 7).Select(i => new TaskDocument($"Q{i}", ["x", "y"], 0, string.Empty, i % 2 == 0 ? "a" : "b"))];
        IReadOnlyList<IReadOnlyList<int>> chosen = FewShotPrompts.SelectExamples(docs, docs, poolIsDocs: true, k: 2, seed: 1234, firstN: false);
        Assert.That(chosen, Is.EqualTo(new[] { new[] { 6, 4 }, [3, 5], [0, 4], [1, 5], [0, 6], [1, 3], [2, 0] }));
    }

    [Test]
    public void An_example_identical_to_the_document_is_dropped_as_the_harness_drops_equal_docs()
    {
        TaskDocument[] pool = [new("Same", ["a", "b"], 0), new("Other", ["a", "b"], 1)];
        TaskDocument[] test = [new("Same", ["a", "b"], 0)];

        IReadOnlyList<int> chosen = FewShotPrompts.SelectExamples(test, pool, poolIsDocs: false, k: 1, seed: 1234, firstN: true, drawExtra: true).Single();

        Assert.That(chosen, Is.EqualTo(new[] { 1 }));
    }

    [Test]
    public void First_n_takes_the_first_examples_of_the_same_group()
    {
        TaskDocument[] dev =
        [
            new("Dev A1", ["A", "B"], 1, "About a.\n\n", "a"),
            new("Dev B1", ["A", "B"], 0, "About b.\n\n", "b"),
            new("Dev A2", ["A", "B"], 0, "About a.\n\n", "a"),
            new("Dev A3", ["A", "B"], 0, "About a.\n\n", "a"),
        ];
        TaskDocument[] test = [new("Test A", ["A", "B"], 0, "About a.\n\n", "a")];

        string prompt = FewShotPrompts.Build(test, dev, poolIsDocs: false, k: 2, seed: 0, firstN: true).Single();

        Assert.That(prompt, Is.EqualTo("About a.\n\nDev A1 B\n\nDev A2 A\n\nTest A"));
    }

    [Test]
    public void Asking_for_more_examples_than_available_is_a_clear_error()
    {
        var ex = Assert.Throws<ArgumentException>(() => FewShotPrompts.Build(Docs, Docs, poolIsDocs: true, k: 5, seed: 1, firstN: false));
        Assert.That(ex!.Message, Does.Contain("needs 5 few-shot examples but only 4"));
    }
}
