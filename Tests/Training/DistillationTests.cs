using ModelSurgery.Inference.Reporting;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Distillation;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Training;

public sealed class DistillationTests
{
    // Teacher logits [ln 3, 0] give p = [3/4, 1/4]; student logits [0, 0] give q = [1/2, 1/2].
    // KL(p || q) = 3/4 ln(3/4 / 1/2) + 1/4 ln(1/4 / 1/2) = 3/4 ln 1.5 + 1/4 ln 0.5            = 0.130812...
    // KL(q || p) = 1/2 ln(1/2 / 3/4) + 1/2 ln(1/2 / 1/4) = 1/2 ln(2/3) + 1/2 ln 2             = 0.143841...
    // m = (p + q) / 2 = [5/8, 3/8]; JSD = 1/2 [3/4 ln(6/5) + 1/4 ln(2/3)] + 1/2 [1/2 ln(4/5) + 1/2 ln(4/3)] = 0.033822...
    private static readonly double ForwardKl = (0.75 * Math.Log(1.5)) + (0.25 * Math.Log(0.5));
    private static readonly double ReverseKl = (0.5 * Math.Log(2.0 / 3)) + (0.5 * Math.Log(2));
    private static readonly double Jsd = (0.5 * ((0.75 * Math.Log(6.0 / 5)) + (0.25 * Math.Log(2.0 / 3)))) + (0.5 * ((0.5 * Math.Log(4.0 / 5)) + (0.5 * Math.Log(4.0 / 3))));

    private static Tensor Logits(params double[] values) => torch.tensor(values, ScalarType.Float32).reshape(1, 1, values.Length); // [1, 1, V]

    private static double Value(Tensor t) => t.to(ScalarType.Float64).item<double>();

    [TestCase(DistillationDivergence.ForwardKl)]
    [TestCase(DistillationDivergence.ReverseKl)]
    [TestCase(DistillationDivergence.JensenShannon)]
    public void Each_divergence_matches_the_hand_computed_value(DistillationDivergence divergence)
    {
        double expected = divergence switch
        {
            DistillationDivergence.ForwardKl => ForwardKl,
            DistillationDivergence.ReverseKl => ReverseKl,
            _ => Jsd,
        };
        using Tensor student = Logits(0, 0);
        using Tensor teacher = Logits(Math.Log(3), 0);
        using Tensor loss = new DistillationLoss(divergence, temperature: 1, alpha: 1).DistillationTerm(student, teacher);
        Assert.That(Value(loss), Is.EqualTo(expected).Within(1e-6));
        Assert.That(ForwardKl, Is.EqualTo(0.130812).Within(1e-6), "the written-out arithmetic");
    }

    [Test]
    public void Temperature_softens_both_sides_and_scales_by_its_square()
    {
        // At T = 2 the teacher logits [2 ln 3, 0] become [ln 3, 0], so the divergence is the one above, times T^2 = 4.
        using Tensor student = Logits(0, 0);
        using Tensor teacher = Logits(2 * Math.Log(3), 0);
        using Tensor loss = new DistillationLoss(DistillationDivergence.ForwardKl, temperature: 2, alpha: 1).DistillationTerm(student, teacher);
        Assert.That(Value(loss), Is.EqualTo(4 * ForwardKl).Within(1e-6));
    }

    [Test]
    public void Alpha_mixes_distillation_with_cross_entropy()
    {
        // CE of uniform logits over 2 ids is ln 2 whatever the target.
        using Tensor student = Logits(0, 0);
        using Tensor teacher = Logits(Math.Log(3), 0);
        using Tensor targets = torch.tensor(new long[] { 1 }).reshape(1, 1);
        using Tensor loss = new DistillationLoss(DistillationDivergence.ForwardKl, temperature: 1, alpha: 0.25).Compute(student, teacher, targets);
        Assert.That(Value(loss), Is.EqualTo((0.25 * ForwardKl) + (0.75 * Math.Log(2))).Within(1e-6));
    }

    [TestCase(1.0, 0)]
    [TestCase(1.0, 3)]
    [TestCase(2.0, 0)]
    public void The_mixed_loss_and_its_gradient_equal_the_two_terms_computed_apart(double temperature, int paddingColumns)
    {
        // At T = 1 over the whole vocabulary Compute reads cross-entropy off the KD term's log-probabilities; the value and
        // the gradient must equal alpha * KD + (1 - alpha) * CE taken separately (padding columns and T = 2 take the other path).
        const int vocab = 50;
        using var scope = torch.NewDisposeScope();
        using var generator = new Generator(11, torch.CPU);
        Tensor studentValues = torch.randn([2, 5, vocab + paddingColumns], generator: generator) * 3; // [B, T, Vs]
        Tensor teacher = torch.randn([2, 5, vocab], generator: generator) * 3; // [B, T, V]
        Tensor targets = torch.randint(vocab, [2, 5], generator: generator); // [B, T]
        var loss = new DistillationLoss(DistillationDivergence.ForwardKl, temperature, alpha: 0.3);

        Tensor mixedInput = studentValues.clone().requires_grad_(true);
        Tensor mixed = loss.Compute(mixedInput, teacher, targets);
        mixed.backward();
        Tensor apartInput = studentValues.clone().requires_grad_(true);
        Tensor apart = (0.3 * loss.DistillationTerm(apartInput, teacher)) + (0.7 * ModelSurgery.Training.CrossEntropyObjective.Compute(apartInput, targets));
        apart.backward();

        // A few float32 roundings of values of order one, and of gradients of order 1 / (B T).
        double epsilon = 1.2e-7;
        Assert.Multiple(() =>
        {
            Assert.That(Value(mixed), Is.EqualTo(Value(apart)).Within(16 * epsilon * Math.Max(1, Math.Abs(Value(apart)))));
            Assert.That(Value((mixedInput.grad! - apartInput.grad!).abs().max()), Is.LessThanOrEqualTo(16 * epsilon));
            Assert.That(Value(mixedInput.grad!.abs().max()), Is.GreaterThan(1e-3), "a gradient reaches the student");
        });
    }

    // How the student's vocabulary relates to the teacher's in the reference comparison below.
    public enum VocabularyCase
    {
        Same,
        PaddedStudent,
        KeptTeacherIds,
    }

    [Test]
    public void The_loss_equals_the_reference_formula_in_value_and_gradient(
        [Values] DistillationDivergence divergence,
        [Values(1.0, 2.0)] double temperature,
        [Values(0.0, 0.5, 1.0)] double alpha,
        [Values] VocabularyCase vocabulary,
        [Values(ScalarType.Float32, ScalarType.BFloat16)] ScalarType teacherDtype)
    {
        // The reference takes every piece apart: the teacher in float32, log_softmax of each side at T, kl_div for the
        // divergence, and cross_entropy over the whole student vocabulary at T = 1.
        const int batch = 2, positions = 5, vocab = 300;
        int padding = vocabulary == VocabularyCase.PaddedStudent ? 5 : 0;
        long[]? kept = vocabulary == VocabularyCase.KeptTeacherIds ? [.. Enumerable.Range(0, vocab).Select(i => (long)((i * 7) % (vocab + 20)))] : null;
        using var scope = torch.NewDisposeScope();
        using var generator = new Generator(17, torch.CPU);
        Tensor studentValues = torch.randn([batch, positions, vocab + padding], generator: generator) * 3; // [B, T, Vs]
        Tensor teacher = (torch.randn([batch, positions, kept is null ? vocab : vocab + 20], generator: generator) * 3).to(teacherDtype); // [B, T, Vt]
        Tensor targets = torch.randint(vocab + padding, [batch, positions], generator: generator); // [B, T]
        var loss = new DistillationLoss(divergence, temperature, alpha, kept);

        Tensor input = studentValues.clone().requires_grad_(true);
        Tensor value = loss.Compute(input, teacher, targets);
        value.backward();
        Tensor referenceInput = studentValues.clone().requires_grad_(true);
        Tensor reference = ReferenceLoss(referenceInput, teacher, targets, divergence, temperature, alpha, kept);
        reference.backward();

        // Both sides sum V terms per position (libtorch's CPU sums are pairwise: within ceil(log2 V) epsilon of the sum of
        // the terms' magnitudes) and differ in how they group them: the library subtracts the teacher's entropy (at most
        // T^2 ln V) from a cross-entropy instead of summing p (log p - log q). So the values agree within a few
        // log2(V) epsilon of |loss| + T^2 ln V; the gradients' elements, differences of probabilities times T over the
        // B T positions, within a few log2(V) epsilon of T / (B T).
        double epsilon = Math.Pow(2, -23);
        double sumBits = Math.Ceiling(Math.Log2(vocab));
        double valueTolerance = 4 * epsilon * sumBits * (Math.Abs(Value(reference)) + (temperature * temperature * Math.Log(vocab)));
        double gradientTolerance = 4 * epsilon * sumBits * temperature / (batch * positions);
        Assert.Multiple(() =>
        {
            Assert.That(Value(value), Is.EqualTo(Value(reference)).Within(valueTolerance));
            Assert.That(Value((input.grad! - referenceInput.grad!).abs().max()), Is.LessThanOrEqualTo(gradientTolerance));
            Assert.That(Value(input.grad!.abs().max()), Is.GreaterThan(1e-3), "a gradient reaches the student");
        });
    }

    // alpha * T^2 * divergence(softmax(teacher / T), softmax(student / T)) + (1 - alpha) * CE(student, targets), each piece
    // taken apart; the teacher restricted to the kept ids and the student to the teacher's columns for the divergence.
    private static Tensor ReferenceLoss(Tensor student, Tensor teacher, Tensor targets, DistillationDivergence divergence, double temperature, double alpha, long[]? kept)
    {
        using var scope = torch.NewDisposeScope();
        Tensor restricted = (kept is null ? teacher : teacher.index_select(-1, torch.tensor(kept))).to(ScalarType.Float32); // [B, T, V]
        long vocab = restricted.shape[^1];
        Tensor logQ = (student.narrow(-1, 0, vocab) / temperature).log_softmax(-1).reshape(-1, vocab); // [B*T, V]
        Tensor logP = (restricted / temperature).log_softmax(-1).reshape(-1, vocab); // [B*T, V]
        long count = logQ.shape[0];
        // kl_div(input, target) with log targets is sum target (log target - input) = KL(target || input).
        Tensor Kl(Tensor logTarget, Tensor logInput) => nn.functional.kl_div(logInput, logTarget, reduction: nn.Reduction.Sum, log_target: true) / count;
        Tensor logM = ((logP.exp() + logQ.exp()) / 2).log();
        Tensor divergenceValue = divergence switch
        {
            DistillationDivergence.ForwardKl => Kl(logP, logQ),
            DistillationDivergence.ReverseKl => Kl(logQ, logP),
            _ => (Kl(logP, logM) + Kl(logQ, logM)) / 2,
        };
        Tensor crossEntropy = nn.functional.cross_entropy(student.reshape(-1, student.shape[^1]), targets.reshape(-1));
        return ((alpha * temperature * temperature * divergenceValue) + ((1 - alpha) * crossEntropy)).MoveToOuterDisposeScope();
    }

    [Test]
    public void The_top_k_loss_equals_the_reference_formula_in_value_and_gradient([Values(1.0, 2.0)] double temperature, [Values(0.0, 0.5, 1.0)] double alpha)
    {
        // Reference: the student's full-vocabulary log_softmax at T read at the cached ids, kl_div against the cached
        // logits' log_softmax at T, and cross_entropy at T = 1, each taken apart.
        const int batch = 2, positions = 5, vocab = 300, k = 16;
        using var scope = torch.NewDisposeScope();
        using var generator = new Generator(19, torch.CPU);
        Tensor studentValues = torch.randn([batch, positions, vocab], generator: generator) * 3; // [B, T, V]
        Tensor topIndices = torch.randperm(vocab, generator: generator).narrow(0, 0, k).expand(batch, positions, k).contiguous(); // [B, T, k]
        Tensor topValues = torch.randn([batch, positions, k], generator: generator) * 3; // [B, T, k]
        Tensor targets = torch.randint(vocab, [batch, positions], generator: generator); // [B, T]
        var loss = new DistillationLoss(DistillationDivergence.ForwardKl, temperature, alpha);

        Tensor input = studentValues.clone().requires_grad_(true);
        Tensor value = loss.ComputeTopK(input, topValues, topIndices, targets);
        value.backward();
        Tensor referenceInput = studentValues.clone().requires_grad_(true);
        Tensor logQ = (referenceInput / temperature).log_softmax(-1).gather(-1, topIndices).reshape(-1, k); // [B*T, k]
        Tensor logP = (topValues / temperature).log_softmax(-1).reshape(-1, k); // [B*T, k]
        Tensor divergence = nn.functional.kl_div(logQ, logP, reduction: nn.Reduction.Sum, log_target: true) / (batch * positions);
        Tensor crossEntropy = nn.functional.cross_entropy(referenceInput.reshape(-1, vocab), targets.reshape(-1));
        Tensor reference = (alpha * temperature * temperature * divergence) + ((1 - alpha) * crossEntropy);
        reference.backward();

        // The same operations grouped the same way up to where cross-entropy reads its log-probabilities: within a few
        // log2(V) epsilon of |loss| in value and of T / (B T) in each gradient element.
        double epsilon = Math.Pow(2, -23);
        double sumBits = Math.Ceiling(Math.Log2(vocab));
        Assert.Multiple(() =>
        {
            Assert.That(Value(value), Is.EqualTo(Value(reference)).Within(4 * epsilon * sumBits * Math.Abs(Value(reference))));
            Assert.That(Value((input.grad! - referenceInput.grad!).abs().max()), Is.LessThanOrEqualTo(4 * epsilon * sumBits * temperature / (batch * positions)));
            Assert.That(Value(input.grad!.abs().max()), Is.GreaterThan(1e-3), "a gradient reaches the student");
        });
    }

    [Test]
    public void Teacher_logits_are_restricted_to_the_kept_ids_before_the_softmax()
    {
        // The teacher has 4 ids; the student keeps teacher ids 0 and 2, whose logits are [ln 3, 0]. Ids 1 and 3 must not
        // take probability mass, so the result equals the 2-id case.
        using Tensor student = Logits(0, 0);
        using Tensor teacher = Logits(Math.Log(3), 5, 0, -7);
        var loss = new DistillationLoss(DistillationDivergence.ForwardKl, temperature: 1, alpha: 1, keptTeacherIds: [0, 2]);
        using Tensor value = loss.DistillationTerm(student, teacher);
        Assert.Multiple(() =>
        {
            Assert.That(Value(value), Is.EqualTo(ForwardKl).Within(1e-6));
            Assert.That(() => new DistillationLoss(alpha: 1).DistillationTerm(student, teacher), Throws.ArgumentException.With.Message.Contains("do not match"));
        });
    }

    [Test]
    public void Top_k_distillation_renormalises_the_teacher_over_its_kept_ids()
    {
        // Student logits [0, 0, 0]: q = 1/3 each. Cached teacher top-2 logits [ln 3, 0] at ids [2, 0]: p = [3/4, 1/4].
        // Loss = 3/4 ln(3/4 / 1/3) + 1/4 ln(1/4 / 1/3) = 3/4 ln 2.25 + 1/4 ln 0.75.
        using Tensor student = Logits(0, 0, 0);
        using Tensor values = Logits(Math.Log(3), 0);
        using Tensor indices = torch.tensor(new long[] { 2, 0 }).reshape(1, 1, 2);
        using Tensor loss = new DistillationLoss(alpha: 1).TopKDistillationTerm(student, values, indices);
        Assert.That(Value(loss), Is.EqualTo((0.75 * Math.Log(2.25)) + (0.25 * Math.Log(0.75))).Within(1e-6));
    }

    [Test]
    public void Hidden_state_distillation_is_mse_and_learns_a_projection_when_widths_differ()
    {
        // Equal widths: student [1, 2] against teacher [0, 0] gives MSE (1 + 4) / 2 = 2.5.
        using var same = new HiddenStateDistillation([0], 2, 2);
        using Tensor student = torch.tensor(new float[] { 1, 2 }).reshape(1, 1, 2);
        using Tensor teacher = torch.zeros(1, 1, 2);
        using Tensor loss = same.forward([student], [teacher]);
        using var projected = new HiddenStateDistillation([1, 0], 2, 3);
        Assert.Multiple(() =>
        {
            Assert.That(Value(loss), Is.EqualTo(2.5).Within(1e-6));
            Assert.That(same.parameters().Count(), Is.Zero);
            Assert.That(projected.parameters().Select(p => p.shape), Is.EqualTo(new[] { new long[] { 3, 2 }, [3, 2] }));
        });
    }

    [Test]
    public async Task A_student_distilled_from_a_teacher_with_hidden_states_learns()
    {
        string dir = Directory.CreateTempSubdirectory("distill").FullName;
        try
        {
            using TokenFile file = TokenFile.Open(TrainingTestData.WritePatternFile(dir, 16, 20, 50));
            long[] windows = [.. Enumerable.Range(0, (int)TokenWindows.Count(file.Count, 16)).Select(i => (long)i)];
            using var teacher = new TinyCausalLm(16, 24, seed: 7);
            await new Trainer(teacher, new TrainingOptions { LearningRate = 1e-2, BatchSize = 4, SeqLen = 16, Steps = 30, EvalEvery = 0, OutputDir = Path.Combine(dir, "t") })
                .TrainAsync(new TrainingData(file, windows, []));

            using var student = new TinyCausalLm(16, 8, seed: 8);
            var hidden = new HiddenStateDistillation([0, 1], 8, 24);
            var objective = new DistillationObjective(teacher, new DistillationLoss(DistillationDivergence.ForwardKl, temperature: 2, alpha: 0.5), hidden, hiddenWeight: 0.1);
            float[] projectionBefore = hidden.parameters().First().data<float>().ToArray();
            float[] teacherBefore = teacher.parameters().First().data<float>().ToArray();
            TrainingResult result = await new Trainer(student, new TrainingOptions { LearningRate = 1e-2, BatchSize = 4, SeqLen = 16, Steps = 20, EvalEvery = 0, OutputDir = Path.Combine(dir, "s") }, objective)
                .TrainAsync(new TrainingData(file, windows, []));

            Assert.Multiple(() =>
            {
                Assert.That(objective.Parameters, Has.Count.EqualTo(2));
                Assert.That(result.History[^1].Loss, Is.LessThan(result.History[0].Loss * 0.7));
                Assert.That(hidden.parameters().First().data<float>().ToArray(), Is.Not.EqualTo(projectionBefore), "the projection is trained");
                Assert.That(teacher.parameters().First().data<float>().ToArray(), Is.EqualTo(teacherBefore), "the teacher is frozen");
            });
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public async Task The_top_k_cache_round_trips_and_with_k_equal_to_the_vocabulary_matches_full_distillation()
    {
        string dir = Directory.CreateTempSubdirectory("topk").FullName;
        try
        {
            using TokenFile file = TokenFile.Open(TrainingTestData.WritePatternFile(dir, 16, 4, 40));
            long[] windows = [5, 1, 3, 0];
            using var teacher = new TinyCausalLm(16, 8, seed: 3);
            using var student = new TinyCausalLm(16, 8, seed: 4);
            string path = Path.Combine(dir, "teacher.topk");
            var reports = new List<TeacherCacheProgress>();
            await TeacherLogitCache.WriteAsync(teacher, file, windows, path, k: 16, seqLen: 8, batchSize: 3, progress: new SynchronousProgress<TeacherCacheProgress>(reports.Add));
            using TeacherLogitCache cache = TeacherLogitCache.Open(path);
            // One report per batch of 3 windows, counted in windows of the known total; the file is exactly FileBytes.
            Assert.That(reports.Select(r => (r.Completed, r.Total, r.Unit)), Is.EqualTo(new[] { (3L, (long?)4, ProgressUnit.Windows), (4L, (long?)4, ProgressUnit.Windows) }));
            Assert.That(new FileInfo(path).Length, Is.EqualTo(TeacherLogitCache.FileBytes(windows.Length, seqLen: 8, k: 16)));

            var sampler = new BatchSampler(file, [3, 5], 2, 8, 0, shuffle: false);
            TrainingBatch batch = sampler.Next();
            (Tensor values, Tensor indices) = cache.Read(batch.Windows);
            using Tensor teacherLogits = teacher.forward(batch.Inputs).detach(); // [2, 8, 16]
            using Tensor studentLogits = student.forward(batch.Inputs).detach();
            var loss = new DistillationLoss(DistillationDivergence.ForwardKl, temperature: 2, alpha: 1);
            using Tensor cached = loss.TopKDistillationTerm(studentLogits, values, indices);
            using Tensor full = loss.DistillationTerm(studentLogits, teacherLogits);
            using Tensor top3 = new CachedDistillationObjective(cache, loss).Loss(student, batch);

            Assert.Multiple(() =>
            {
                Assert.That(cache.Count, Is.EqualTo(4));
                Assert.That(values.shape, Is.EqualTo(new long[] { 2, 8, 16 }));
                Assert.That(values[.., .., 0].data<float>().ToArray(), Is.EqualTo(teacherLogits.max(-1).values.data<float>().ToArray()));
                Assert.That(Value(cached), Is.EqualTo(Value(full)).Within(1e-5));
                Assert.That(Value(top3), Is.EqualTo(Value(full)).Within(1e-5));
                Assert.That(() => cache.Read([2]), Throws.ArgumentException.With.Message.Contains("Window 2"));
            });

            File.WriteAllBytes(Path.Combine(dir, "cut.topk"), File.ReadAllBytes(path)[..^4]);
            Assert.That(() => TeacherLogitCache.Open(Path.Combine(dir, "cut.topk")), Throws.TypeOf<InvalidDataException>().With.Message.Contains("cut.topk"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
