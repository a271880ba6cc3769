using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training.Distillation;

namespace ModelSurgery.Tests.Cli;

public sealed class DistillCommandTests
{
    private string _dir = null!;
    private string _teacher = null!;
    private string _student = null!;
    private string _tokens = null!;

    [SetUp]
    public async Task SetUp()
    {
        _dir = Directory.CreateTempSubdirectory("distill-cli").FullName;
        _teacher = await TrainCliSupport.SaveModelAsync(Path.Combine(_dir, "teacher"), seed: 1, layers: 3);
        _student = await TrainCliSupport.SaveModelAsync(Path.Combine(_dir, "student"), seed: 2);
        _tokens = TrainCliSupport.WriteTokens(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private string[] Distill(string outName, string student, string tokens, params string[] extra) =>
        ["distill", "--student", student, "--data", tokens, "--out", Path.Combine(_dir, outName), .. TrainCliSupport.FastOptions(30), .. extra];

    private double[] AssertLossFalls(string outName)
    {
        double[] losses = TrainCliSupport.Losses(Path.Combine(_dir, outName, "metrics.jsonl"));
        Assert.That(losses, Has.Length.EqualTo(30));
        Assert.That(losses.TakeLast(5).Average(), Is.LessThan(losses[0] * 0.8));
        Assert.That(Directory.Exists(Path.Combine(_dir, outName, "checkpoints", "final")));
        return losses;
    }

    [TestCase("kl")]
    [TestCase("jsd")]
    public async Task Distilling_from_a_running_teacher_lowers_the_student_loss(string kdLoss)
    {
        (int code, string output, string error) = await CliRunner.RunAsync(Distill("run", _student, _tokens, "--teacher", _teacher, "--kd-loss", kdLoss, "--temperature", "2", "--alpha", "0.5"));
        Assert.That(code, Is.Zero, error);
        Assert.That(output, Does.Contain("final checkpoint"));
        AssertLossFalls("run");
    }

    [Test]
    public async Task A_compressed_student_vocabulary_restricts_the_teacher_to_the_kept_ids()
    {
        // Student id i is teacher id kept[i]: the 48 kept ids are every id but 16 removed ones, in order.
        const int studentVocab = 48;
        int[] kept = [.. Enumerable.Range(0, TrainCliSupport.Vocab).Where(id => id % 4 != 1)];
        Assert.That(kept, Has.Length.EqualTo(studentVocab));
        string student = await TrainCliSupport.SaveModelAsync(Path.Combine(_dir, "small-vocab"), seed: 3, vocab: studentVocab);
        new VocabularyMap(kept, TrainCliSupport.Vocab).Save(Path.Combine(student, "vocab_map.json"));
        Directory.CreateDirectory(Path.Combine(_dir, "student-tokens"));
        string tokens = TrainCliSupport.WriteTokens(Path.Combine(_dir, "student-tokens"), vocab: studentVocab);

        (int code, _, string error) = await CliRunner.RunAsync(Distill("compressed", student, tokens, "--teacher", _teacher));
        Assert.That(code, Is.Zero, error);
        AssertLossFalls("compressed");
        Assert.That(File.Exists(Path.Combine(_dir, "compressed", "checkpoints", "final", "vocab_map.json")), "the map travels with the student");

        // Without the map the teacher's 64 logits cannot be compared with the student's 48.
        File.Delete(Path.Combine(student, "vocab_map.json"));
        (code, _, error) = await CliRunner.RunAsync(Distill("unmapped", student, tokens, "--teacher", _teacher));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(error, Does.Contain("do not match"));
    }

    [Test]
    public async Task Cached_teacher_logits_drive_distillation()
    {
        string cache = Path.Combine(_dir, "teacher.topk");
        (int code, string output, string error) = await CliRunner.RunAsync(
            ["cache-teacher", "--teacher", _teacher, "--data", _tokens, "--out", cache, "--top-k", "8", "--seq-len", "16", "--device", "cpu"]);
        Assert.That(code, Is.Zero, error);
        Assert.That(output, Does.Contain("top-8"));
        using (TeacherLogitCache opened = TeacherLogitCache.Open(cache))
        {
            Assert.That(opened.K, Is.EqualTo(8));
            Assert.That(opened.SeqLen, Is.EqualTo(16));
            Assert.That(opened.Count, Is.GreaterThan(100), "every training window is cached");
        }

        (code, _, error) = await CliRunner.RunAsync(Distill("cached", _student, _tokens, "--teacher-cache", cache));
        Assert.That(code, Is.Zero, error);
        AssertLossFalls("cached");

        string[] shorter = [.. Distill("wrong-length", _student, _tokens, "--teacher-cache", cache)];
        shorter[Array.IndexOf(shorter, "--seq-len") + 1] = "8";
        (code, _, error) = await CliRunner.RunAsync(shorter);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(error, Does.Contain("--seq-len 8"));
    }

    [Test]
    public async Task A_plan_adds_hidden_state_distillation_along_its_layer_map()
    {
        LlamaConfig teacher = TrainCliSupport.Config(layers: 3);
        LayerPlan Layer(int teacherLayer) => new()
        {
            TeacherLayer = teacherLayer,
            KvHeads = [0, 1],
            QueryHeads = [0, 1, 2, 3],
            Neurons = [.. Enumerable.Range(0, teacher.IntermediateSize)],
        };
        string plan = Path.Combine(_dir, "plan.json");
        new SurgeryPlan { Teacher = teacher, HiddenChannels = [.. Enumerable.Range(0, teacher.HiddenSize)], Layers = [Layer(0), Layer(2)] }.Save(plan);

        (int code, _, string error) = await CliRunner.RunAsync(Distill("hidden", _student, _tokens, "--teacher", _teacher, "--plan", plan, "--hidden-weight", "0.5"));
        Assert.That(code, Is.Zero, error);
        AssertLossFalls("hidden");
    }

    [Test]
    public async Task Missing_teacher_and_cache_is_a_usage_error()
    {
        (int code, _, string error) = await CliRunner.RunAsync(Distill("x", _student, _tokens));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("--teacher"));
    }

    [TestCase("--kd-loss", "mse")]
    [TestCase("--alpha", "2")]
    [TestCase("--temperature", "0")]
    public async Task Bad_distillation_options_are_usage_errors(params string[] extra)
    {
        (int code, _, string error) = await CliRunner.RunAsync(Distill("x", _student, _tokens, ["--teacher", _teacher, .. extra]));
        Assert.That(code, Is.EqualTo(2), error);
    }

    [TestCase("--temperature: must be positive", "--temperature", "0")]
    [TestCase("--alpha: must be in [0, 1]", "--alpha", "2")]
    [TestCase("--hidden-weight: must not be negative", "--hidden-weight", "-1")]
    [TestCase("--teacher-cache: cannot be combined with --plan", "--teacher-cache", "c.bin", "--plan", "plan.json")]
    public async Task Distillation_option_errors_name_the_flag(string expected, params string[] extra)
    {
        (int code, _, string error) = await CliRunner.RunAsync(Distill("x", _student, _tokens, ["--teacher", _teacher, .. extra]));
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error, Does.Contain(expected));
    }

    [Test]
    public async Task A_missing_teacher_folder_fails_with_one_line()
    {
        (int code, _, string error) = await CliRunner.RunAsync(Distill("x", _student, _tokens, "--teacher", Path.Combine(_dir, "nowhere")));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(error.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(error, Does.Contain("nowhere"));
    }
}
