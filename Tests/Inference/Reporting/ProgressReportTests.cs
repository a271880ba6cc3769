using System.Reflection;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Surgery.Building;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Surgery;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Distillation;
using ModelSurgery.Training.Export;
using ModelSurgery.Training.Recipes;
using ModelSurgery.Training;

namespace ModelSurgery.Tests.Reporting;

/// <summary>
/// Every progress record of the library speaks the one contract (<see cref="IProgressReport"/>) with honest numbers:
/// the types are found by reflection, so a new record cannot be left out, and each is checked on a report of the kind
/// its producer sends.
/// </summary>
public sealed class ProgressReportTests
{
    private static readonly Assembly[] Library = [typeof(IProgressReport).Assembly, typeof(Surgeon).Assembly, typeof(Trainer).Assembly];

    /// <summary>A typical report of each record and the count, total and unit it must show.</summary>
    private static readonly Dictionary<Type, (IProgressReport Report, long Completed, long? Total, ProgressUnit Unit)> Samples = new()
    {
        [typeof(TrainingProgress)] = (new TrainingProgress(3, 10, 2.5, 3e-4, 1.2, 4096, TimeSpan.FromSeconds(7), false, null), 3, 10, ProgressUnit.Steps),
        [typeof(EvaluationProgress)] = (new EvaluationProgress("hellaswag", 1, 3, 40, 400), 40, 400, ProgressUnit.Requests),
        [typeof(PerplexityProgress)] = (new PerplexityProgress(512, 2048, 31.5), 512, 2048, ProgressUnit.Tokens),
        [typeof(SyntheticCheckpointProgress)] = (new SyntheticCheckpointProgress(2, 9, 1_000_000, 4_000_000), 1_000_000, 4_000_000, ProgressUnit.Bytes),
        [typeof(ScoringProgress)] = (new ScoringProgress("taylor", 4, 8), 4, 8, ProgressUnit.Steps),
        [typeof(SurgeryProgress)] = (new SurgeryProgress("building", 5_000, 20_000, ProgressUnit.Bytes), 5_000, 20_000, ProgressUnit.Bytes),
        [typeof(StudentBuildProgress)] = (new StudentBuildProgress(3, 12, 9_000, 5_000, 20_000), 5_000, 20_000, ProgressUnit.Bytes),
        [typeof(CountingProgress)] = (new CountingProgress(10, 65_536, 16_000, 2.5), 65_536, null, ProgressUnit.Bytes),
        [typeof(ModelCompressionProgress)] = (new ModelCompressionProgress(null, new StudentBuildProgress(3, 12, 9_000, 5_000, 20_000)), 5_000, 20_000, ProgressUnit.Bytes),
        [typeof(TokenizeProgress)] = (new TokenizeProgress(256, 70_000, "corpus/a.jsonl"), 256, null, ProgressUnit.Documents),
        [typeof(TeacherCacheProgress)] = (new TeacherCacheProgress(16, 64), 16, 64, ProgressUnit.Windows),
        [typeof(JobExportProgress)] = (new JobExportProgress("copying", "student/model.safetensors", 1_000, 8_000), 1_000, 8_000, ProgressUnit.Bytes),
        [typeof(PipelineProgress)] = (new PipelineProgress("distillation", "loss 2.5", 3, 10, ProgressUnit.Steps), 3, 10, ProgressUnit.Steps),
        [typeof(LogLikelihoodProgress)] = (new LogLikelihoodProgress(6, 7), 6, 7, ProgressUnit.Requests),
        [typeof(RecipeProgress)] = (new RecipeProgress("data", "started", 0, null, ProgressUnit.Steps), 0, null, ProgressUnit.Steps),
    };

    private static IEnumerable<Type> Implementations() =>
        Library.SelectMany(a => a.GetExportedTypes()).Where(t => !t.IsInterface && !t.IsAbstract && typeof(IProgressReport).IsAssignableFrom(t));

    [Test]
    public void Every_public_progress_type_implements_the_contract()
    {
        // A record named ...Progress outside the contract is one the command line could not draw.
        Type[] outside = [.. Library.SelectMany(a => a.GetExportedTypes())
            .Where(t => t.Name.EndsWith("Progress", StringComparison.Ordinal) && !t.IsGenericType && !typeof(IProgressReport).IsAssignableFrom(t))];
        Assert.That(outside, Is.Empty);
    }

    [Test]
    public void Every_implementation_has_a_checked_sample()
    {
        Assert.That(Implementations().Where(t => !Samples.ContainsKey(t)).Select(t => t.FullName), Is.Empty, "add a sample for each new progress record");
        Assert.That(Implementations().Count(), Is.EqualTo(Samples.Count));
    }

    [TestCaseSource(nameof(SampleTypes))]
    public void A_report_says_how_much_of_how_much_in_which_unit(Type type)
    {
        (IProgressReport report, long completed, long? total, ProgressUnit unit) = Samples[type];
        Assert.Multiple(() =>
        {
            Assert.That(report.GetType(), Is.EqualTo(type));
            Assert.That(report.Completed, Is.EqualTo(completed));
            Assert.That(report.Total, Is.EqualTo(total));
            Assert.That(report.Unit, Is.EqualTo(unit));
            Assert.That(Enum.IsDefined(report.Unit), Is.True);
            // Never a fake 0 for "unknown", and never more done than there is.
            Assert.That(report.Total, Is.Null.Or.GreaterThan(0));
            Assert.That(report.Completed, Is.LessThanOrEqualTo(report.Total ?? long.MaxValue).And.GreaterThanOrEqualTo(0));
            Assert.That(report.Status, Is.Null.Or.Not.Empty);
        });
    }

    [Test]
    public void Domain_fields_reach_the_status()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Samples[typeof(TrainingProgress)].Report.Status, Is.EqualTo("loss 2.5000 lr 3.00E-004 4096 tokens/s"));
            Assert.That(Samples[typeof(PerplexityProgress)].Report.Status, Is.EqualTo("ppl 31.500"));
            Assert.That(Samples[typeof(EvaluationProgress)].Report.Status, Is.EqualTo("hellaswag (2/3)"));
            Assert.That(Samples[typeof(TokenizeProgress)].Report.Status, Is.EqualTo("70,000 tokens, a.jsonl"));
            Assert.That(Samples[typeof(JobExportProgress)].Report.Status, Is.EqualTo("copying model.safetensors"));
            Assert.That(Samples[typeof(ModelCompressionProgress)].Report.Status, Is.EqualTo("building: 3/12 tensors"));
            Assert.That(new ModelCompressionProgress(new CountingProgress(10, 65_536, 16_000, 2.5), null).Total, Is.Null, "counting a streamed corpus has no total");
        });
    }

    [Test]
    public void Synchronous_progress_reports_on_the_calling_thread_in_order()
    {
        var seen = new List<(long, int)>();
        var progress = new SynchronousProgress<TeacherCacheProgress>(p => seen.Add((p.Completed, Environment.CurrentManagedThreadId)));
        for (long i = 1; i <= 100; i++)
        {
            progress.Report(new TeacherCacheProgress(i, 100));
        }

        int thread = Environment.CurrentManagedThreadId;
        Assert.That(seen, Is.EqualTo(Enumerable.Range(1, 100).Select(i => ((long)i, thread))));
    }

    [Test]
    public void The_eta_is_the_rate_since_the_start_applied_to_what_is_left()
    {
        Assert.Multiple(() =>
        {
            Assert.That(ProgressEta.Remaining(250, TimeSpan.FromSeconds(10), 750), Is.EqualTo(TimeSpan.FromSeconds(30)));
            Assert.That(ProgressEta.Remaining(0, TimeSpan.FromSeconds(10), 750), Is.Null, "no rate yet");
            Assert.That(ProgressEta.Remaining(0, TimeSpan.Zero, 0), Is.EqualTo(TimeSpan.Zero), "nothing left");
            Assert.That(ProgressEta.Format(TimeSpan.FromSeconds(75)), Is.EqualTo("01:15"));
            Assert.That(ProgressEta.Format(TimeSpan.FromSeconds(3_675)), Is.EqualTo("1:01:15"));
        });
    }

    private static Type[] SampleTypes() => [.. Samples.Keys];
}
