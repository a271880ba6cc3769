using ModelSurgery.Inference.Evaluation;

// Expected choices are written inline next to the records they come from.
#pragma warning disable CA1861

namespace ModelSurgery.Tests.Evaluation;

/// <summary>Records are written in the datasets' published JSON layouts; expected prompts follow the harness's task YAMLs.</summary>
public sealed class TaskReaderTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("tasks").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void Arc_renders_question_answer_and_finds_letter_or_digit_answer_keys()
    {
        string path = StandIns.WriteLines(_dir, "arc.jsonl",
            """{"id": "Mercury_7175875", "question": "Which is the most likely effect of this increase in rotation?", "choices": {"text": ["Planetary density will decrease.", "Planetary years will become longer.", "Planetary days will become shorter.", "Planetary gravity will become stronger."], "label": ["A", "B", "C", "D"]}, "answerKey": "C"}""",
            """{"id": "NYSEDREGENTS_2015_4_8", "question": "Which is a solid?", "choices": {"text": ["milk", "ice", "steam"], "label": ["1", "2", "3"]}, "answerKey": "2"}""");

        IReadOnlyList<TaskDocument> docs = TaskReader.Read(TaskFormat.Arc, path);

        Assert.That(docs[0].Query, Is.EqualTo("Question: Which is the most likely effect of this increase in rotation?\nAnswer:"));
        Assert.That(docs[0].Choices, Is.EqualTo(new[] { "Planetary density will decrease.", "Planetary years will become longer.", "Planetary days will become shorter.", "Planetary gravity will become stronger." }));
        Assert.That(docs[0].Gold, Is.EqualTo(2));
        Assert.That(docs[1].Choices, Is.EqualTo(new[] { "milk", "ice", "steam" }));
        Assert.That(docs[1].Gold, Is.EqualTo(1));
        Assert.That(docs[0].Description, Is.Empty);
    }

    [Test]
    public void HellaSwag_joins_contexts_capitalises_ctx_b_and_cleans_wikihow_brackets()
    {
        string path = StandIns.WriteLines(_dir, "hellaswag.jsonl",
            """{"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "source_id": "activitynet~v_-JhWjGDPHMY", "split": "val", "split_type": "indomain", "label": "3"}""",
            """{"ind": 4, "activity_label": "Home and Garden", "ctx_a": "[header] How to grow grapes [title] Choose a sunny spot.", "ctx_b": "", "ctx": "", "endings": ["[step] Grapes need full sun. [substeps] Water them.", "Plant them in the dark.", "Buy a [title] trellis.", "Wait."], "source_id": "wikihow~1", "split": "val", "split_type": "zeroshot", "label": "0"}""",
            """{"activity_label": "Sports", "ctx_a": "People run.", "ctx_b": "THE crowd CHEERS", "endings": ["loudly.", "quietly."], "label": 1}""");

        IReadOnlyList<TaskDocument> docs = TaskReader.Read(TaskFormat.HellaSwag, path);

        Assert.That(docs[0].Query, Is.EqualTo("Roof shingle removal: A man is sitting on a roof. He"));
        Assert.That(docs[0].Choices[3], Is.EqualTo("starts pulling up roofing on a roof."));
        Assert.That(docs[0].Gold, Is.EqualTo(3));

        // strip -> " [title]" becomes ". " -> "[header]" dropped -> double spaces collapsed.
        Assert.That(docs[1].Query, Is.EqualTo("Home and Garden: How to grow grapes. Choose a sunny spot."));
        // The leading space left by "[step] " survives, as in the harness (strip runs before the tag removal).
        Assert.That(docs[1].Choices[0], Is.EqualTo(" Grapes need full sun. Water them."));
        Assert.That(docs[1].Choices[2], Is.EqualTo("Buy a. trellis."));

        // Python's capitalize lower-cases the rest.
        Assert.That(docs[2].Query, Is.EqualTo("Sports: People run. The crowd cheers"));
        Assert.That(docs[2].Gold, Is.EqualTo(1));
    }

    [Test]
    public void Piqa_renders_goal_and_two_solutions()
    {
        string path = StandIns.WriteLines(_dir, "piqa.jsonl",
            """{"goal": "When boiling butter, when it's ready, you can", "sol1": "Pour it onto a plate", "sol2": "Pour it into a jar", "label": 1}""");

        TaskDocument doc = TaskReader.Read(TaskFormat.Piqa, path).Single();

        Assert.That(doc.Query, Is.EqualTo("Question: When boiling butter, when it's ready, you can\nAnswer:"));
        Assert.That(doc.Choices, Is.EqualTo(new[] { "Pour it onto a plate", "Pour it into a jar" }));
        Assert.That(doc.Gold, Is.EqualTo(1));
    }

    [Test]
    public void BoolQ_reads_superglue_labels_and_original_boolean_answers()
    {
        string path = StandIns.WriteLines(_dir, "boolq.jsonl",
            """{"question": "do iran and afghanistan speak the same language", "passage": "Persian language -- Persian is spoken in Iran and Afghanistan.", "idx": 0, "label": 1}""",
            """{"question": "is the sun a planet", "title": "Sun", "answer": false, "passage": "The Sun is a star."}""");

        IReadOnlyList<TaskDocument> docs = TaskReader.Read(TaskFormat.BoolQ, path);

        Assert.That(docs[0].Query, Is.EqualTo("Persian language -- Persian is spoken in Iran and Afghanistan.\nQuestion: do iran and afghanistan speak the same language?\nAnswer:"));
        Assert.That(docs[0].Choices, Is.EqualTo(new[] { "no", "yes" }));
        Assert.That(docs[0].Gold, Is.EqualTo(1));
        Assert.That(docs[1].Gold, Is.EqualTo(0));
    }

    [Test]
    public void Mmlu_renders_subject_description_lettered_options_and_letter_choices()
    {
        string path = StandIns.WriteLines(_dir, "mmlu.jsonl",
            """{"question": " Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q. ", "subject": "abstract_algebra", "choices": ["0", "4", "2", "6"], "answer": 1}""");

        TaskDocument doc = TaskReader.Read(TaskFormat.Mmlu, path).Single();

        Assert.That(doc.Description, Is.EqualTo("The following are multiple choice questions (with answers) about abstract algebra.\n\n"));
        Assert.That(doc.Query, Is.EqualTo("Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:"));
        Assert.That(doc.Choices, Is.EqualTo(new[] { "A", "B", "C", "D" }));
        Assert.That(doc.Gold, Is.EqualTo(1));
        Assert.That(doc.Group, Is.EqualTo("abstract_algebra"));
        Assert.That(TaskSpec.Mmlu(path).Metrics, Is.EqualTo(new[] { MetricNames.Accuracy }));
    }

    [Test]
    public void Generic_format_uses_context_choices_and_answer_verbatim()
    {
        string path = StandIns.WriteLines(_dir, "mine.jsonl",
            """{"context": "2 + 2 =", "choices": ["3", "4"], "answer": 1}""");

        TaskDocument doc = TaskReader.Read(TaskFormat.Generic, path).Single();

        Assert.That(doc, Is.EqualTo(new TaskDocument("2 + 2 =", doc.Choices, 1)));
        Assert.That(doc.Choices, Is.EqualTo(new[] { "3", "4" }));
    }

    [TestCase("""{"choices": {"text": ["a"], "label": ["A"]}, "answerKey": "A"}""", "missing field 'question'")]
    [TestCase("""{"question": "q", "choices": {"label": ["A"]}, "answerKey": "A"}""", "missing field 'choices.text'")]
    [TestCase("""{"question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "E"}""", "answerKey 'E'")]
    [TestCase("""{"question": 3, "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "A"}""", "field 'question' must be a string")]
    [TestCase("""{"question": "q", """, "not valid JSON")]
    public void Malformed_records_name_the_file_line_and_field(string badLine, string expected)
    {
        string path = StandIns.WriteLines(_dir, "bad.jsonl",
            """{"question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "A"}""",
            string.Empty,
            badLine);

        var ex = Assert.Throws<InvalidDataException>(() => TaskReader.Read(TaskFormat.Arc, path));

        Assert.That(ex!.Message, Does.Contain(path).And.Contain("line 3").And.Contain(expected));
    }

    [Test]
    public void Answer_index_outside_the_choices_is_reported()
    {
        string path = StandIns.WriteLines(_dir, "piqa.jsonl", """{"goal": "g", "sol1": "a", "sol2": "b", "label": 2}""");
        var ex = Assert.Throws<InvalidDataException>(() => TaskReader.Read(TaskFormat.Piqa, path));
        Assert.That(ex!.Message, Does.Contain("line 1").And.Contain("'label' is 2"));
    }
}
