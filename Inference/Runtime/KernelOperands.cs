using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Runtime;

/// <summary>
/// The conditions every managed decoding kernel (<see cref="RowProjection"/>, <see cref="RowNorm"/>,
/// <see cref="RowRotary"/>, <see cref="OneQueryAttention"/>) puts on its operands before reading their memory.
/// </summary>
internal static class KernelOperands
{
    /// <summary>Whether every tensor is on the CPU in one dtype, fp32 or bf16: the dtypes the kernels read in place.</summary>
    public static bool OnCpuInOneFloatType(params ReadOnlySpan<Tensor> tensors)
    {
        ScalarType dtype = tensors[0].dtype;
        if (dtype != ScalarType.Float32 && dtype != ScalarType.BFloat16)
        {
            return false;
        }

        foreach (Tensor tensor in tensors)
        {
            if (tensor.dtype != dtype || tensor.device_type != DeviceType.CPU)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Whether the two tensors have the same sizes, read one dimension at a time: <c>Tensor.shape</c> allocates an array
    /// per call (about a microsecond), which the checks of a decoding step made over a thousand times per token.
    /// </summary>
    public static bool SameSizes(Tensor a, Tensor b)
    {
        long dims = a.dim();
        if (b.dim() != dims)
        {
            return false;
        }

        for (int i = 0; i < dims; i++)
        {
            if (a.size(i) != b.size(i))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Whether no gradient is to be tracked through the tensors (gradients off, or none of them requires one): the
    /// kernels record nothing for autograd, so anything that needs a gradient takes LibTorch's path.
    /// </summary>
    public static bool NeedNoGradient(params ReadOnlySpan<Tensor> tensors)
    {
        if (!torch.is_grad_enabled())
        {
            return true;
        }

        foreach (Tensor tensor in tensors)
        {
            if (tensor.requires_grad)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// A pinned scratch array of at least <paramref name="length"/> floats, kept in <paramref name="buffer"/> (a
    /// <c>[ThreadStatic]</c> field of the calling kernel, so kernels never share one) and replaced only when too short:
    /// no allocation per call on the decoding path.
    /// </summary>
    public static float[] Scratch(ref float[]? buffer, int length)
    {
        if (buffer is null || buffer.Length < length)
        {
            buffer = GC.AllocateUninitializedArray<float>(length, pinned: true);
        }

        return buffer;
    }

    /// <summary>
    /// Ranges per thread a kernel splits its work into at most: on a machine shared with other work a thread that is
    /// descheduled mid-region then holds up a small range only, and the others take the rest (a bf16 [32000, 768]
    /// one-row product on 2 busy cores ran in 0.97-1.55 ms split 8 ways against 1.06-1.84 ms split 2 ways).
    /// </summary>
    public const int RangesPerThread = 4;

    /// <summary>
    /// The <see cref="AppContext"/> switch that sends the kernels' regions through <c>Parallel.For</c> instead of
    /// <see cref="RangeWorkers"/> (the benchmarks compare the two; it is also a way back should the workers misbehave).
    /// </summary>
    public const string ParallelForSwitch = "ModelSurgery.Decoding.ParallelFor";

    /// <summary>
    /// Runs <paramref name="body"/> over [0, <paramref name="count"/>) in <paramref name="ranges"/> contiguous ranges (each
    /// a multiple of <paramref name="align"/> but the last) on at most <paramref name="threads"/> threads, the calling
    /// thread among them; one range runs inline. Every index is in exactly one range.
    /// </summary>
    public static void ForEachRange(long count, int ranges, long align, int threads, Action<long, long> body)
    {
        if (ranges <= 1 || threads <= 1)
        {
            body(0, count);
            return;
        }

        long perRange = ((count + ranges - 1) / ranges + align - 1) / align * align;
        if (AppContext.TryGetSwitch(ParallelForSwitch, out bool useParallelFor) && useParallelFor)
        {
            RangeWorkers.RunOnParallelFor(count, perRange, ranges, threads, body);
            return;
        }

        RangeWorkers.Run(count, perRange, ranges, threads, body);
    }
}

/// <summary>A kernel's operands for one parallel region; <see cref="Run"/> computes a range of its rows.</summary>
internal interface IRangeJob
{
    /// <summary>Computes rows [<paramref name="first"/>, <paramref name="end"/>).</summary>
    void Run(long first, long end);
}

/// <summary>
/// The body of a parallel region over one kind of <typeparamref name="TJob"/>: one holder per calling thread, with the one
/// delegate it made, so a region allocates no closure, delegate or boxed job (about a kilobyte and a half per layer of a
/// decoding step otherwise). The ranges run only while the caller waits in the region (<see cref="RangeWorkers.Run"/> and
/// <c>Parallel.For</c> return when all have run), so setting the next job never rewrites one being read.
/// </summary>
internal sealed class RangeJobRegion<TJob>
    where TJob : struct, IRangeJob
{
    [ThreadStatic]
    private static RangeJobRegion<TJob>? t_ofThread;

    private TJob _job;

    private RangeJobRegion() => Body = Run;

    private Action<long, long> Body { get; }

    /// <summary>This thread's region body, set to run <paramref name="job"/>.</summary>
    public static Action<long, long> BodyFor(in TJob job)
    {
        RangeJobRegion<TJob> region = t_ofThread ??= new RangeJobRegion<TJob>();
        region._job = job;
        return region.Body;
    }

    private void Run(long first, long end) => _job.Run(first, end);
}
