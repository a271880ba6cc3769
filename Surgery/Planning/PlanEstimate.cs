using System.Globalization;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Surgery.Planning;

/// <summary>
/// What building a student from a plan costs, estimated from shapes alone. Reads: only the kept rows and columns of each
/// teacher tensor (student elements at the teacher's element size). Writes: every student tensor at the student's element
/// size (file headers not counted). Peak memory of a streaming build that handles one tensor at a time: the largest
/// student tensor held twice (its slice read in the teacher's dtype plus its copy in the student's dtype) plus the I/O buffer.
/// </summary>
/// <param name="TeacherParameters">All teacher parameters.</param>
/// <param name="StudentParameters">All student parameters.</param>
/// <param name="TeacherBytes">Size of the whole teacher checkpoint (for comparison with <paramref name="BytesToRead"/>).</param>
/// <param name="BytesToRead">Bytes read from the teacher.</param>
/// <param name="BytesToWrite">Bytes written for the student.</param>
/// <param name="PeakBytes">Estimated peak memory of a streaming build.</param>
/// <param name="LargestTensor">Name of the largest student tensor, which sets the peak.</param>
/// <param name="TeacherBytesPerElement">Element size of the teacher's weights.</param>
/// <param name="StudentBytesPerElement">Element size of the student's weights.</param>
/// <param name="IoBufferBytes">Read/write buffer included in the peak.</param>
public sealed record PlanEstimate(
    long TeacherParameters,
    long StudentParameters,
    long TeacherBytes,
    long BytesToRead,
    long BytesToWrite,
    long PeakBytes,
    string LargestTensor,
    int TeacherBytesPerElement,
    int StudentBytesPerElement,
    long IoBufferBytes)
{
    /// <summary>Default I/O buffer counted in the peak: 64 MiB.</summary>
    public const long DefaultIoBufferBytes = 64L << 20;

    /// <summary>Estimates the cost of building <paramref name="plan"/>'s student.</summary>
    /// <param name="plan">A valid plan.</param>
    /// <param name="teacherDtype">Teacher weight dtype (float32, bfloat16, float16, ...); null uses the teacher's torch_dtype, else float32.</param>
    /// <param name="studentDtype">Student weight dtype; null keeps the teacher's.</param>
    /// <param name="ioBufferBytes">I/O buffer included in the peak.</param>
    /// <exception cref="ArgumentException">A dtype is unknown.</exception>
    /// <exception cref="InvalidDataException">The plan is invalid.</exception>
    public static PlanEstimate For(SurgeryPlan plan, string? teacherDtype = null, string? studentDtype = null, long ioBufferBytes = DefaultIoBufferBytes)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentOutOfRangeException.ThrowIfNegative(ioBufferBytes);
        int teacherSize = BytesPerElement(teacherDtype ?? plan.Teacher.TorchDtype ?? "float32");
        int studentSize = studentDtype is null ? teacherSize : BytesPerElement(studentDtype);
        IReadOnlyList<TensorSpec> student = plan.StudentTensors();
        TensorSpec largest = student.MaxBy(s => s.ElementCount)!;
        long teacherParameters = LlamaTensorLayout.CountParameters(plan.Teacher).Total;
        long studentParameters = student.Sum(s => s.ElementCount);
        return new PlanEstimate(
            teacherParameters,
            studentParameters,
            teacherParameters * teacherSize,
            studentParameters * teacherSize,
            studentParameters * studentSize,
            (largest.ElementCount * (teacherSize + studentSize)) + ioBufferBytes,
            largest.Name,
            teacherSize,
            studentSize,
            ioBufferBytes);
    }

    /// <summary>Bytes per element of a torch dtype name as written in <c>config.json</c> (<c>torch_dtype</c>) or by TorchSharp.</summary>
    /// <exception cref="ArgumentException">The name is not a known floating-point dtype.</exception>
    public static int BytesPerElement(string dtype)
    {
        ArgumentNullException.ThrowIfNull(dtype);
        return dtype.ToUpperInvariant() switch
        {
            "FLOAT32" or "FLOAT" or "F32" => 4,
            "BFLOAT16" or "BF16" or "FLOAT16" or "HALF" or "F16" => 2,
            "FLOAT64" or "DOUBLE" or "F64" => 8,
            "FLOAT8_E4M3FN" or "FLOAT8_E5M2" or "F8_E4M3" or "F8_E5M2" => 1,
            _ => throw new ArgumentException($"Unknown dtype '{dtype}' (expected float32, bfloat16, float16, float64 or float8).", nameof(dtype)),
        };
    }

    /// <summary>A human-readable summary: read, write and peak sizes.</summary>
    public string Summary() => string.Create(CultureInfo.InvariantCulture,
        $"reads {ByteSize.Format(BytesToRead)} of the teacher's {ByteSize.Format(TeacherBytes)} ({(TeacherBytes == 0 ? 0 : 100.0 * BytesToRead / TeacherBytes):0.0}%), "
        + $"writes {ByteSize.Format(BytesToWrite)} ({StudentParameters:N0} parameters at {StudentBytesPerElement} bytes), "
        + $"peak memory about {ByteSize.Format(PeakBytes)} (largest tensor {LargestTensor}, plus {ByteSize.Format(IoBufferBytes)} of I/O buffer).");
}
