"""The objective of a ModelSurgery run, in PyTorch: cross-entropy, logit distillation and the learning-rate schedule.

Each function mirrors the C# code named in its docstring, so a run moved here optimises what it optimised locally.
Only torch is used: the distributed part is Accelerate's, in train.py.
"""
import math

import torch
import torch.nn.functional as F


def learning_rate_at(step, peak, minimum, total_steps, warmup_steps):
    """LearningRateSchedule.At: linear warmup over warmup_steps, then cosine down to minimum at the last step."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))
    return minimum + (peak - minimum) * 0.5 * (1 + math.cos(math.pi * progress))


def cross_entropy(logits, labels):
    """CrossEntropyObjective.Compute: mean next-token loss in float32 over every position."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1))


def cross_entropy_per_window(logits, labels):
    """Mean next-token loss of each window, [B], for evaluation (the mean of these equals the local validation loss)."""
    per_token = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")  # [B, T]
    return per_token.mean(dim=1)


def teacher_input_ids(input_ids, kept_teacher_ids):
    """StudentToTeacherIds.Map: student id i is teacher id kept_teacher_ids[i] (vocab_map.json); unchanged without a map."""
    return input_ids if kept_teacher_ids is None else kept_teacher_ids[input_ids]


def _kl(log_a, log_b):
    # sum_v exp(log_a) * (log_a - log_b): KL(A || B) per position.
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def distillation_term(student_logits, teacher_logits, kept_teacher_ids, divergence, temperature):
    """DistillationLoss.DistillationTerm: the divergence at temperature T over the kept ids, mean over positions, times T^2.

    With a compressed student vocabulary the teacher's logits are first restricted to the kept teacher ids (student
    order); student columns past them (padding of the student vocabulary) stay out of the term, as locally.
    """
    if kept_teacher_ids is not None:
        teacher_logits = teacher_logits.index_select(-1, kept_teacher_ids)  # [B, T, V kept]
    teacher = teacher_logits.float()
    columns = teacher.shape[-1]
    student = student_logits[..., :columns] if student_logits.shape[-1] > columns else student_logits
    if student.shape != teacher.shape:
        raise ValueError(f"teacher logits {tuple(teacher.shape)} (after the kept-id map) do not match student logits {tuple(student_logits.shape)}")
    log_q = F.log_softmax(student.float() / temperature, dim=-1)  # student
    log_p = F.log_softmax(teacher / temperature, dim=-1)  # teacher
    if divergence == "forward_kl":
        per_position = _kl(log_p, log_q)
    elif divergence == "reverse_kl":
        per_position = _kl(log_q, log_p)
    elif divergence == "jsd":
        log_m = torch.logaddexp(log_p, log_q) - math.log(2)
        per_position = 0.5 * (_kl(log_p, log_m) + _kl(log_q, log_m))
    else:
        raise ValueError(f"unknown divergence {divergence!r}; expected forward_kl, reverse_kl or jsd")
    return per_position.mean() * (temperature * temperature)


def distillation_loss(student_logits, teacher_logits, labels, kept_teacher_ids, divergence, temperature, alpha):
    """DistillationLoss.Compute: alpha * KD + (1 - alpha) * cross-entropy."""
    loss = alpha * distillation_term(student_logits, teacher_logits, kept_teacher_ids, divergence, temperature)
    if alpha < 1:
        loss = loss + (1 - alpha) * cross_entropy(student_logits, labels)
    return loss
