using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ModelSurgery.Training.Distillation;

/// <summary>A model that can also return the hidden state after each of its layers.</summary>
public interface IHiddenStateModel
{
    /// <summary>Runs the model and returns the logits and the per-layer hidden states.</summary>
    /// <param name="inputIds">[B, T] int64 token ids.</param>
    /// <returns>Logits [B, T, V] and hidden states, each [B, T, D], in layer order.</returns>
    (Tensor Logits, IReadOnlyList<Tensor> Hidden) ForwardWithHiddenStates(Tensor inputIds);
}

/// <summary>
/// Hidden-state distillation: the mean over mapped layers of MSE(project(student[i]), teacher[map[i]]). When the
/// widths differ each mapped student layer gets its own learned linear projection to the teacher width (trained with
/// the student); when they are equal the states are compared directly.
/// </summary>
public sealed class HiddenStateDistillation : nn.Module<IReadOnlyList<Tensor>, IReadOnlyList<Tensor>, Tensor>
{
    private readonly ModuleList<Linear> projections;
    private readonly int[] _layerMap;

    /// <summary>Creates the loss.</summary>
    /// <param name="layerMap">For student hidden state i, the teacher hidden state it should match.</param>
    /// <param name="studentWidth">Student hidden width.</param>
    /// <param name="teacherWidth">Teacher hidden width.</param>
    public HiddenStateDistillation(IReadOnlyList<int> layerMap, int studentWidth, int teacherWidth)
        : base(nameof(HiddenStateDistillation))
    {
        ArgumentNullException.ThrowIfNull(layerMap);
        if (layerMap.Count == 0 || layerMap.Any(t => t < 0))
        {
            throw new ArgumentException("The layer map must name at least one teacher layer and no negative index.", nameof(layerMap));
        }

        _layerMap = [.. layerMap];
        StudentWidth = studentWidth;
        TeacherWidth = teacherWidth;
        projections = studentWidth == teacherWidth
            ? new ModuleList<Linear>()
            : new ModuleList<Linear>([.. _layerMap.Select(_ => nn.Linear(studentWidth, teacherWidth, hasBias: false))]);
        RegisterComponents();
    }

    /// <summary>Student hidden width.</summary>
    public int StudentWidth { get; }

    /// <summary>Teacher hidden width.</summary>
    public int TeacherWidth { get; }

    /// <summary>For student hidden state i, the teacher hidden state index.</summary>
    public IReadOnlyList<int> LayerMap => _layerMap;

    /// <summary>The loss.</summary>
    /// <param name="studentHidden">Student hidden states, each [B, T, Ds].</param>
    /// <param name="teacherHidden">Teacher hidden states, each [B, T, Dt].</param>
    /// <returns>Scalar float32 loss.</returns>
    public override Tensor forward(IReadOnlyList<Tensor> studentHidden, IReadOnlyList<Tensor> teacherHidden)
    {
        ArgumentNullException.ThrowIfNull(studentHidden);
        ArgumentNullException.ThrowIfNull(teacherHidden);
        if (studentHidden.Count < _layerMap.Length || _layerMap.Max() >= teacherHidden.Count)
        {
            throw new ArgumentException(
                $"The layer map needs {_layerMap.Length} student and {_layerMap.Max() + 1} teacher hidden states; got {studentHidden.Count} and {teacherHidden.Count}.",
                nameof(studentHidden));
        }

        using var scope = torch.NewDisposeScope();
        Tensor total = torch.zeros([], ScalarType.Float32, studentHidden[0].device);
        for (int i = 0; i < _layerMap.Length; i++)
        {
            Tensor student = studentHidden[i].to(ScalarType.Float32); // [B, T, Ds]
            if (projections.Count > 0)
            {
                student = projections[i].forward(student); // [B, T, Dt]
            }

            Tensor teacher = teacherHidden[_layerMap[i]].to(ScalarType.Float32); // [B, T, Dt]
            total = total + nn.functional.mse_loss(student, teacher);
        }

        return (total / _layerMap.Length).MoveToOuterDisposeScope();
    }
}
