using System.Text.Json;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Tests.Cli;

/// <summary><c>modelsurgery eval</c> on a tiny model with a tokenizer, against a direct <see cref="Evaluator"/> call.</summary>
public sealed class EvalCliTests
{
    private const string GenericTask = """
        {"context": "The sky is", "choices": [" blue", " green", " loud"], "answer": 0}
        {"context": "Two plus two is", "choices": [" four", " five"], "answer": 0}
        {"context": "Cats say", "choices": [" woof", " meow", " moo", " quack"], "answer": 1}
        {"context": "Water is", "choices": [" dry", " wet"], "answer": 1}
        """;

    private const string ArcTask = """
        {"id": "q1", "question": "Which is a planet?", "choices": {"text": ["Mars", "Moon", "Sun"], "label": ["A", "B", "C"]}, "answerKey": "A"}
        {"id": "q2", "question": "What do plants need?", "choices": {"text": ["salt", "light", "noise", "oil"], "label": ["A", "B", "C", "D"]}, "answerKey": "B"}
        {"id": "q3", "question": "Ice is", "choices": {"text": ["hot", "cold"], "label": ["1", "2"]}, "answerKey": "2"}
        """;

    private string _dir = null!;
    private string _model = null!;
    private string _generic = null!;
    private string _arc = null!;

    [OneTimeSetUp]
    public async Task CreateModelAndTasks()
    {
        _dir = Directory.CreateTempSubdirectory("cli-eval").FullName;
        _model = Path.Combine(_dir, "tiny");
        await CliFixtures.CreateTinyModelAsync(_dir, _model);
        _generic = Path.Combine(_dir, "facts.jsonl");
        _arc = Path.Combine(_dir, "arc.jsonl");
        await File.WriteAllTextAsync(_generic, GenericTask);
        await File.WriteAllTextAsync(_arc, ArcTask);
    }

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task Eval_writes_markdown_json_and_png_with_the_numbers_of_a_direct_evaluator_call()
    {
        string report = Path.Combine(_dir, "out", "report.md");
        Directory.CreateDirectory(Path.GetDirectoryName(report)!);

        CliRun run = await CliFixtures.RunOkAsync(
            "eval", "--model", _model, "--task", $"facts={_generic}", "--task", $"arc_easy={_arc}", "--batch-size", "3", "--out", report, "--device", "cpu");

        using var lm = ModelCheckpoint.Load(_model, new ModelLoadOptions { Device = "cpu" });
        var options = new EvaluationOptions
        {
            ModelName = "tiny",
            BatchSize = 3,
            MaxLength = lm.Config.MaxPositionEmbeddings,
            PrefixTokenId = lm.Config.BosTokenId,
        };
        ModelEvaluation direct = await Evaluator.EvaluateAsync(
            lm, TokenizerFiles.Load(_model), [new TaskSpec("facts", TaskFormat.Generic, _generic), TaskSpec.ArcEasy(_arc)], options);
        var expected = new EvaluationReport([direct]);

        Assert.That(direct["facts"]!.Documents, Is.EqualTo(4));
        Assert.That(direct["arc_easy"]!.Documents, Is.EqualTo(3));
        Assert.That(await File.ReadAllTextAsync(Path.ChangeExtension(report, ".json")), Is.EqualTo(expected.ToJson()));
        Assert.That(await File.ReadAllTextAsync(report), Is.EqualTo(expected.ToMarkdown()));
        Assert.That(run.Output, Does.Contain(expected.ToMarkdown()));
        // One chart per task metric, not only the first.
        Assert.That(expected.Columns, Has.Count.GreaterThan(2));
        foreach ((string task, string metric) in expected.Columns)
        {
            byte[] png = await File.ReadAllBytesAsync(Path.Combine(Path.GetDirectoryName(report)!, $"report.{task}.{metric}.png"));
            Assert.That(png.Take(8), Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }), $"{task} {metric}");
        }

        using JsonDocument json = JsonDocument.Parse(await File.ReadAllTextAsync(Path.ChangeExtension(report, ".json")));
        Assert.That(json.RootElement.ValueKind, Is.EqualTo(JsonValueKind.Object));
    }

    [Test]
    public async Task Batching_does_not_change_the_scores()
    {
        CliRun batched = await CliFixtures.RunOkAsync("eval", "--model", _model, "--task", $"facts={_generic}", "--task", $"arc_easy={_arc}", "--batch-size", "8");
        CliRun single = await CliFixtures.RunOkAsync("eval", "--model", _model, "--task", $"facts={_generic}", "--task", $"arc_easy={_arc}", "--batch-size", "1");

        Assert.That(batched.Output, Is.EqualTo(single.Output));
    }

    [Test]
    public async Task Models_are_named_in_the_report_as_the_user_names_them()
    {
        CliRun run = await CliFixtures.RunOkAsync("eval", "--model", $"teacher={_model}", "--model", _model, "--task", $"facts={_generic}", "--batch-size", "4");
        Assert.That(run.Output, Does.Contain("| teacher ").And.Contain("| " + Path.GetFileName(_model) + " "), run.ToString());

        CliRun clash = await CliFixtures.RunAsync("eval", "--model", _model, "--model", _model, "--task", $"facts={_generic}");
        Assert.That(clash.ExitCode, Is.EqualTo(2));
        Assert.That(clash.Error, Does.Contain("name them with name=folder"));
    }

    [TestCase("runs/a/checkpoints/final", "a/final")]
    [TestCase("runs/b/best", "b/best")]
    [TestCase("models/student", "student")]
    [TestCase("x=models/student", "x")]
    public void Default_names_say_which_run_a_checkpoint_comes_from(string argument, string expected) =>
        Assert.That(ModelSurgery.Cli.Commands.EvalCommand.NamedModels([argument]).Single().Name, Is.EqualTo(expected));

    [Test]
    public async Task A_missing_task_file_fails_with_one_line()
    {
        string missing = Path.Combine(_dir, "no-such-task.jsonl");
        CliRun run = await CliFixtures.RunAsync("eval", "--model", _model, "--task", $"facts={missing}");

        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.ErrorLines, Has.Length.EqualTo(1));
        Assert.That(run.Error, Does.Contain(missing).And.Not.Contain("   at "));
    }

    [Test]
    public async Task A_task_without_a_file_is_a_usage_error()
    {
        CliRun run = await CliFixtures.RunAsync("eval", "--model", _model, "--task", "facts");

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.Error, Does.Contain("name=file.jsonl"));
    }

    [Test]
    public async Task A_model_without_a_tokenizer_is_refused()
    {
        string bare = Path.Combine(_dir, "bare");
        await CliFixtures.RunOkAsync("synth", "--like", CliFixtures.WriteTinyConfig(_dir), "--dtype", "f32", "--out", bare);

        CliRun run = await CliFixtures.RunAsync("eval", "--model", bare, "--task", $"facts={_generic}");

        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.Error, Does.Contain("tokenizer"));
    }
}
