using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Surgery;
using ModelSurgery.Surgery.Building;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Tests.Modeling;
using ModelSurgery.Tests.Vocabulary;

namespace ModelSurgery.Tests.Building;

/// <summary>The fluent flow's surgery: teacher -> calibrate -> score -> plan -> build (the rest: <c>StudentPipelineTests</c>).</summary>
public sealed class SurgeonTests
{
    private string _dir = null!;
    private string _teacher = null!;
    private int[] _tokens = null!;

    [SetUp]
    public async Task SetUp()
    {
        _dir = Directory.CreateTempSubdirectory("surgeon").FullName;
        _teacher = Path.Combine(_dir, "teacher");
        (await TinyTokenizedModel.SaveAsync(_teacher)).Dispose();
        _tokens = [.. TinyModels.RandomIds(800, TinyTokenizedModel.VocabSize, seed: 4).Select(i => (int)i)];
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task The_fluent_build_equals_the_steps_done_by_hand_and_records_its_plan()
    {
        Surgeon surgeon = Surgeon.ForTeacher(_teacher)
            .CalibrateOn(_tokens, sequences: 4, length: 32)
            .ScoreWith(ScoringMetrics.BlockInfluence, ScoringMetrics.L2)
            .Plan(plan => plan.KeepTopLayers(1).KeepWholeKvGroups(1).KeepNeuronFraction(0.5).KeepHiddenChannels(16));

        SurgeryResult result = await surgeon.BuildAsync(Path.Combine(_dir, "student"));

        // By hand: the same calibration, scores, plan and build.
        IReadOnlyList<ImportanceScores> scores = await ImportanceScorer.ScoreAsync(
            _teacher, CalibrationData.FromTokenStream(_tokens, 4, 32, 0), new ScoringOptions { Metrics = [ScoringMetrics.BlockInfluence, ScoringMetrics.L2] });
        SurgeryPlan byHand = PlanBuilder.For(surgeon.Teacher, ImportanceScores.Combine(scores))
            .KeepTopLayers(1).KeepWholeKvGroups(1).KeepNeuronFraction(0.5).KeepHiddenChannels(16).Build();
        Assert.That(result.Plan, Is.EqualTo(byHand));
        Assert.That(SurgeryPlan.Load(result.PlanPath), Is.EqualTo(byHand));
        Assert.That(result.Scores.Select(s => s.Metric), Is.EqualTo(new[] { ScoringMetrics.BlockInfluence, ScoringMetrics.L2 }));
        using LlamaForCausalLM student = ModelCheckpoint.Load(result.Student.Directory, new ModelLoadOptions { Device = "cpu" });
        Assert.That(student.Config.NumHiddenLayers, Is.EqualTo(1));
        Assert.That(student.Config.HiddenSize, Is.EqualTo(16));

        // A configured surgeon is a value: planning again gives the same plan without building.
        Assert.That(await surgeon.PlanAsync(), Is.EqualTo(byHand));
    }

    [Test]
    public void Building_without_a_plan_is_a_clear_error()
    {
        var ex = Assert.ThrowsAsync<InvalidOperationException>(() => Surgeon.ForTeacher(_teacher).BuildAsync(Path.Combine(_dir, "student")));
        Assert.That(ex!.Message, Does.Contain("Plan("));
        Assert.Throws<ArgumentException>(() => Surgeon.ForTeacher(_teacher).ScoreWith("no-such-metric"));
    }

    [Test]
    public async Task Building_reports_bytes_written_in_order_up_to_the_total()
    {
        var progress = new List<SurgeryProgress>();
        SurgeryResult surgery = await Surgeon.ForTeacher(_teacher)
            .UsePlan(PlanBuilder.For(TinyTokenizedModel.Config(tied: false)).KeepLayers([0]).Build())
            .ReportTo(new ListProgress<SurgeryProgress>(progress))
            .BuildAsync(Path.Combine(_dir, "student"));
        Assert.That(progress, Is.Not.Empty);
        Assert.That(progress[^1].Completed, Is.EqualTo(progress[^1].Total));
        // Building counts bytes written, in order.
        Assert.That(progress.Select(p => p.Unit), Is.All.EqualTo(ProgressUnit.Bytes));
        Assert.That(progress.Select(p => p.Completed), Is.Ordered.Ascending);
    }

    private sealed class ListProgress<T>(List<T> items) : IProgress<T>
    {
        public void Report(T value) => items.Add(value);
    }
}
