using ModelSurgery.Surgery.Vocabulary;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Training.Distillation;

/// <summary>
/// Feeds a teacher with the full vocabulary from a student's token ids: with a compressed student vocabulary, student
/// id i is teacher id <c>kept[i]</c> (<see cref="VocabularyMap.KeptOldIds"/>), and the teacher must read the original ids.
/// </summary>
internal static class StudentToTeacherIds
{
    /// <summary>The teacher id of each student id, or null without a map.</summary>
    public static long[]? Of(VocabularyMap? map) => map is null ? null : [.. map.KeptOldIds.Select(id => (long)id)];

    /// <summary>The teacher ids of <paramref name="studentIds"/>; an alias of them when <paramref name="teacherIds"/> is null.</summary>
    /// <param name="studentIds">[B, T] int64 student ids.</param>
    /// <param name="teacherIds">Teacher id of each student id, or null when the vocabularies are equal.</param>
    /// <returns>[B, T] int64 teacher ids, on the device of <paramref name="studentIds"/>.</returns>
    /// <exception cref="ArgumentException">A student id has no teacher id (e.g. a padding id of the student vocabulary).</exception>
    public static Tensor Map(Tensor studentIds, IReadOnlyList<long>? teacherIds)
    {
        if (teacherIds is null)
        {
            return studentIds.alias();
        }

        using var scope = torch.NewDisposeScope();
        if (studentIds.numel() > 0 && (studentIds.min().item<long>() < 0 || studentIds.max().item<long>() >= teacherIds.Count))
        {
            throw new ArgumentException(
                $"Student ids run from {studentIds.min().item<long>()} to {studentIds.max().item<long>()}, but the vocabulary map gives teacher ids for 0..{teacherIds.Count - 1} only.",
                nameof(studentIds));
        }

        Tensor index = torch.tensor(teacherIds as long[] ?? [.. teacherIds], ScalarType.Int64, studentIds.device); // [Vs]
        return index.index_select(0, studentIds.reshape(-1)).reshape(studentIds.shape).MoveToOuterDisposeScope(); // [B, T]
    }
}
