using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Distillation;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Training;

/// <summary>
/// Distillation into a student with a compressed vocabulary: batches hold student ids, the teacher must read the original
/// ids they stand for, and the KD target is the teacher's distribution over the kept tokens only.
/// </summary>
public sealed class CompressedVocabularyDistillationTests
{
    private const int TeacherVocab = 16;

    // Student id i is teacher id Kept[i]; every id moves, so a teacher fed student ids sees different tokens.
    private static readonly int[] Kept = [1, 3, 4, 8, 11, 15];

    private static readonly VocabularyMap Map = new(Kept, TeacherVocab);

    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("compressed-kd").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static Tensor TeacherIds(Tensor studentIds)
    {
        using Tensor index = torch.tensor(Kept.Select(i => (long)i).ToArray()); // [Vs]
        return index.index_select(0, studentIds.reshape(-1)).reshape(studentIds.shape); // [B, T]
    }

    private static double Value(Tensor t) => t.to(ScalarType.Float64).item<double>();

    [Test]
    public void The_teacher_reads_original_ids_and_the_target_is_its_distribution_over_the_kept_tokens()
    {
        using var teacher = new RecordingTeacher(new TinyCausalLm(TeacherVocab, 8, seed: 21));
        using var student = new TinyCausalLm(Kept.Length, 8, seed: 22);
        using var scope = torch.NewDisposeScope();
        Tensor tokens = torch.tensor(new long[] { 0, 5, 2, 2, 4, 1, 3, 5, 1, 0 }, [2, 5]); // [B, T+1] student ids
        var batch = new TrainingBatch(tokens, [0, 1]);
        var objective = new DistillationObjective(teacher, new DistillationLoss(DistillationDivergence.ForwardKl, temperature: 1, alpha: 1), vocabularyMap: Map);

        Tensor loss = objective.Loss(student, batch);

        Tensor originalIds = TeacherIds(batch.Inputs); // [B, T]
        Assert.That(teacher.Inputs!.data<long>().ToArray(), Is.EqualTo(originalIds.data<long>().ToArray()), "the teacher is fed the original ids");

        // The KD target written out: softmax over the teacher's logits of the kept ids (student order), run on original ids.
        using var noGrad = torch.no_grad();
        Tensor teacherLogits = teacher.Inner.forward(originalIds); // [B, T, Vt]
        Tensor logP = teacherLogits.index_select(-1, torch.tensor(Kept.Select(i => (long)i).ToArray())).log_softmax(-1); // [B, T, Vs]
        Tensor logQ = student.forward(batch.Inputs).log_softmax(-1); // [B, T, Vs]
        double expected = Value((logP.exp() * (logP - logQ)).sum(-1).mean());
        Assert.That(Value(loss), Is.EqualTo(expected).Within(1e-5));

        // Fed the student ids instead (the old behaviour), the teacher gives another target and another loss.
        Tensor wrongP = teacher.Inner.forward(batch.Inputs).index_select(-1, torch.tensor(Kept.Select(i => (long)i).ToArray())).log_softmax(-1); // [B, T, Vs]
        double wrong = Value((wrongP.exp() * (wrongP - logQ)).sum(-1).mean());
        Assert.That(Math.Abs(wrong - expected), Is.GreaterThan(1e-3), "the test tells the two apart");
    }

    [TestCase(DistillationDivergence.ForwardKl)]
    [TestCase(DistillationDivergence.ReverseKl)]
    [TestCase(DistillationDivergence.JensenShannon)]
    public void A_student_vocabulary_padded_past_the_kept_tokens_is_distilled_over_the_kept_columns(DistillationDivergence divergence)
    {
        // The compressor pads the 6 kept rows to a multiple of 4: two padding ids no token maps to.
        const int padded = 8;
        using var teacher = new TinyCausalLm(TeacherVocab, 8, seed: 25);
        using var student = new TinyCausalLm(padded, 8, seed: 26);
        using var scope = torch.NewDisposeScope();
        var batch = new TrainingBatch(torch.tensor(new long[] { 0, 5, 2, 2, 4, 1, 3, 5, 1, 0 }, [2, 5]), [0, 1]);
        var objective = new DistillationObjective(teacher, new DistillationLoss(divergence, temperature: 2, alpha: 1), vocabularyMap: Map);

        double loss = Value(objective.Loss(student, batch));

        // The same term with the student's padding columns cut off by hand: the teacher has no say on them.
        using var noGrad = torch.no_grad();
        Tensor teacherLogits = teacher.forward(TeacherIds(batch.Inputs)); // [B, T, Vt]
        Tensor studentLogits = student.forward(batch.Inputs); // [B, T, 8]
        var plain = new DistillationLoss(divergence, temperature: 2, alpha: 1);
        Tensor kept = torch.tensor(Kept.Select(i => (long)i).ToArray()); // [Vs]
        double expected = Value(plain.DistillationTerm(studentLogits.narrow(-1, 0, Kept.Length), teacherLogits.index_select(-1, kept)));
        Assert.That(loss, Is.EqualTo(expected).Within(1e-5));
        Assert.That(double.IsFinite(loss), Is.True);

        // Padding logits do not move the KD term; with alpha < 1 the CE term over the whole padded vocabulary does see them.
        var withLossIds = new DistillationLoss(divergence, temperature: 2, alpha: 1, keptTeacherIds: [.. Kept.Select(i => (long)i)]);
        Tensor shifted = studentLogits.clone();
        shifted.narrow(-1, Kept.Length, padded - Kept.Length).add_(5.0);
        Assert.That(Value(withLossIds.DistillationTerm(shifted, teacherLogits)), Is.EqualTo(Value(withLossIds.DistillationTerm(studentLogits, teacherLogits))).Within(1e-6));
        var mixed = new DistillationLoss(divergence, temperature: 2, alpha: 0.5, keptTeacherIds: [.. Kept.Select(i => (long)i)]);
        Assert.That(Value(mixed.Compute(shifted, teacherLogits, batch.Targets)), Is.GreaterThan(Value(mixed.Compute(studentLogits, teacherLogits, batch.Targets))));

        // A student narrower than the kept tokens is still a mismatch.
        Assert.That(() => withLossIds.DistillationTerm(studentLogits.narrow(-1, 0, 5), teacherLogits), Throws.ArgumentException.With.Message.Contains("do not match"));
    }

    [Test]
    public void The_loss_kept_ids_alone_also_map_the_teacher_inputs_and_a_disagreeing_map_is_rejected()
    {
        using var teacher = new RecordingTeacher(new TinyCausalLm(TeacherVocab, 8, seed: 23));
        using var student = new TinyCausalLm(Kept.Length, 8, seed: 24);
        using var scope = torch.NewDisposeScope();
        var batch = new TrainingBatch(torch.tensor(new long[] { 5, 4, 3, 2, 1, 0 }, [1, 6]), [0]);
        long[] kept = [.. Kept.Select(i => (long)i)];
        var withLossIds = new DistillationObjective(teacher, new DistillationLoss(alpha: 0.5, keptTeacherIds: kept));
        var withMap = new DistillationObjective(teacher, new DistillationLoss(alpha: 0.5), vocabularyMap: Map);

        double fromLossIds = Value(withLossIds.Loss(student, batch));
        Assert.That(teacher.Inputs!.data<long>().ToArray(), Is.EqualTo(TeacherIds(batch.Inputs).data<long>().ToArray()));
        Assert.That(fromLossIds, Is.EqualTo(Value(withMap.Loss(student, batch))).Within(1e-6));

        Assert.That(
            () => new DistillationObjective(teacher, new DistillationLoss(keptTeacherIds: [.. Enumerable.Reverse(kept)]), vocabularyMap: Map),
            Throws.ArgumentException.With.Property(nameof(ArgumentException.ParamName)).EqualTo("vocabularyMap"));
        var outside = new TrainingBatch(torch.tensor(new long[] { 0, 6, 1 }, [1, 3]), [0]);
        Assert.That(() => withMap.Loss(student, outside), Throws.ArgumentException.With.Message.Contains("0..5"));
    }

    [Test]
    public async Task The_logit_cache_runs_the_teacher_on_original_ids_and_stores_student_ids()
    {
        const int seqLen = 8;
        using TokenFile file = TokenFile.Open(TrainingTestData.WritePatternFile(_dir, Kept.Length, 4, 20));
        long[] windows = [.. Enumerable.Range(0, (int)TokenWindows.Count(file.Count, seqLen)).Select(i => (long)i)];
        using var teacher = new TinyCausalLm(TeacherVocab, 8, seed: 25);
        string path = Path.Combine(_dir, "teacher.topk");
        await TeacherLogitCache.WriteAsync(teacher, file, windows, path, k: 3, seqLen: seqLen, batchSize: 2, vocabularyMap: Map);
        using TeacherLogitCache cache = TeacherLogitCache.Open(path);

        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        TrainingBatch batch = new BatchSampler(file, windows, windows.Length, seqLen, 0, shuffle: false).Next();
        (Tensor values, Tensor indices) = cache.Read(batch.Windows); // [B, T, 3] each
        Tensor restricted = teacher.forward(TeacherIds(batch.Inputs)).index_select(-1, torch.tensor(Kept.Select(i => (long)i).ToArray())); // [B, T, Vs]
        (Tensor expectedValues, Tensor expectedIds) = restricted.topk(3, dim: -1); // [B, T, 3] each

        Assert.That(values.allclose(expectedValues, rtol: 0, atol: 1e-5), "the teacher's logits on the original ids");
        Assert.That(indices.data<long>().ToArray(), Is.EqualTo(expectedIds.data<long>().ToArray()), "the ids are student ids of the kept tokens");
        Assert.That(indices.max().item<long>(), Is.LessThan(Kept.Length));
    }

    /// <summary>A teacher that remembers the ids it was last fed.</summary>
    private sealed class RecordingTeacher : nn.Module<Tensor, Tensor>
    {
        private readonly TinyCausalLm inner;

        public RecordingTeacher(TinyCausalLm model)
            : base(nameof(RecordingTeacher))
        {
            inner = model;
            RegisterComponents();
        }

        public TinyCausalLm Inner => inner;

        public Tensor? Inputs { get; private set; }

        public override Tensor forward(Tensor input)
        {
            Inputs?.Dispose();
            Inputs = input.clone().DetachFromDisposeScope();
            return inner.forward(input);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                Inputs?.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
