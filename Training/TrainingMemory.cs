using System.Globalization;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Runtime;
using TorchSharp;

namespace ModelSurgery.Training;

/// <summary>Estimated peak memory of a training or distillation run, in bytes, by what holds it.</summary>
/// <param name="Weights">The model's parameters in the compute dtype.</param>
/// <param name="MasterWeights">Float32 master copies (bf16 runs only).</param>
/// <param name="Gradients">Parameter gradients (in bf16 runs both the model's and the master copies').</param>
/// <param name="OptimizerStates">AdamW's two float32 moments per parameter.</param>
/// <param name="Activations">Tensors kept for the backward pass of one micro-batch, every layer.</param>
/// <param name="AttentionScores">Materialised attention scores and probabilities (only where the fused kernel does not run).</param>
/// <param name="Logits">The student's float32 logits and their gradient.</param>
/// <param name="Teacher">The teacher's weights, its logits and one layer's forward transients (distillation only).</param>
public sealed record TrainingMemoryEstimate(long Weights, long MasterWeights, long Gradients, long OptimizerStates, long Activations, long AttentionScores, long Logits, long Teacher)
{
    /// <summary>All of it.</summary>
    public long Total => Weights + MasterWeights + Gradients + OptimizerStates + Activations + AttentionScores + Logits + Teacher;

    /// <summary>One line with every part, for messages.</summary>
    public string Summary() =>
        $"weights {ByteSize.Format(Weights)}, master weights {ByteSize.Format(MasterWeights)}, gradients {ByteSize.Format(Gradients)}, optimizer {ByteSize.Format(OptimizerStates)}, activations {ByteSize.Format(Activations + AttentionScores)}, logits {ByteSize.Format(Logits)}, teacher {ByteSize.Format(Teacher)}";
}

/// <summary>
/// The memory a training run needs, from the configs and options alone, checked before a model is loaded. The factors
/// follow what the trainer allocates: parameters in the compute dtype, float32 masters and master gradients in bf16,
/// AdamW's two float32 states, per layer and token the tensors autograd keeps (<see cref="ActivationsPerLayerToken"/>
/// elements of the compute dtype), attention scores B x H x T x T (twice: scores and probabilities) only for layers with a
/// sliding window shorter than the sequence (those take the masked, unfused path of <c>scaled_dot_product_attention</c>; causal layers use the fused
/// kernel, which keeps no T x T tensor) or, in every layer, the float32 softmax and the probabilities in the compute dtype
/// where training takes <see cref="EagerAttention"/> (bf16 on the CPU over short sequences), and the logits B x T x V in
/// float32, twice for the backward pass.
/// </summary>
public static class TrainingMemory
{
    private const long Float = 4;

    /// <summary>
    /// Elements autograd keeps per decoder layer and token, in units of the hidden size D and the FFN width F: the two
    /// RMSNorms keep their input and normalised output (4D), the attention keeps q, k, v (at most 3D), their rotated
    /// copies (2D), the attended output for o_proj (D) and the residual sum (D) and the output of the fused kernel (D):
    /// 12D; the SwiGLU MLP keeps gate and up (2F), silu(gate) (F), their product for down_proj (F) and the sigmoid for
    /// silu's backward (F): 5F.
    /// </summary>
    public static long ActivationsPerLayerToken(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return (12L * config.HiddenSize) + (5L * config.IntermediateSize);
    }

    /// <summary>Estimates the peak memory of training <paramref name="student"/> with <paramref name="options"/>.</summary>
    /// <param name="student">The trained model's config.</param>
    /// <param name="options">Batch size, sequence length and precision.</param>
    /// <param name="teacher">The teacher's config when distilling from a live teacher; null otherwise.</param>
    /// <param name="teacherElementSize">Bytes per teacher weight (4 for float32, the default load dtype; 2 for bf16/f16).</param>
    /// <param name="device">Where the student trains, which decides how its attention runs.</param>
    /// <returns>The estimate by part.</returns>
    public static TrainingMemoryEstimate Estimate(LlamaConfig student, TrainingOptions options, LlamaConfig? teacher = null, int teacherElementSize = 4, DeviceType device = DeviceType.CPU)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(options);
        long parameters = LlamaTensorLayout.CountParameters(student).Total;
        bool bf16 = options.Precision == TrainingPrecision.Bf16;
        long element = bf16 ? 2 : Float;
        long tokens = (long)options.BatchSize * options.SeqLen;

        long weights = parameters * element;
        long masters = bf16 ? parameters * Float : 0;
        long gradients = (parameters * element) + masters;
        long optimizer = 2 * parameters * Float;
        long activations = tokens * student.NumHiddenLayers * ActivationsPerLayerToken(student) * element;
        long scoreElements = (long)options.BatchSize * student.NumAttentionHeads * options.SeqLen * options.SeqLen;
        int windowed = student.LayerAttentionWindows.Count(w => w < options.SeqLen);
        long scores = EagerAttention.AppliesInTraining(bf16 ? torch.ScalarType.BFloat16 : torch.ScalarType.Float32, device, options.SeqLen)
            ? scoreElements * student.NumHiddenLayers * (Float + element)
            : 2L * scoreElements * windowed * element;
        long logits = 2 * tokens * student.VocabSize * Float;

        long teacherBytes = 0;
        if (teacher is not null)
        {
            // Forward only, no graph: one layer's transients at a time, plus its logits and their log-softmax for the KD term.
            long teacherParameters = LlamaTensorLayout.CountParameters(teacher).Total;
            long transients = tokens * ((7L * teacher.HiddenSize) + (3L * teacher.IntermediateSize)) * teacherElementSize;
            teacherBytes = (teacherParameters * teacherElementSize) + transients + (2 * tokens * teacher.VocabSize * Float);
        }

        return new TrainingMemoryEstimate(weights, masters, gradients, optimizer, activations, scores, logits, teacherBytes);
    }

    /// <summary>
    /// Throws before any model is loaded when the estimate exceeds the memory of <paramref name="device"/>
    /// (<see cref="MemoryPreflight.EnsureFits(long, string, DeviceType)"/>: nothing when the check is skipped or a GPU's
    /// memory is unknown).
    /// </summary>
    /// <exception cref="MemoryPreflightException">The estimate exceeds the available memory; the message gives every part.</exception>
    public static void EnsureFits(string modelDir, LlamaConfig student, TrainingOptions options, DeviceType device, LlamaConfig? teacher = null, int teacherElementSize = 4)
    {
        ArgumentNullException.ThrowIfNull(options);
        TrainingMemoryEstimate estimate = Estimate(student, options, teacher, teacherElementSize, device);
        MemoryPreflight.EnsureFits(
            estimate.Total,
            string.Create(CultureInfo.InvariantCulture,
                $"{(teacher is null ? "Training" : "Distilling into")} {modelDir} ({LlamaTensorLayout.CountParameters(student).Total:N0} parameters, {options.Precision}, micro-batches of {options.BatchSize} x {options.SeqLen} tokens: {estimate.Summary()}; lower the batch size (--batch-size) or the sequence length (--seq-len), or train in bf16 (--precision bf16))"),
            device);
    }
}
