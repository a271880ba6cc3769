using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ModelSurgery.Inference.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Runtime;

/// <summary>
/// A managed matrix-vector product for one-row CPU projections, <c>y = W x + b</c>, that reads fp32 or bf16 weights in
/// place and splits the output rows across torch's thread count. Decoding one token is such a product for every weight
/// matrix, and LibTorch's one-row <c>linear</c> reaches well under the machine's memory bandwidth there (see
/// <see cref="CpuLinear"/>), while this loop streams each weight row once with vector loads and fused multiply-adds.
/// </summary>
/// <remarks>
/// Accumulation is in fp32 whatever the weight dtype (a bf16 value widens to fp32 exactly by a 16-bit shift), in one
/// vector of partial sums per output row reduced at the end, plus a scalar tail; the result is rounded once to the
/// output dtype (round-to-nearest-even for bf16), as LibTorch's own bf16 kernels do.
/// </remarks>
internal static unsafe class RowProjection
{
    /// <summary>Output rows one range of a split product holds at least, so tiny projections are not split into ranges that cost more than they compute.</summary>
    internal const long MinRowsPerTask = 64;

    /// <summary>
    /// Whether <see cref="Compute(Tensor, Tensor, Tensor?, int)"/> applies: one row of input on the CPU, an fp32 or bf16
    /// weight of the input's dtype and width, contiguous operands, a bias (if any) of the same dtype and of the output
    /// width, and no gradient to track.
    /// </summary>
    public static bool Applies(Tensor input, Tensor weight, Tensor? bias)
    {
        if (!(bias is null ? KernelOperands.OnCpuInOneFloatType(input, weight) : KernelOperands.OnCpuInOneFloatType(input, weight, bias))
            || weight.dim() != 2 || input.dim() == 0 || input.size(-1) != weight.size(1) || weight.size(1) == 0
            || !input.is_contiguous() || !weight.is_contiguous())
        {
            return false;
        }

        long rows = 1;
        for (int i = 0; i < input.dim() - 1; i++)
        {
            rows *= input.size(i);
        }

        if (rows != 1)
        {
            return false;
        }

        if (bias is not null && (bias.dim() != 1 || bias.size(0) != weight.size(0) || !bias.is_contiguous()))
        {
            return false;
        }

        return bias is null ? KernelOperands.NeedNoGradient(input, weight) : KernelOperands.NeedNoGradient(input, weight, bias);
    }

    /// <summary>
    /// <c>input Wᵀ + bias</c> for inputs where <see cref="Applies"/> holds: [..., in] (one row) to [..., out] in the
    /// input's dtype, computed on up to <paramref name="threads"/> threads.
    /// </summary>
    public static Tensor Compute(Tensor input, Tensor weight, Tensor? bias, int threads) => Compute(input, weight, bias, null, threads);

    /// <summary>
    /// As <see cref="Compute(Tensor, Tensor, Tensor?, int)"/>, plus <paramref name="residual"/> (when given) added to each
    /// output row after it is rounded to the dtype, and the sum rounded again: bit for bit what LibTorch's
    /// <c>residual + linear(input, weight, bias)</c> computes from the rounded projection, without a second pass.
    /// <paramref name="residual"/> is [..., out] of the input's dtype, contiguous (see <see cref="ResidualApplies"/>), or null.
    /// The result goes into <paramref name="output"/> when given: a contiguous CPU tensor of out elements, of the weight's
    /// dtype, or fp32 for bf16 weights (each rounded bf16 value widened, as <c>to_type(Float32)</c> of the bf16 result);
    /// it may be <paramref name="residual"/> itself (each element is read before it is written), never the input.
    /// </summary>
    public static Tensor Compute(Tensor input, Tensor weight, Tensor? bias, Tensor? residual, int threads, Tensor? output = null)
    {
        long outFeatures = weight.size(0);
        output ??= torch.empty(OutputShape(input, outFeatures), weight.dtype, input.device); // [..., out]
        if (outFeatures == 0)
        {
            return output;
        }

        fixed (float* widened = WidenedInput(input, weight.size(1)))
        {
            Job job = CreateJob(input, widened, weight, bias, TensorMemory.DataPointer(output)) with
            {
                Residual = residual is null ? null : TensorMemory.DataPointer(residual),
                WidenOutput = output.dtype == ScalarType.Float32 && weight.dtype == ScalarType.BFloat16,
            };
            ForEachRange(outFeatures, threads, RangeJobRegion<Job>.BodyFor(job));
        }

        return output;
    }

    /// <summary>
    /// Whether <paramref name="residual"/> can be added in <see cref="Compute(Tensor, Tensor, Tensor?, Tensor?, int, Tensor?)"/>:
    /// the shape the product has, its dtype, contiguous, no gradient to track.
    /// </summary>
    public static bool ResidualApplies(Tensor residual, Tensor input, Tensor weight) =>
        KernelOperands.OnCpuInOneFloatType(residual, weight) && residual.is_contiguous()
        && HasOutputShape(residual, input, weight.size(0)) && KernelOperands.NeedNoGradient(residual);

    // Whether `tensor` is [..., outFeatures] with the input's leading sizes (read one size at a time, see KernelOperands.SameSizes).
    private static bool HasOutputShape(Tensor tensor, Tensor input, long outFeatures)
    {
        int dims = (int)input.dim();
        if (tensor.dim() != dims || tensor.size(dims - 1) != outFeatures)
        {
            return false;
        }

        for (int i = 0; i < dims - 1; i++)
        {
            if (tensor.size(i) != input.size(i))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Several products of one input row, <c>input Wᵢᵀ + bᵢ</c> (the q, k and v projections of a decoding step), in one
    /// parallel region: the rows of all weights are split across the threads together. Each output equals what
    /// <see cref="Compute(Tensor, Tensor, Tensor?, int)"/> returns for its weight, bit for bit (each row is the same
    /// reduction in the same order). <see cref="Applies"/> must hold for every weight with its bias. With
    /// <paramref name="into"/> (one contiguous CPU tensor per weight, of its dtype and output width) the products are
    /// written there and those tensors returned.
    /// </summary>
    public static Tensor[] ComputeMany(Tensor input, ReadOnlySpan<(Tensor Weight, Tensor? Bias)> projections, int threads, Tensor[]? into = null)
    {
        var outputs = into ?? new Tensor[projections.Length];
        ManyProductsRegion region = t_manyProductsRegion ??= new ManyProductsRegion();
        region.Prepare(projections.Length);
        Job[] jobs = region.Jobs;
        long[] offsets = region.Offsets;
        fixed (float* widened = WidenedInput(input, projections[0].Weight.size(1)))
        {
            for (int i = 0; i < projections.Length; i++)
            {
                (Tensor weight, Tensor? bias) = projections[i];
                outputs[i] = into is null ? torch.empty(OutputShape(input, weight.size(0)), weight.dtype, input.device) : into[i]; // [..., out_i]
                jobs[i] = CreateJob(input, widened, weight, bias, TensorMemory.DataPointer(outputs[i]));
                offsets[i + 1] = offsets[i] + weight.size(0);
            }

            // The rows of all products one after another, each range contiguous and possibly spanning two products.
            ForEachRange(offsets[projections.Length], threads, region.Body);
        }

        return outputs;
    }

    /// <summary>
    /// SwiGLU's hidden activation of one row, <c>silu(input Gᵀ + g) * (input Uᵀ + u)</c> [..., F], in one parallel region:
    /// each range of rows gets its gate and up rows computed, rounded to the dtype and multiplied by the thread that took it.
    /// The roundings are LibTorch's for <c>silu(linear(x, G, g)) * linear(x, U, u)</c> (the projections, silu computed in
    /// fp32 from the rounded gate and rounded, the product computed in fp32 from the rounded operands and rounded); the
    /// projections are bit for bit those of <see cref="Compute(Tensor, Tensor, Tensor?, int)"/>, and silu's exponential
    /// is .NET's <see cref="MathF.Exp"/> where LibTorch's vectorised one may differ in the last fp32 bit, so a bf16
    /// activation can differ by one bf16 rounding of silu. <see cref="Applies"/> must hold for both weights with their
    /// biases, which have the same shape. The activation goes into <paramref name="output"/> (contiguous, of the weights'
    /// dtype, F elements) when given.
    /// </summary>
    public static Tensor ComputeSwiGlu(Tensor input, Tensor gateWeight, Tensor? gateBias, Tensor upWeight, Tensor? upBias, int threads, Tensor? output = null)
    {
        long hidden = gateWeight.size(0);
        output ??= torch.empty(OutputShape(input, hidden), gateWeight.dtype, input.device); // [..., F]
        if (hidden == 0)
        {
            return output;
        }

        bool bf16 = gateWeight.dtype == ScalarType.BFloat16;
        byte* outputData = TensorMemory.DataPointer(output);

        // The rounded gate and up rows, each range written and then read by the one thread that took it.
        fixed (float* gateRows = KernelOperands.Scratch(ref t_gateBuffer, (int)hidden), upRows = KernelOperands.Scratch(ref t_upBuffer, (int)hidden))
        fixed (float* widened = WidenedInput(input, gateWeight.size(1)))
        {
            SwiGluRegion region = t_swiGluRegion ??= new SwiGluRegion();
            region.Gate = CreateJob(input, widened, gateWeight, gateBias, (byte*)gateRows);
            region.Up = CreateJob(input, widened, upWeight, upBias, (byte*)upRows);
            region.Gates = gateRows;
            region.Ups = upRows;
            region.Output = outputData;
            region.BFloat16 = bf16;
            ForEachRange(hidden, threads, region.Body);
        }

        return output;
    }

    // The bodies of the fused regions, one holder per kind and calling thread, as RangeJobRegion is for one job: a call
    // sets the operands and runs the region, which allocates nothing, and never rewrites operands being read.
    [ThreadStatic]
    private static ManyProductsRegion? t_manyProductsRegion;

    [ThreadStatic]
    private static SwiGluRegion? t_swiGluRegion;

    private sealed class ManyProductsRegion
    {
        private int _count;

        public ManyProductsRegion() => Body = Run;

        public Job[] Jobs { get; private set; } = [];

        // Offsets[i] is the first row of product i in the rows of all products; Offsets[count] their total.
        public long[] Offsets { get; private set; } = [0];

        public Action<long, long> Body { get; }

        public void Prepare(int count)
        {
            if (Jobs.Length < count)
            {
                (Jobs, Offsets) = (new Job[count], new long[count + 1]);
            }

            _count = count;
        }

        private void Run(long first, long end)
        {
            for (int i = 0; i < _count; i++)
            {
                long from = Math.Max(first, Offsets[i]), to = Math.Min(end, Offsets[i + 1]);
                if (from < to)
                {
                    Jobs[i].Run(from - Offsets[i], to - Offsets[i]);
                }
            }
        }
    }

    private sealed class SwiGluRegion
    {
        public SwiGluRegion() => Body = Run;

        public Job Gate { get; set; }

        public Job Up { get; set; }

        public float* Gates { get; set; }

        public float* Ups { get; set; }

        public byte* Output { get; set; }

        public bool BFloat16 { get; set; }

        public Action<long, long> Body { get; }

        private void Run(long first, long end)
        {
            Gate.Run(first, end);
            Up.Run(first, end);
            if (BFloat16)
            {
                ushort* g = (ushort*)Gates, u = (ushort*)Ups, o = (ushort*)Output;
                for (long i = first; i < end; i++)
                {
                    float activated = BFloat16ToSingle(SingleToBFloat16(Silu(BFloat16ToSingle(g[i]))));
                    o[i] = SingleToBFloat16(activated * BFloat16ToSingle(u[i]));
                }
            }
            else
            {
                float* gates = Gates, ups = Ups, o = (float*)Output;
                for (long i = first; i < end; i++)
                {
                    o[i] = Silu(gates[i]) * ups[i];
                }
            }
        }
    }

    /// <summary><c>x / (1 + exp(-x))</c>, LibTorch's formula for silu.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Silu(float x) => x / (1f + MathF.Exp(-x));

    private static long[] OutputShape(Tensor input, long outFeatures)
    {
        long[] shape = (long[])input.shape.Clone();
        shape[^1] = outFeatures;
        return shape;
    }

    // The input row in fp32 for bf16 weights: bf16 widens once here instead of once per output row, and is stored in the
    // order the bf16 kernels read it (see BFloat16BlockOrder); null for fp32, whose kernels read the input in place.
    private static float[]? WidenedInput(Tensor input, long inFeatures)
    {
        if (input.dtype != ScalarType.BFloat16)
        {
            return null;
        }

        float[] widened = KernelOperands.Scratch(ref t_inputBuffer, (int)inFeatures);
        WidenInBlockOrder((ushort*)TensorMemory.DataPointer(input), widened, inFeatures);
        return widened;
    }

    private static Job CreateJob(Tensor input, float* widened, Tensor weight, Tensor? bias, byte* output) => new()
    {
        Weight = TensorMemory.DataPointer(weight),
        Input = widened is not null ? widened : (float*)TensorMemory.DataPointer(input),
        Bias = bias is null ? null : TensorMemory.DataPointer(bias),
        Output = output,
        In = weight.size(1),
        BFloat16 = weight.dtype == ScalarType.BFloat16,
    };

    // Runs body over [0, rows) on up to `threads` threads, in contiguous ranges of a multiple of 16 rows except the last
    // (16 fp32 outputs fill one cache line, so two threads seldom write the same line of the output), none under
    // MinRowsPerTask, up to KernelOperands.RangesPerThread per thread (see there).
    private static void ForEachRange(long rows, int threads, Action<long, long> body)
    {
        int ranges = threads <= 1 ? 1 : (int)Math.Clamp(rows / MinRowsPerTask, 1, (long)threads * KernelOperands.RangesPerThread);
        KernelOperands.ForEachRange(rows, ranges, 16, threads, body);
    }

    /// <summary>fp32 value of a bf16 bit pattern: the bits are the upper half of the fp32 ones.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float BFloat16ToSingle(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>bf16 bit pattern nearest to <paramref name="value"/>, ties to even; NaN stays a (quiet) NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ushort SingleToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
        {
            return (ushort)((bits >> 16) | 0x40);
        }

        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1)) >> 16);
    }

    /// <summary>
    /// Elements per block of the bf16 kernels: 32 with 512-bit vectors, 16 with 256-bit ones, 1 (no blocks) without.
    /// Within a block, a vector of 32-bit lanes over the bf16 bits holds element 2j in the low half of lane j and
    /// element 2j + 1 in the high half: shifting left by 16 gives the even elements as fp32, masking the low half away
    /// gives the odd ones, two instructions per vector where widening takes shuffles. The input row is stored to match,
    /// each block's even elements first, then its odd ones; the elements after the last whole block keep their order.
    /// </summary>
    internal static int BFloat16Block =>
        Vector512.IsHardwareAccelerated ? Vector512<ushort>.Count : Vector256.IsHardwareAccelerated ? Vector256<ushort>.Count : 1;

    /// <summary>Widens a bf16 row to fp32 in the order of <see cref="BFloat16Block"/>.</summary>
    internal static void WidenInBlockOrder(ushort* source, float[] target, long count)
    {
        int block = BFloat16Block, half = block / 2;
        long whole = block == 1 ? 0 : count / block * block;
        for (long start = 0; start < whole; start += block)
        {
            for (int j = 0; j < half; j++)
            {
                target[start + j] = BFloat16ToSingle(source[start + (2 * j)]);
                target[start + half + j] = BFloat16ToSingle(source[start + (2 * j) + 1]);
            }
        }

        for (long k = whole; k < count; k++)
        {
            target[k] = BFloat16ToSingle(source[k]);
        }
    }

    // One pinned buffer per calling thread for the widened input row: no allocation per call on the decoding path.
    [ThreadStatic]
    private static float[]? t_inputBuffer;

    // The same for the rounded gate and up rows of ComputeSwiGlu (bf16 rows use half of each).
    [ThreadStatic]
    private static float[]? t_gateBuffer;

    [ThreadStatic]
    private static float[]? t_upBuffer;

    /// <summary>The operands of one product; <see cref="Run"/> computes a range of output rows.</summary>
    private readonly struct Job : IRangeJob
    {
        public byte* Weight { get; init; }

        public float* Input { get; init; }

        public byte* Bias { get; init; }

        public byte* Output { get; init; }

        public long In { get; init; }

        public bool BFloat16 { get; init; }

        /// <summary>Added to each rounded output row before a second rounding, or null.</summary>
        public byte* Residual { get; init; }

        /// <summary>With bf16 weights, whether the output is fp32: each rounded bf16 value stored widened.</summary>
        public bool WidenOutput { get; init; }

        public void Run(long first, long end)
        {
            for (long row = first; row < end; row++)
            {
                Store(row, BFloat16 ? DotBFloat16((ushort*)Weight + (row * In), Input, In) : DotSingle((float*)Weight + (row * In), Input, In));
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Store(long row, float sum)
        {
            if (BFloat16)
            {
                if (Bias is not null)
                {
                    sum += BFloat16ToSingle(((ushort*)Bias)[row]);
                }

                ushort rounded = SingleToBFloat16(sum);
                if (WidenOutput)
                {
                    ((float*)Output)[row] = BFloat16ToSingle(Residual is null ? rounded : SingleToBFloat16(BFloat16ToSingle(((ushort*)Residual)[row]) + BFloat16ToSingle(rounded)));
                    return;
                }

                ((ushort*)Output)[row] = Residual is null ? rounded : SingleToBFloat16(BFloat16ToSingle(((ushort*)Residual)[row]) + BFloat16ToSingle(rounded));
            }
            else
            {
                if (Bias is not null)
                {
                    sum += ((float*)Bias)[row];
                }

                ((float*)Output)[row] = Residual is null ? sum : ((float*)Residual)[row] + sum;
            }
        }
    }

    // The kernels below read one weight row front to back, so each thread's range of rows is one sequential stream,
    // which the hardware prefetchers follow at the memory's read bandwidth; four accumulators hide the latency of the
    // fused multiply-adds. Reading four rows side by side (sharing each load of the input) made four short streams per
    // thread instead: on a 2-core AVX-512 machine that read fp32 rows at 17 GB/s and bf16 rows at 12 GB/s on one thread
    // against 23 and 26 GB/s read one at a time, with a plain read of the same bytes at 27 GB/s.

    /// <summary>The dot product of fp32 row <paramref name="w"/> with <paramref name="x"/>, both <paramref name="n"/> long.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float DotSingle(float* w, float* x, long n)
    {
        long k = 0;
        float s = 0;
        if (Vector512.IsHardwareAccelerated && n >= Vector512<float>.Count)
        {
            int width = Vector512<float>.Count;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; k <= n - (4 * width); k += 4 * width)
            {
                a0 = Vector512.MultiplyAddEstimate(Vector512.Load(w + k), Vector512.Load(x + k), a0);
                a1 = Vector512.MultiplyAddEstimate(Vector512.Load(w + k + width), Vector512.Load(x + k + width), a1);
                a2 = Vector512.MultiplyAddEstimate(Vector512.Load(w + k + (2 * width)), Vector512.Load(x + k + (2 * width)), a2);
                a3 = Vector512.MultiplyAddEstimate(Vector512.Load(w + k + (3 * width)), Vector512.Load(x + k + (3 * width)), a3);
            }

            for (; k <= n - width; k += width)
            {
                a0 = Vector512.MultiplyAddEstimate(Vector512.Load(w + k), Vector512.Load(x + k), a0);
            }

            s = Vector512.Sum((a0 + a1) + (a2 + a3));
        }
        else if (Vector256.IsHardwareAccelerated && n >= Vector256<float>.Count)
        {
            int width = Vector256<float>.Count;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; k <= n - (4 * width); k += 4 * width)
            {
                a0 = Vector256.MultiplyAddEstimate(Vector256.Load(w + k), Vector256.Load(x + k), a0);
                a1 = Vector256.MultiplyAddEstimate(Vector256.Load(w + k + width), Vector256.Load(x + k + width), a1);
                a2 = Vector256.MultiplyAddEstimate(Vector256.Load(w + k + (2 * width)), Vector256.Load(x + k + (2 * width)), a2);
                a3 = Vector256.MultiplyAddEstimate(Vector256.Load(w + k + (3 * width)), Vector256.Load(x + k + (3 * width)), a3);
            }

            for (; k <= n - width; k += width)
            {
                a0 = Vector256.MultiplyAddEstimate(Vector256.Load(w + k), Vector256.Load(x + k), a0);
            }

            s = Vector256.Sum((a0 + a1) + (a2 + a3));
        }

        for (; k < n; k++)
        {
            s += w[k] * x[k];
        }

        return s;
    }

    /// <summary>
    /// The dot product of bf16 row <paramref name="w"/> with fp32 <paramref name="x"/> in block order (see
    /// <see cref="BFloat16Block"/>), both <paramref name="n"/> long: two blocks per step, even and odd elements in
    /// accumulators of their own.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float DotBFloat16(ushort* w, float* x, long n)
    {
        long k = 0;
        float s = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            int block = Vector512<ushort>.Count, half = Vector512<float>.Count;
            Vector512<float> even0 = default, odd0 = default, even1 = default, odd1 = default;
            Vector512<uint> high = Vector512.Create(0xFFFF_0000u);
            for (; k <= n - (2 * block); k += 2 * block)
            {
                Vector512<uint> v = Vector512.Load((uint*)(w + k));
                even0 = Vector512.MultiplyAddEstimate(Vector512.ShiftLeft(v, 16).AsSingle(), Vector512.Load(x + k), even0);
                odd0 = Vector512.MultiplyAddEstimate((v & high).AsSingle(), Vector512.Load(x + k + half), odd0);
                v = Vector512.Load((uint*)(w + k + block));
                even1 = Vector512.MultiplyAddEstimate(Vector512.ShiftLeft(v, 16).AsSingle(), Vector512.Load(x + k + block), even1);
                odd1 = Vector512.MultiplyAddEstimate((v & high).AsSingle(), Vector512.Load(x + k + block + half), odd1);
            }

            for (; k <= n - block; k += block)
            {
                Vector512<uint> v = Vector512.Load((uint*)(w + k));
                even0 = Vector512.MultiplyAddEstimate(Vector512.ShiftLeft(v, 16).AsSingle(), Vector512.Load(x + k), even0);
                odd0 = Vector512.MultiplyAddEstimate((v & high).AsSingle(), Vector512.Load(x + k + half), odd0);
            }

            s = Vector512.Sum((even0 + odd0) + (even1 + odd1));
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            int block = Vector256<ushort>.Count, half = Vector256<float>.Count;
            Vector256<float> even0 = default, odd0 = default, even1 = default, odd1 = default;
            Vector256<uint> high = Vector256.Create(0xFFFF_0000u);
            for (; k <= n - (2 * block); k += 2 * block)
            {
                Vector256<uint> v = Vector256.Load((uint*)(w + k));
                even0 = Vector256.MultiplyAddEstimate(Vector256.ShiftLeft(v, 16).AsSingle(), Vector256.Load(x + k), even0);
                odd0 = Vector256.MultiplyAddEstimate((v & high).AsSingle(), Vector256.Load(x + k + half), odd0);
                v = Vector256.Load((uint*)(w + k + block));
                even1 = Vector256.MultiplyAddEstimate(Vector256.ShiftLeft(v, 16).AsSingle(), Vector256.Load(x + k + block), even1);
                odd1 = Vector256.MultiplyAddEstimate((v & high).AsSingle(), Vector256.Load(x + k + block + half), odd1);
            }

            for (; k <= n - block; k += block)
            {
                Vector256<uint> v = Vector256.Load((uint*)(w + k));
                even0 = Vector256.MultiplyAddEstimate(Vector256.ShiftLeft(v, 16).AsSingle(), Vector256.Load(x + k), even0);
                odd0 = Vector256.MultiplyAddEstimate((v & high).AsSingle(), Vector256.Load(x + k + half), odd0);
            }

            s = Vector256.Sum((even0 + odd0) + (even1 + odd1));
        }

        for (; k < n; k++)
        {
            s += BFloat16ToSingle(w[k]) * x[k];
        }

        return s;
    }
}
