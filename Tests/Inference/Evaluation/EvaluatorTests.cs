using System.Text.Json;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Tests.Evaluation;

public sealed class EvaluatorTests
{
    private static readonly CharTokenizer Tokenizer = new(StandIns.Alphabet);
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("evaluator").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    /// <summary>
    /// Three documents scored by the bigram of <see cref="StandIns.Probabilities"/>:
    /// doc 0 "a" -> " a" ln(0.4 * 0.5) vs " b" ln(0.4 * 0.3): picks 0, gold 1 (acc 0, acc_norm 0);
    /// doc 1 "b" -> " b" ln(0.6 * 0.3) = -1.715 vs " ab" ln(0.6 * 0.5 * 0.3) = -2.408: acc picks 0, but per character
    /// -1.715 / 1 &lt; -2.408 / 2 = -1.204 so acc_norm picks 1 = gold (acc 0, acc_norm 1);
    /// doc 2 as doc 0 with gold 0 (acc 1, acc_norm 1). acc = 1/3, acc_norm = 2/3.
    /// </summary>
    private TaskSpec[] Tasks() =>
    [
        new TaskSpec("mine", TaskFormat.Generic, StandIns.WriteLines(_dir, "mine.jsonl",
            """{"context": "a", "choices": ["a", "b"], "answer": 1}""",
            """{"context": "b", "choices": ["b", "ab"], "answer": 1}""",
            """{"context": "a", "choices": ["a", "b"], "answer": 0}""")),
        TaskSpec.Text("text", StandIns.WriteLines(_dir, "text.jsonl", """{"text": "ab ab"}""")),
    ];

    private static EvaluationOptions Options(string name, int batchSize = 4) =>
        new() { ModelName = name, BatchSize = batchSize, MaxLength = 16, PrefixTokenId = CharTokenizer.Bos };

    [Test]
    public async Task Evaluation_computes_acc_acc_norm_stderr_and_bits_per_byte_by_hand()
    {
        var progress = new Recorder();
        ModelEvaluation result = await Evaluator.EvaluateAsync(new BigramLm(StandIns.Probabilities), Tokenizer, Tasks(), Options("teacher"), progress);

        TaskResult mine = result["mine"]!;
        Assert.That(mine.Documents, Is.EqualTo(3));
        Assert.That(mine.Metrics[MetricNames.Accuracy].Value, Is.EqualTo(1.0 / 3).Within(1e-12));
        Assert.That(mine.Metrics[MetricNames.NormalizedAccuracy].Value, Is.EqualTo(2.0 / 3).Within(1e-12));

        // Scores {0, 0, 1}: sample variance (2/9 + 4/9) / 2 = 1/3, stderr sqrt(1/3) / sqrt(3) = 1/3; {0, 1, 1} likewise.
        Assert.That(mine.Metrics[MetricNames.Accuracy].StandardError, Is.EqualTo(1.0 / 3).Within(1e-12));
        Assert.That(mine.Metrics[MetricNames.NormalizedAccuracy].StandardError, Is.EqualTo(1.0 / 3).Within(1e-12));

        double nll = -(Math.Log(0.3) + Math.Log(0.3) + Math.Log(0.6) + Math.Log(0.5) + Math.Log(0.3));
        Assert.That(result["text"]!.Metrics[MetricNames.BitsPerByte].Value, Is.EqualTo(nll / (Math.Log(2) * 5)).Within(1e-6));
        Assert.That(result["text"]!.Text!.ContextLength, Is.EqualTo(16));
        Assert.That(result.ParameterCount, Is.EqualTo(16));

        // 6 requests for the multiple-choice task, then 1 text document.
        Assert.That(progress.Reports.Where(r => r.Task == "mine").Max(r => r.Completed), Is.EqualTo(6));
        Assert.That(progress.Reports.Where(r => r.Task == "mine").Select(r => r.Unit), Is.All.EqualTo(ProgressUnit.Requests));
        Assert.That(progress.Reports.Last(), Is.EqualTo(new EvaluationProgress("text", 1, 2, 1, 1, ProgressUnit.Documents)));
    }

    [Test]
    public async Task Batch_size_does_not_change_any_metric()
    {
        ModelEvaluation one = await Evaluator.EvaluateAsync(new BigramLm(StandIns.Probabilities), Tokenizer, Tasks(), Options("m", batchSize: 1));
        ModelEvaluation many = await Evaluator.EvaluateAsync(new BigramLm(StandIns.Probabilities), Tokenizer, Tasks(), Options("m", batchSize: 5));

        Assert.That(many.Tasks.Select(t => t.Metrics.Values.ToList()), Is.EqualTo(one.Tasks.Select(t => t.Metrics.Values.ToList())));
        Assert.That(many["mine"]!.Predictions, Is.EqualTo(one["mine"]!.Predictions));
    }

    [Test]
    public void Limit_and_few_shot_shape_the_prompts()
    {
        TaskSpec spec = Tasks()[0] with { FewShot = 1 };
        IReadOnlyList<MultipleChoiceItem> items = Evaluator.BuildItems(spec, Options("m") with { Limit = 2 });

        Assert.That(items, Has.Count.EqualTo(2));

        // One example from the other documents, answered after " ", then "\n\n" and the question.
        Assert.That(items[1].Context, Is.AnyOf("a b\n\nb", "a a\n\nb"));
        Assert.That(items[0].Context, Is.AnyOf("b ab\n\na", "a a\n\na"));
    }

    [Test]
    public async Task Report_numbers_equal_the_individual_evaluations()
    {
        ModelEvaluation teacher = await Evaluator.EvaluateAsync(new BigramLm(StandIns.Probabilities), Tokenizer, Tasks(), Options("teacher"));
        ModelEvaluation student = await Evaluator.EvaluateAsync(new BigramLm(StandIns.OtherProbabilities), Tokenizer, Tasks(), Options("student"));
        var report = new EvaluationReport([student, teacher], referenceModel: "teacher");

        // The uniform student spends 2 bits on each of 5 one-byte tokens.
        double studentBpb = student["text"]!.Metrics[MetricNames.BitsPerByte].Value;
        double teacherBpb = teacher["text"]!.Metrics[MetricNames.BitsPerByte].Value;
        Assert.That(studentBpb, Is.EqualTo(2.0).Within(1e-6));

        ReportCell cell = report.Cells.Single(c => c.Model == "student" && c.Task == "text" && c.Metric == MetricNames.BitsPerByte);
        Assert.That(cell.Value, Is.EqualTo(student["text"]!.Metrics[MetricNames.BitsPerByte]));
        Assert.That(cell.DifferenceToReference, Is.EqualTo(studentBpb - teacherBpb));
        Assert.That(report.Cells.Where(c => c.Model == "teacher").Select(c => c.DifferenceToReference), Is.All.Null);

        string markdown = report.ToMarkdown();
        string[] lines = markdown.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines[0], Is.EqualTo("| Model | Parameters | mine acc | mine acc_norm | mine acc_bytes | text bits_per_byte | text token_perplexity |"));
        Assert.That(lines[2], Does.StartWith("| student | 16 | 0.3333 ± 0.3333 (0.0000) | 0.6667 ± 0.3333 (0.0000) |"));
        Assert.That(lines[2], Does.Contain(FormattableString.Invariant($"| 2.0000 (+{2.0 - teacherBpb:F4}) |")));
        Assert.That(lines[3], Does.StartWith("| teacher (reference) | 16 | 0.3333 ± 0.3333 |"));
        Assert.That(lines[3], Does.Contain(FormattableString.Invariant($"| {teacherBpb:F4} |")));

        using JsonDocument json = JsonDocument.Parse(report.ToJson());
        Assert.That(json.RootElement.GetProperty("reference").GetString(), Is.EqualTo("teacher"));
        JsonElement studentMine = json.RootElement.GetProperty("models")[0].GetProperty("tasks")[0];
        Assert.That(studentMine.GetProperty("metrics").GetProperty("acc_norm").GetProperty("value").GetDouble(), Is.EqualTo(student["mine"]!.Metrics[MetricNames.NormalizedAccuracy].Value));
        Assert.That(json.RootElement.GetProperty("models")[0].GetProperty("tasks")[1].GetProperty("metrics").GetProperty("bits_per_byte").GetProperty("standardError").GetString(), Is.EqualTo("NaN"));

        string md = Path.Combine(_dir, "out", "report.md");
        string js = Path.Combine(_dir, "out", "report.json");
        string png = Path.Combine(_dir, "out", "acc.png");
        report.WriteMarkdown(md);
        report.WriteJson(js);
        report.WriteBarChart(png, "mine", MetricNames.NormalizedAccuracy);
        Assert.That(File.ReadAllText(md), Is.EqualTo(markdown));
        Assert.That(File.ReadAllText(js), Is.EqualTo(report.ToJson()));
        Assert.That(File.ReadAllBytes(png).Take(4).ToArray(), Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47 }));
        Assert.That(Directory.GetFiles(Path.Combine(_dir, "out")), Has.Length.EqualTo(3));
    }

    [Test]
    public async Task Mmlu_reports_each_subject_and_pools_them_into_the_group()
    {
        // A uniform model ties every letter, so it always answers A: subject x (gold A, A, B, C) scores {1, 1, 0, 0},
        // subject y (gold A, B, D) scores {1, 0, 0}; the group pools them as in MultipleChoiceMetricsTests.
        string Line(string subject, int answer) =>
            $$"""{"question": "q", "subject": "{{subject}}", "choices": ["w", "x", "y", "z"], "answer": {{answer}}}""";
        string path = StandIns.WriteLines(_dir, "mmlu.jsonl", Line("x", 0), Line("y", 0), Line("x", 0), Line("y", 1), Line("x", 1), Line("y", 3), Line("x", 2));
        const string alphabet = " \nabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.:()";
        int v = alphabet.Length + 1;
        var uniform = new double[v, v];
        for (int i = 0; i < v; i++)
        {
            for (int j = 0; j < v; j++)
            {
                uniform[i, j] = 1.0 / v;
            }
        }

        ModelEvaluation result = await Evaluator.EvaluateAsync(new BigramLm(uniform), new CharTokenizer(alphabet), [TaskSpec.Mmlu(path)], Options("m") with { MaxLength = 512 });

        TaskResult mmlu = result["mmlu"]!;
        Assert.That(mmlu.Subtasks.Select(s => (s.Task, s.Documents)), Is.EqualTo(new[] { ("mmlu_x", 4), ("mmlu_y", 3) }));
        Assert.That(mmlu.Subtasks[1].Metrics[MetricNames.Accuracy].Value, Is.EqualTo(1.0 / 3).Within(1e-12));
        Assert.That(mmlu.Metrics[MetricNames.Accuracy].Value, Is.EqualTo(3.0 / 7).Within(1e-12));
        Assert.That(mmlu.Metrics[MetricNames.Accuracy].StandardError, Is.EqualTo(Math.Sqrt(1.0 / 21)).Within(1e-12));
    }

    [Test]
    public void Unknown_reference_model_is_a_clear_error()
    {
        var only = new ModelEvaluation("teacher", 1, []);
        var ex = Assert.Throws<ArgumentException>(() => _ = new EvaluationReport([only], "base"));
        Assert.That(ex!.Message, Does.Contain("'base'").And.Contain("teacher"));
    }

    [Test]
    public void Cancellation_stops_the_evaluation()
    {
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.That(
            async () => await Evaluator.EvaluateAsync(new BigramLm(StandIns.Probabilities), Tokenizer, Tasks(), Options("m"), cancellationToken: cancelled.Token),
            Throws.InstanceOf<OperationCanceledException>());
    }

    private sealed class Recorder : IProgress<EvaluationProgress>
    {
        public List<EvaluationProgress> Reports { get; } = [];

        public void Report(EvaluationProgress value)
        {
            lock (Reports)
            {
                Reports.Add(value);
            }
        }
    }
}
