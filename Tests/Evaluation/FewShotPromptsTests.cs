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
    public void Sampling_from_the_same_file_never_uses_the_document_itself_and_is_seeded()
    {
        IReadOnlyList<string> first = FewShotPrompts.Build(Docs, Docs, poolIsDocs: true, k: 4, seed: 7, firstN: false);
        IReadOnlyList<string> again = FewShotPrompts.Build(Docs, Docs, poolIsDocs: true, k: 4, seed: 7, firstN: false);
        IReadOnlyList<string> other = FewShotPrompts.Build(Docs, Docs, poolIsDocs: true, k: 2, seed: 8, firstN: false);

        Assert.That(again, Is.EqualTo(first));
        for (int d = 0; d < Docs.Length; d++)
        {
            string[] parts = first[d].Split("\n\n");
            Assert.That(parts, Has.Length.EqualTo(5));
            Assert.That(parts[^1], Is.EqualTo($"Q{d}"));
            Assert.That(parts[..^1], Is.Unique);
            Assert.That(parts[..^1], Has.None.StartsWith($"Q{d} "));
            Assert.That(other[d].Split("\n\n"), Has.Length.EqualTo(3));
        }
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
