using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Planning;

namespace ModelSurgery.Surgery.Building;

/// <summary>
/// Where one student tensor comes from: a teacher tensor, and which of its rows and columns to keep (null = all, in order).
/// </summary>
/// <param name="Student">The student tensor (name, shape, role).</param>
/// <param name="TeacherName">The teacher tensor it is cut from.</param>
/// <param name="Rows">Kept indices along dimension 0, or null for all.</param>
/// <param name="Columns">Kept indices along dimension 1 (matrices only), or null for all.</param>
public sealed record TensorSelection(TensorSpec Student, string TeacherName, long[]? Rows, long[]? Columns)
{
    /// <summary>
    /// The selection for every student tensor of a valid, uniform plan, in student state-dict order. This is the whole
    /// mapping from plan to weights: heads are row blocks of q/k/v and column blocks of o_proj, neurons are rows of
    /// gate/up and columns of down_proj, hidden channels are the other axis of every matrix and the entries of every norm,
    /// and kept tokens are rows of the embedding and the head (in the plan's order, which defines the new ids).
    /// </summary>
    public static IReadOnlyList<TensorSelection> For(SurgeryPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        LlamaConfig teacher = plan.Teacher;
        long[]? channels = KeptOrAll(plan.HiddenChannels, teacher.HiddenSize);
        long[]? tokens = plan.KeptTokens is null ? null : KeptOrAll(plan.KeptTokens, teacher.VocabSize);
        var teacherNames = LlamaTensorLayout.Tensors(teacher).ToDictionary(s => (s.Layer, s.Role, s.IsBias), s => s.Name);

        var selections = new List<TensorSelection>();
        foreach (TensorSpec spec in plan.StudentTensors())
        {
            LayerPlan? layer = spec.Layer is int j ? plan.Layers[j] : null;
            long[]? queryRows = layer is null ? null : KeptOrAll(layer.QueryRows(teacher.HeadDim), teacher.NumAttentionHeads * teacher.HeadDim);
            long[]? kvRows = layer is null ? null : KeptOrAll(layer.KvRows(teacher.HeadDim), teacher.NumKeyValueHeads * teacher.HeadDim);
            long[]? neurons = layer is null ? null : KeptOrAll(layer.Neurons, teacher.IntermediateSize);
            (long[]? rows, long[]? columns) = spec.Role switch
            {
                TensorRole.Embedding or TensorRole.LmHead => (tokens, channels),
                TensorRole.InputNorm or TensorRole.PostAttentionNorm or TensorRole.FinalNorm => (channels, null),
                TensorRole.QueryProjection => (queryRows, channels),
                TensorRole.KeyProjection or TensorRole.ValueProjection => (kvRows, channels),
                TensorRole.OutputProjection => (channels, queryRows),
                TensorRole.GateProjection or TensorRole.UpProjection => (neurons, channels),
                TensorRole.DownProjection => (channels, neurons),
                _ => throw new InvalidOperationException($"No selection rule for tensor {spec.Name} ({spec.Role})."),
            };

            string teacherName = teacherNames[(layer?.TeacherLayer, spec.Role, spec.IsBias)];
            selections.Add(spec.IsBias ? new TensorSelection(spec, teacherName, rows, null) : new TensorSelection(spec, teacherName, rows, columns));
        }

        return selections;
    }

    /// <summary>The kept indices, or null when they are exactly 0..size-1 (nothing to select).</summary>
    private static long[]? KeptOrAll(IReadOnlyList<int> kept, int size)
    {
        bool all = kept.Count == size;
        for (int i = 0; all && i < kept.Count; i++)
        {
            all = kept[i] == i;
        }

        return all ? null : [.. kept.Select(k => (long)k)];
    }
}
