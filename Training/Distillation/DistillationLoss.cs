using System.Text.Json.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Training.Distillation;

/// <summary>How the student's distribution is compared with the teacher's.</summary>
public enum DistillationDivergence
{
    /// <summary>KL(teacher || student): the student covers every mode of the teacher (Hinton et al.).</summary>
    [JsonStringEnumMemberName("kl")]
    ForwardKl,

    /// <summary>KL(student || teacher): the student concentrates on the teacher's main modes.</summary>
    [JsonStringEnumMemberName("rkl")]
    ReverseKl,

    /// <summary>Jensen-Shannon: (KL(p || m) + KL(q || m)) / 2 with m the average of the two; symmetric and bounded by ln 2.</summary>
    [JsonStringEnumMemberName("jsd")]
    JensenShannon,
}

/// <summary>
/// Logit distillation mixed with cross-entropy: loss = alpha * KD + (1 - alpha) * CE, where KD is the chosen divergence
/// between softmax(teacher / T) and softmax(student / T), averaged over positions and multiplied by T^2 so that its
/// gradients keep their size as the temperature changes (Hinton et al., 2015). CE is the plain next-token loss at T = 1.
/// When the vocabularies differ, the teacher's logits are first restricted to <see cref="KeptTeacherIds"/>
/// (student id i is teacher id kept[i]) and the softmax is taken over the kept ids only. A student vocabulary padded
/// past the kept ids (or past the teacher's vocabulary) has its padding columns left out of the distillation term: both
/// softmaxes run over the real columns, and the cross-entropy term (over the whole padded vocabulary) keeps padding
/// logits low.
/// </summary>
public sealed class DistillationLoss
{
    private readonly long[]? _kept;

    /// <summary>Creates the loss.</summary>
    /// <param name="divergence">Forward KL, reverse KL or JSD.</param>
    /// <param name="temperature">Softmax temperature T, positive.</param>
    /// <param name="alpha">Weight of the distillation term in [0, 1].</param>
    /// <param name="keptTeacherIds">For a compressed student vocabulary: the teacher id of each student id; null when the vocabularies are equal.</param>
    public DistillationLoss(DistillationDivergence divergence = DistillationDivergence.ForwardKl, double temperature = 1.0, double alpha = 0.5, IReadOnlyList<long>? keptTeacherIds = null)
    {
        if (!(temperature > 0) || !double.IsFinite(temperature))
        {
            throw new ArgumentOutOfRangeException(nameof(temperature), $"Distillation temperature must be positive; got {temperature}.");
        }

        if (!(alpha >= 0 && alpha <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(alpha), $"Distillation alpha must be in [0, 1]; got {alpha}.");
        }

        Divergence = divergence;
        Temperature = temperature;
        Alpha = alpha;
        _kept = keptTeacherIds is null ? null : [.. keptTeacherIds];
    }

    /// <summary>The divergence used.</summary>
    public DistillationDivergence Divergence { get; }

    /// <summary>Softmax temperature.</summary>
    public double Temperature { get; }

    /// <summary>Weight of the distillation term.</summary>
    public double Alpha { get; }

    /// <summary>Teacher id of each student id, or null.</summary>
    public IReadOnlyList<long>? KeptTeacherIds => _kept;

    /// <summary>Restricts teacher logits to the kept ids (unchanged when there is no map).</summary>
    /// <param name="teacherLogits">[..., Vt] teacher logits.</param>
    /// <returns>[..., Vs] logits in student id order.</returns>
    public Tensor RestrictTeacher(Tensor teacherLogits)
    {
        ArgumentNullException.ThrowIfNull(teacherLogits);
        if (_kept is null)
        {
            return teacherLogits.alias();
        }

        long teacherVocab = teacherLogits.shape[^1];
        if (_kept.Any(id => id < 0 || id >= teacherVocab))
        {
            throw new ArgumentException($"keptTeacherIds holds ids outside the teacher vocabulary of {teacherVocab}.", nameof(teacherLogits));
        }

        using Tensor index = torch.tensor(_kept, ScalarType.Int64, teacherLogits.device); // [Vs]
        return teacherLogits.index_select(-1, index); // [..., Vs]
    }

    /// <summary>The distillation term alone: divergence at temperature T, mean over positions, times T^2.</summary>
    /// <param name="studentLogits">[..., Vs] student logits.</param>
    /// <param name="teacherLogits">[..., Vt] teacher logits (restricted to the kept ids here).</param>
    /// <returns>Scalar float32 loss.</returns>
    public Tensor DistillationTerm(Tensor studentLogits, Tensor teacherLogits)
    {
        ArgumentNullException.ThrowIfNull(studentLogits);
        using var scope = torch.NewDisposeScope();
        (Tensor teacher, Tensor student) = Aligned(studentLogits, teacherLogits);
        return Term(student, teacher, studentLogits.shape[^1]).Loss.MoveToOuterDisposeScope();
    }

    /// <summary>alpha * KD + (1 - alpha) * CE.</summary>
    /// <param name="studentLogits">[B, T, Vs] student logits.</param>
    /// <param name="teacherLogits">[B, T, Vt] teacher logits.</param>
    /// <param name="targets">[B, T] next-token ids (student ids).</param>
    /// <returns>Scalar float32 loss.</returns>
    public Tensor Compute(Tensor studentLogits, Tensor teacherLogits, Tensor targets)
    {
        ArgumentNullException.ThrowIfNull(studentLogits);
        ArgumentNullException.ThrowIfNull(targets);
        using var scope = torch.NewDisposeScope();
        (Tensor teacher, Tensor student) = Aligned(studentLogits, teacherLogits);
        if (Alpha == 0)
        {
            return CrossEntropyObjective.Compute(studentLogits, targets).MoveToOuterDisposeScope();
        }

        if (Divergence == DistillationDivergence.ForwardKl && Temperature == 1 && student.shape[^1] == studentLogits.shape[^1] && !teacher.requires_grad)
        {
            return MixedSoftTargetLoss(student, teacher, targets).MoveToOuterDisposeScope();
        }

        (Tensor term, Tensor? studentLogProbabilities) = Term(student, teacher, studentLogits.shape[^1]);
        Tensor loss = Alpha * term;
        if (Alpha < 1)
        {
            // At T = 1 over the whole student vocabulary the KD term already holds log_softmax(student), which is what
            // cross_entropy computes first: reading the targets' entries from it saves a log_softmax over the vocabulary
            // and its backward.
            Tensor crossEntropy = studentLogProbabilities is null
                ? CrossEntropyObjective.Compute(studentLogits, targets)
                : nn.functional.nll_loss(studentLogProbabilities.reshape(-1, studentLogProbabilities.shape[^1]), targets.reshape(-1));
            loss = loss + ((1 - Alpha) * crossEntropy);
        }

        return loss.MoveToOuterDisposeScope();
    }

    // Forward KL at T = 1 mixed with cross-entropy is one cross-entropy against soft targets:
    //   alpha KL(p || q) + (1 - alpha) CE(y, q) = -sum_v w_v log q_v - alpha H(p),  w = alpha p + (1 - alpha) onehot(y),
    // so the student's log-softmax is taken once, its gradient is q - w (one pass back through the log-softmax), and the
    // teacher's side (p, w and its entropy) is built once without gradients, in place. The value is the same quantity
    // as the two terms taken apart; only its rounding differs.
    private Tensor MixedSoftTargetLoss(Tensor student, Tensor teacher, Tensor targets)
    {
        (Tensor softTargets, Tensor negativeEntropy) = TeacherSide(teacher); // [..., V] p, to become w; [...]
        Tensor teacherNegativeEntropy = negativeEntropy.sum(); // [] sum over positions of sum_v p log p
        if (Alpha < 1)
        {
            // (1 - alpha) is added at each position's target id: the cross-entropy's one-hot part.
            using var noGrad = torch.no_grad();
            softTargets.mul_(Alpha);
            using Tensor index = targets.to(softTargets.device).unsqueeze(-1); // [..., 1]
            using Tensor weight = torch.full(index.shape, 1 - Alpha, ScalarType.Float32, softTargets.device); // [..., 1]
            softTargets.scatter_add_(-1, index, weight);
        }

        long positions = student.numel() / student.shape[^1];
        Tensor studentLogProbabilities = student.log_softmax(-1, ScalarType.Float32); // [..., V] log q
        Tensor crossEntropySum = (softTargets * studentLogProbabilities).sum(); // [] sum_positions sum_v w log q
        return (teacherNegativeEntropy * Alpha - crossEntropySum) / positions;
    }

    // The teacher's logits restricted to the kept ids and the student's real columns, checked to match.
    private (Tensor Teacher, Tensor Student) Aligned(Tensor studentLogits, Tensor teacherLogits)
    {
        Tensor teacher = RestrictTeacher(teacherLogits); // [..., V]
        Tensor student = StudentColumns(studentLogits, teacher.shape[^1]); // [..., V]
        if (!teacher.shape.SequenceEqual(student.shape))
        {
            throw new ArgumentException(
                $"Teacher logits [{string.Join(", ", teacher.shape)}] (after the kept-id map) do not match student logits [{string.Join(", ", studentLogits.shape)}].",
                nameof(teacherLogits));
        }

        return (teacher, student);
    }

    // The KD term over aligned logits and, when it is exactly what cross-entropy needs (T = 1, no padding columns left
    // out), the student's float32 log-probabilities over its whole vocabulary; both in the caller's dispose scope.
    private (Tensor Loss, Tensor? StudentLogProbabilities) Term(Tensor student, Tensor teacher, long studentVocab)
    {
        Tensor logQ = Tempered(student).log_softmax(-1, ScalarType.Float32); // [..., V] student
        Tensor perPosition; // [...]
        if (Divergence == DistillationDivergence.ForwardKl && !teacher.requires_grad)
        {
            // KL(p || q) = sum_v p log p - sum_v p log q: the teacher's side once, without gradients, so the student's
            // gradient runs back through one product instead of exp, difference and product.
            (Tensor p, Tensor negativeEntropy) = TeacherSide(teacher); // [..., V], [...]
            perPosition = negativeEntropy - (p * logQ).sum(-1);
        }
        else
        {
            Tensor logP = Tempered(teacher).log_softmax(-1, ScalarType.Float32); // [..., V] teacher
            perPosition = Divergence switch
            {
                DistillationDivergence.ForwardKl => Kl(logP, logQ),
                DistillationDivergence.ReverseKl => Kl(logQ, logP),
                _ => Jsd(logP, logQ),
            };
        }

        Tensor loss = perPosition.mean() * (Temperature * Temperature);
        bool whole = Temperature == 1 && student.shape[^1] == studentVocab;
        return (loss, whole ? logQ : null);
    }

    // The teacher's side of forward KL, without gradients: p = softmax(teacher / T) [..., V] and sum_v p log p [...].
    private (Tensor Probabilities, Tensor NegativeEntropy) TeacherSide(Tensor teacher)
    {
        using var noGrad = torch.no_grad();
        Tensor logP = Tempered(teacher).log_softmax(-1, ScalarType.Float32); // [..., V]
        Tensor p = logP.exp(); // [..., V]
        return (p, logP.mul_(p).sum(-1));
    }

    // logits / T in float32; at T = 1 the division is skipped (it would copy the logits to give the same values) and the
    // log-softmax that follows converts to float32 as it reads.
    private Tensor Tempered(Tensor logits) => Temperature == 1 ? logits : logits.to(ScalarType.Float32) / Temperature;

    /// <summary>
    /// Distillation term against cached top-k teacher logits: the teacher distribution is softmax(values / T) renormalised
    /// over its k kept ids; the student's log-probabilities are its full-vocabulary log_softmax(student / T) read at those
    /// ids, so student mass outside the teacher's top k is penalised. Returns sum_k p_k (log p_k - log q_k), mean over
    /// positions, times T^2 (the forward KL of the truncated teacher; the divergence setting is not used here).
    /// </summary>
    /// <param name="studentLogits">[B, T, Vs] student logits.</param>
    /// <param name="topValues">[B, T, k] teacher logits of the top k ids.</param>
    /// <param name="topIndices">[B, T, k] int64 student ids of the top k.</param>
    /// <returns>Scalar float32 loss.</returns>
    public Tensor TopKDistillationTerm(Tensor studentLogits, Tensor topValues, Tensor topIndices)
    {
        ArgumentNullException.ThrowIfNull(studentLogits);
        ArgumentNullException.ThrowIfNull(topValues);
        ArgumentNullException.ThrowIfNull(topIndices);
        using var scope = torch.NewDisposeScope();
        return TopKTerm(studentLogits, topValues, topIndices).Loss.MoveToOuterDisposeScope();
    }

    // The top-k KD term and, at T = 1, the student's float32 log-probabilities over its whole vocabulary (what
    // cross-entropy reads); both in the caller's dispose scope.
    private (Tensor Loss, Tensor? StudentLogProbabilities) TopKTerm(Tensor studentLogits, Tensor topValues, Tensor topIndices)
    {
        Tensor logQAll = Tempered(studentLogits).log_softmax(-1, ScalarType.Float32); // [B, T, Vs]
        Tensor logQ = logQAll.gather(-1, topIndices); // [B, T, k]
        Tensor logP = Tempered(topValues).log_softmax(-1, ScalarType.Float32); // [B, T, k]
        Tensor loss = Kl(logP, logQ).mean() * (Temperature * Temperature);
        return (loss, Temperature == 1 ? logQAll : null);
    }

    /// <summary>alpha * top-k KD + (1 - alpha) * CE.</summary>
    /// <param name="studentLogits">[B, T, Vs] student logits.</param>
    /// <param name="topValues">[B, T, k] cached teacher logits.</param>
    /// <param name="topIndices">[B, T, k] int64 student ids.</param>
    /// <param name="targets">[B, T] next-token ids.</param>
    /// <returns>Scalar float32 loss.</returns>
    public Tensor ComputeTopK(Tensor studentLogits, Tensor topValues, Tensor topIndices, Tensor targets)
    {
        ArgumentNullException.ThrowIfNull(studentLogits);
        ArgumentNullException.ThrowIfNull(topValues);
        ArgumentNullException.ThrowIfNull(topIndices);
        ArgumentNullException.ThrowIfNull(targets);
        using var scope = torch.NewDisposeScope();
        if (Alpha == 0)
        {
            return CrossEntropyObjective.Compute(studentLogits, targets).MoveToOuterDisposeScope();
        }

        (Tensor term, Tensor? studentLogProbabilities) = TopKTerm(studentLogits, topValues, topIndices);
        Tensor loss = Alpha * term;
        if (Alpha < 1)
        {
            // At T = 1 cross-entropy reads the targets' entries of the log-softmax the KD term took.
            Tensor crossEntropy = studentLogProbabilities is null
                ? CrossEntropyObjective.Compute(studentLogits, targets)
                : nn.functional.nll_loss(studentLogProbabilities.reshape(-1, studentLogProbabilities.shape[^1]), targets.reshape(-1));
            loss = loss + ((1 - Alpha) * crossEntropy);
        }

        return loss.MoveToOuterDisposeScope();
    }

    // A student vocabulary padded past the teacher's (restricted) one, e.g. to a multiple of 64 by the vocabulary
    // compressor, has trailing columns no token ever maps to: the KD term compares the distributions over the real
    // columns only (the teacher has no opinion on padding; any padding mass left is paid for by the CE term).
    private static Tensor StudentColumns(Tensor studentLogits, long teacherVocab)
    {
        long studentVocab = studentLogits.shape[^1];
        return studentVocab > teacherVocab && studentLogits.shape.Length > 0
            ? studentLogits.narrow(-1, 0, teacherVocab) // [..., Vt] the padding columns dropped
            : studentLogits.alias();
    }

    // sum_v exp(logA) * (logA - logB) over the last dimension: KL(A || B) per position.
    private static Tensor Kl(Tensor logA, Tensor logB) => (logA.exp() * (logA - logB)).sum(-1);

    private static Tensor Jsd(Tensor logP, Tensor logQ)
    {
        Tensor logM = torch.logaddexp(logP, logQ) - Math.Log(2); // [..., V] log of the average distribution
        return 0.5 * (Kl(logP, logM) + Kl(logQ, logM));
    }
}
