using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training.Data;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ModelSurgery.Training.Distillation;

/// <summary>
/// Trains the student against a teacher run in the same process: the teacher is put in eval mode and run without
/// gradients (in inference mode when only its logits are needed), in whatever dtype it was loaded (e.g. bfloat16 to save
/// memory; its logits are compared in float32).
/// Optionally adds hidden-state distillation weighted by <c>hiddenWeight</c>; then both models must implement
/// <see cref="IHiddenStateModel"/>. With a compressed student vocabulary (a <see cref="VocabularyMap"/>, or the loss's
/// <see cref="DistillationLoss.KeptTeacherIds"/>), batches hold student ids: the teacher is fed the original ids they stand
/// for, and its logits are restricted to the kept ids before the loss.
/// </summary>
public sealed class DistillationObjective : ITrainingObjective
{
    private readonly nn.Module<Tensor, Tensor> _teacher;
    private readonly DistillationLoss _loss;
    private readonly HiddenStateDistillation? _hidden;
    private readonly double _hiddenWeight;
    private readonly long[]? _teacherIds;

    /// <summary>Creates the objective.</summary>
    /// <param name="teacher">The teacher: ids [B, T] to logits [B, T, Vt]; it is not trained.</param>
    /// <param name="loss">The logit distillation loss.</param>
    /// <param name="hidden">Optional hidden-state distillation (its projections are trained with the student).</param>
    /// <param name="hiddenWeight">Weight of the hidden-state term.</param>
    /// <param name="teacherDtype">Optional lower precision for the teacher (e.g. bfloat16): the teacher is converted in place.</param>
    /// <param name="vocabularyMap">
    /// The student's compressed vocabulary (its <c>vocab_map.json</c>); null when the student has the teacher's vocabulary
    /// or when <paramref name="loss"/> carries the kept teacher ids.
    /// </param>
    /// <exception cref="ArgumentException">The map disagrees with the loss's kept ids, or hidden-state distillation lacks a capable teacher.</exception>
    public DistillationObjective(
        nn.Module<Tensor, Tensor> teacher,
        DistillationLoss loss,
        HiddenStateDistillation? hidden = null,
        double hiddenWeight = 1.0,
        ScalarType? teacherDtype = null,
        VocabularyMap? vocabularyMap = null)
    {
        _teacher = teacher ?? throw new ArgumentNullException(nameof(teacher));
        if (teacherDtype is { } dtype)
        {
            _teacher.to(dtype);
        }

        ArgumentNullException.ThrowIfNull(loss);
        _teacherIds = StudentToTeacherIds.Of(vocabularyMap);
        if (_teacherIds is not null && loss.KeptTeacherIds is { } kept && !kept.SequenceEqual(_teacherIds))
        {
            throw new ArgumentException("The vocabulary map and the loss's kept teacher ids differ; give one of them, or the same ids.", nameof(vocabularyMap));
        }

        // One map serves both sides: the teacher reads teacher ids, and the loss restricts its logits to the same ids.
        _teacherIds ??= loss.KeptTeacherIds is { } lossIds ? [.. lossIds] : null;
        _loss = _teacherIds is not null && loss.KeptTeacherIds is null
            ? new DistillationLoss(loss.Divergence, loss.Temperature, loss.Alpha, _teacherIds)
            : loss;
        if (hidden is not null && teacher is not IHiddenStateModel)
        {
            throw new ArgumentException("Hidden-state distillation needs a teacher that implements IHiddenStateModel.", nameof(teacher));
        }

        _hidden = hidden;
        _hiddenWeight = hiddenWeight;
        foreach (Parameter p in _teacher.parameters())
        {
            p.requires_grad = false;
        }

        Parameters = hidden is null ? [] : [.. hidden.named_parameters().Select(p => ("hidden." + p.name, p.parameter))];
    }

    /// <inheritdoc />
    public IReadOnlyList<(string Name, Parameter Parameter)> Parameters { get; }

    /// <inheritdoc />
    public Tensor Loss(nn.Module<Tensor, Tensor> model, TrainingBatch batch)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batch);
        using var scope = torch.NewDisposeScope();
        Tensor inputs = batch.Inputs; // [B, T]
        Tensor teacherInputs = StudentToTeacherIds.Map(inputs, _teacherIds).to(Trainer.ModelDevice(_teacher)); // [B, T] teacher ids
        Tensor teacherLogits;
        IReadOnlyList<Tensor>? teacherHidden = null;
        _teacher.eval();
        if (_hidden is not null)
        {
            // No-grad, not inference mode: the teacher's hidden states are saved for the backward of the projected MSE,
            // which inference tensors may not be.
            using var noGrad = torch.no_grad();
            (teacherLogits, teacherHidden) = ((IHiddenStateModel)_teacher).ForwardWithHiddenStates(teacherInputs); // [B, T, Vt]
        }
        else
        {
            // Inference mode skips autograd's bookkeeping (version counters, view tracking) on every teacher op; the logits
            // only feed the loss's no-grad teacher side or functional ops, which inference tensors allow.
            using var inference = torch.inference_mode();
            teacherLogits = _teacher.forward(teacherInputs); // [B, T, Vt]
        }

        Tensor loss;
        if (_hidden is not null)
        {
            if (model is not IHiddenStateModel student)
            {
                throw new ArgumentException("Hidden-state distillation needs a student that implements IHiddenStateModel.", nameof(model));
            }

            (Tensor logits, IReadOnlyList<Tensor> hidden) = student.ForwardWithHiddenStates(inputs); // [B, T, Vs]
            loss = _loss.Compute(logits, teacherLogits.to(logits.device), batch.Targets) + (_hiddenWeight * _hidden.forward(hidden, [.. teacherHidden!.Select(h => h.to(logits.device))]));
        }
        else
        {
            Tensor logits = model.forward(inputs); // [B, T, Vs]
            loss = _loss.Compute(logits, teacherLogits.to(logits.device), batch.Targets);
        }

        return loss.MoveToOuterDisposeScope();
    }
}
