using System.Globalization;
using System.Text;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ModelSurgery.Inference.Modeling;

/// <summary>
/// A Llama-family causal language model (<c>llama</c>, <c>mistral</c>, <c>qwen2</c>) whose state-dict keys are exactly the
/// Hugging Face names of <see cref="LlamaTensorLayout"/>. With tied embeddings there is no <c>lm_head.weight</c> and the
/// head multiplies by the embedding matrix.
/// </summary>
/// <remarks>
/// A new model's embedding and projection weights are uninitialised memory (norms are one, biases zero): load a
/// checkpoint with <see cref="LoadStateDict"/> / <see cref="LoadWeights"/>, or call <see cref="InitializeWeights"/> to
/// train from scratch. Parameters are float32, bfloat16 or float16; norms, rotary angles and logits are computed in float32.
/// </remarks>
public sealed class LlamaForCausalLM : Module<Tensor, Tensor>
{
    /// <summary>Standard deviation of the from-scratch initialisation (Hugging Face's default <c>initializer_range</c>).</summary>
    public const double InitializerRange = 0.02;

    [ComponentName(Name = "model")]
    private readonly LlamaModel _model;

    [ComponentName(Name = "lm_head")]
    private readonly LlamaLinear? _lmHead;

    /// <summary>Builds the model for <paramref name="config"/> on <paramref name="device"/> (CPU when null).</summary>
    /// <exception cref="InvalidDataException">The config is inconsistent.</exception>
    /// <exception cref="ArgumentException"><paramref name="dtype"/> is not float32, bfloat16 or float16.</exception>
    public LlamaForCausalLM(LlamaConfig config, ScalarType dtype = ScalarType.Float32, Device? device = null)
        : base(nameof(LlamaForCausalLM))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
        {
            throw new ArgumentException($"Model dtype {dtype} is not supported: use Float32, BFloat16 or Float16.", nameof(dtype));
        }

        Config = config;
        device ??= torch.CPU;

        // Before any allocation: a config far too large for this machine is refused with numbers instead of an
        // out-of-memory kill (on a GPU only against a user-given limit: TorchSharp cannot query GPU memory).
        long parameters = LlamaTensorLayout.CountParameters(config).Total;
        int elementSize = dtype == ScalarType.Float32 ? 4 : 2;
        Runtime.MemoryPreflight.EnsureFits(
            parameters * elementSize,
            string.Create(System.Globalization.CultureInfo.InvariantCulture, $"A model of {parameters:N0} parameters ({config.NumHiddenLayers} layers, hidden {config.HiddenSize}) as {dtype}"),
            device.type);

        _model = new LlamaModel(config, dtype, device);
        _lmHead = config.TieWordEmbeddings ? null : new LlamaLinear("lm_head", config.HiddenSize, config.VocabSize, hasBias: false, dtype, device);
        RegisterComponents();

        var actual = ParametersByName().Keys;
        var expected = LlamaTensorLayout.Tensors(config).Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
        if (!expected.SetEquals(actual))
        {
            // A module/layout disagreement is a programming error, caught at construction rather than at load time.
            throw new InvalidOperationException($"Model parameters do not match LlamaTensorLayout: {string.Join(", ", actual.Except(expected).Concat(expected.Except(actual)))}.");
        }
    }

    /// <summary>The architecture.</summary>
    public LlamaConfig Config { get; }

    /// <summary>Parameter dtype (follows <c>to(...)</c> conversions).</summary>
    public ScalarType DType => _model.EmbedTokens.Weight.dtype;

    /// <summary>Device of the parameters (follows <c>to(...)</c> moves).</summary>
    public Device Device => _model.EmbedTokens.Weight.device;

    /// <summary>The decoder stack (<c>model</c>).</summary>
    public LlamaModel Model => _model;

    /// <summary>The decoder layers in order; see <see cref="LlamaDecoderLayer"/> for layer-by-layer use.</summary>
    public IReadOnlyList<LlamaDecoderLayer> Layers => _model.Layers;

    /// <summary>The untied LM head (<c>lm_head</c>), or null when the head is the embedding matrix.</summary>
    public LlamaLinear? LmHead => _lmHead;

    /// <summary>The matrix the head multiplies by: <c>lm_head.weight</c>, or the embedding when tied; [V, D].</summary>
    public Parameter HeadWeight => _lmHead?.Weight ?? _model.EmbedTokens.Weight;

    /// <summary>Logits (float32) of a whole sequence: token ids [B, T] (int64) to [B, T, V].</summary>
    public override Tensor forward(Tensor inputIds) => forward(inputIds, null);

    /// <summary>
    /// Logits (float32) [B, T, V] of token ids [B, T] that follow the positions already in <paramref name="cache"/>; the
    /// new keys and values are appended to it. Without a cache the sequence starts at position 0.
    /// </summary>
    public Tensor forward(Tensor inputIds, KvCache? cache)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        using var scope = NewDisposeScope();
        Tensor hidden = _model.forward(inputIds, cache); // [B, T, D]
        return Head(hidden).MoveToOuterDisposeScope(); // [B, T, V]
    }

    /// <summary>
    /// Logits (float32) [B, V] of the last of token ids [B, T] that follow the positions in <paramref name="cache"/>
    /// (appending their keys and values): the same pass as <see cref="forward(Tensor, KvCache?)"/>, with the head over
    /// the last position only, which is all that generation needs from a prompt pass.
    /// </summary>
    /// <remarks>
    /// A decoding step (one token, batch 1, a cache, an fp32 or bf16 model on the CPU, no gradients) runs in the cache's
    /// preallocated <see cref="DecodingBuffers"/>: no tensor is made per layer, and the head writes the fp32 logits
    /// straight into the one tensor returned.
    /// </remarks>
    public Tensor NextTokenLogits(Tensor inputIds, KvCache? cache)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        using var scope = NewDisposeScope();
        DecodingBuffers? buffers = cache is not null && IsRowStep(inputIds) ? cache.RowBuffers(Config, DType) : null;
        Tensor hidden = _model.ForwardWithBuffers(inputIds, cache, null, buffers); // [B, T, D]
        Tensor headWeight = HeadWeight;
        if (buffers is not null && ReferenceEquals(hidden, buffers.Normed) && RowProjection.Applies(hidden, headWeight, null))
        {
            // The normed row is a buffer: [1, 1, D] into fp32 logits [1, V], each value the bf16 or fp32 product widened
            // as to_type(Float32) does, so the bits are those of the head below.
            Tensor logits = torch.empty([1, headWeight.size(0)], ScalarType.Float32); // [1, V]
            RowProjection.Compute(hidden, headWeight, null, null, torch.get_num_threads(), logits);
            return logits.MoveToOuterDisposeScope(); // [1, V]
        }

        return Head(hidden[.., -1]).MoveToOuterDisposeScope(); // [B, V]
    }

    // Whether a forward pass of inputIds may run in a cache's one-row buffers: one int64 id on the CPU, a model of fp32
    // or bf16 on the CPU (what the buffers and the decoding kernels hold).
    private bool IsRowStep(Tensor inputIds) =>
        inputIds.dim() == 2 && inputIds.size(0) == 1 && inputIds.size(1) == 1 && inputIds.device_type == DeviceType.CPU
        && (DType is ScalarType.Float32 or ScalarType.BFloat16) && _model.EmbedTokens.Weight.device_type == DeviceType.CPU;

    /// <summary>
    /// Logits (float32) [B, T, V] of a whole sequence from position 0 and the output of every decoder layer [B, T, D] (model
    /// dtype), in layer order: the same forward pass as <see cref="forward(Tensor)"/>, for hidden-state distillation.
    /// </summary>
    public (Tensor Logits, IReadOnlyList<Tensor> Hidden) ForwardWithHiddenStates(Tensor inputIds)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        using var scope = NewDisposeScope();
        var states = new List<Tensor>(Config.NumHiddenLayers);
        Tensor hidden = _model.forward(inputIds, null, states); // [B, T, D]
        Tensor logits = Head(hidden).MoveToOuterDisposeScope(); // [B, T, V]
        foreach (Tensor state in states)
        {
            state.MoveToOuterDisposeScope();
        }

        return (logits, states);
    }

    /// <summary>
    /// Logits (float32) of a whole sequence at positions <paramref name="firstPosition"/>..T-1 only: token ids [B, T]
    /// to [B, T - firstPosition, V]. Scoring needs logits only where targets are, and the head over every position
    /// costs as much as a few layers for a large vocabulary.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="firstPosition"/> is not within [0, T).</exception>
    public Tensor LogitsFrom(Tensor inputIds, long firstPosition)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        ArgumentOutOfRangeException.ThrowIfNegative(firstPosition);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(firstPosition, inputIds.shape[1]);
        using var scope = NewDisposeScope();
        Tensor hidden = _model.forward(inputIds, null); // [B, T, D]
        return Head(hidden[.., (int)firstPosition..]).MoveToOuterDisposeScope(); // [B, T - first, V]
    }

    /// <summary>Embeds token ids: [B, T] (int64) to hidden states [B, T, D] in the model dtype.</summary>
    public Tensor Embed(Tensor inputIds) => _model.EmbedTokens.forward(inputIds);

    /// <summary>Applies the final norm and the head to the last layer's output: [B, T, D] to float32 logits [B, T, V].</summary>
    public Tensor FinalNormAndHead(Tensor hidden)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        using var scope = NewDisposeScope();
        return Head(_model.Norm.forward(hidden)).MoveToOuterDisposeScope(); // [B, T, V]
    }

    /// <summary>Rotary tables for positions [offset, offset + length) in the model dtype and device, to share across layers.</summary>
    public RotaryTables CreateRotaryTables(long positionOffset, long length) =>
        _model.Rotary.CreateTables(positionOffset, length, DType, Device);

    /// <summary>An empty KV cache for this model holding up to <paramref name="maxLength"/> positions.</summary>
    public KvCache CreateKvCache(int maxLength) => new(Config.NumHiddenLayers, maxLength);

    /// <summary>
    /// Initialises for training from scratch, reproducibly for a seed on any device: projection and embedding weights
    /// from normal(0, <see cref="InitializerRange"/>), biases zero, norm weights one.
    /// </summary>
    public void InitializeWeights(long seed)
    {
        using var noGrad = torch.no_grad();
        using var generator = new Generator(unchecked((ulong)seed), torch.CPU);
        Dictionary<string, Parameter> parameters = ParametersByName();
        foreach (TensorSpec spec in LlamaTensorLayout.Tensors(Config))
        {
            using var scope = NewDisposeScope();
            Parameter target = parameters[spec.Name];
            if (spec.Component == ParameterComponent.Norms)
            {
                target.fill_(1.0);
            }
            else if (spec.Name.EndsWith(".bias", StringComparison.Ordinal))
            {
                target.zero_();
            }
            else
            {
                // Sampled on the CPU so that a seed gives the same weights everywhere.
                Tensor values = torch.empty(spec.Shape, ScalarType.Float32).normal_(0.0, InitializerRange, generator); // spec.Shape
                target.copy_(values);
            }
        }
    }

    /// <summary>
    /// Loads every parameter from an in-memory state dict with strict checks (see <see cref="LoadWeights"/>). The tensors
    /// are copied (converted to <see cref="DType"/> and <see cref="Device"/>) and stay owned by the caller.
    /// </summary>
    /// <exception cref="InvalidDataException">Keys are missing or unexpected, or shapes differ; the message lists them all.</exception>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> stateDict, string source = "state dict")
    {
        ArgumentNullException.ThrowIfNull(stateDict);
        var shapes = stateDict.ToDictionary(kv => kv.Key, kv => kv.Value.shape, StringComparer.Ordinal);
        LoadCore(shapes, (name, _) => stateDict[name], disposeAfterCopy: false, valuesChecked: false, source);
    }

    /// <summary>
    /// Streams parameters from a checkpoint: <paramref name="shapes"/> lists every tensor the checkpoint holds with its
    /// shape, and <paramref name="readTensor"/> reads one by name (called once per model parameter, in layout order; the
    /// returned tensor is disposed after it is copied). Checks before reading anything: every expected key present, no
    /// unexpected key, equal shapes. A tied model ignores an <c>lm_head.weight</c> of the embedding's shape. Values are
    /// converted to <see cref="DType"/> and <see cref="Device"/>.
    /// </summary>
    /// <param name="shapes">Checkpoint tensor names and shapes.</param>
    /// <param name="readTensor">Reads a tensor by name.</param>
    /// <param name="source">The checkpoint's name (a path), for error messages.</param>
    /// <exception cref="InvalidDataException">Keys are missing or unexpected, or shapes differ; the message lists them all.</exception>
    public void LoadWeights(IReadOnlyDictionary<string, long[]> shapes, Func<string, Tensor> readTensor, string source = "checkpoint")
    {
        ArgumentNullException.ThrowIfNull(shapes);
        ArgumentNullException.ThrowIfNull(readTensor);
        LoadCore(shapes, (name, _) => readTensor(name), disposeAfterCopy: true, valuesChecked: false, source);
    }

    /// <summary>
    /// <see cref="LoadWeights"/> from a checkpoint reader, which checks the values itself: a parameter of the stored dtype on the CPU is read straight into its
    /// memory, with no tensor in between and no copy; any other is read and converted.
    /// </summary>
    internal void LoadWeightsFrom(Checkpoints.CheckpointReader reader, IReadOnlyDictionary<string, long[]> shapes, string source)
    {
        LoadCore(
            shapes,
            (name, parameter) =>
            {
                if (!reader.CanReadInto(name, parameter))
                {
                    return reader.ReadTensor(name);
                }

                reader.ReadTensorInto(name, parameter);
                return null;
            },
            disposeAfterCopy: true,
            valuesChecked: true,
            source);
    }

    /// <summary>
    /// The parameters by Hugging Face name in <see cref="LlamaTensorLayout"/> order. The values are the model's live
    /// parameters, not copies: do not dispose them; clone to keep values independent of later training.
    /// </summary>
    public OrderedDictionary<string, Tensor> ToStateDict()
    {
        Dictionary<string, Parameter> parameters = ParametersByName();
        var result = new OrderedDictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (TensorSpec spec in LlamaTensorLayout.Tensors(Config))
        {
            result.Add(spec.Name, parameters[spec.Name]);
        }

        return result;
    }

    // Looked up on each use: Module.to(...) replaces parameter objects.
    private Dictionary<string, Parameter> ParametersByName() =>
        named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);

    private Tensor Head(Tensor normed)
    {
        using var scope = NewDisposeScope();
        // The head is the largest matrix a decoding step reads; CpuLinear computes a one-row step in its managed kernel.
        Tensor logits = CpuLinear.Linear(normed, HeadWeight); // [B, T, V]
        return logits.to_type(ScalarType.Float32).MoveToOuterDisposeScope(); // [B, T, V]
    }

    /// <summary>
    /// Fills every parameter: <paramref name="read"/> either fills the parameter it is given and returns null, or returns
    /// a tensor to check and copy (disposed afterwards with <paramref name="disposeAfterCopy"/>); its values are checked
    /// for NaN and infinities unless <paramref name="valuesChecked"/> says the source did that.
    /// </summary>
    private void LoadCore(IReadOnlyDictionary<string, long[]> shapes, Func<string, Parameter, Tensor?> read, bool disposeAfterCopy, bool valuesChecked, string source)
    {
        IReadOnlyList<TensorSpec> specs = LlamaTensorLayout.Tensors(Config);
        CheckKeysAndShapes(specs, shapes, source);
        Dictionary<string, Parameter> parameters = ParametersByName();
        using var noGrad = torch.no_grad();
        foreach (TensorSpec spec in specs)
        {
            Parameter parameter = parameters[spec.Name];
            // Fresh, untouched memory that is about to be filled whole: huge pages make that several times cheaper.
            Checkpoints.TensorMemory.AdviseHugePages(parameter);
            if (read(spec.Name, parameter) is not Tensor value)
            {
                continue;
            }

            try
            {
                if (!value.shape.SequenceEqual(spec.Shape))
                {
                    throw new InvalidDataException($"{source}: tensor {spec.Name} was declared {FormatShape(shapes[spec.Name])} but read as {FormatShape(value.shape)}.");
                }

                if (!value.is_floating_point())
                {
                    // Copying integers into float weights would succeed silently and give a meaningless model.
                    throw new InvalidDataException($"{source}: tensor {spec.Name} is stored as {value.dtype}, not a floating-point type; model weights must be F32, BF16 or F16.");
                }

                if (!valuesChecked && !Checkpoints.TensorChecks.IsFinite(value))
                {
                    throw new InvalidDataException($"{source}: tensor {spec.Name} holds NaN or infinite values; the weights are damaged.");
                }

                parameter.copy_(value);
            }
            finally
            {
                if (disposeAfterCopy)
                {
                    value.Dispose();
                }
            }
        }
    }

    private void CheckKeysAndShapes(IReadOnlyList<TensorSpec> specs, IReadOnlyDictionary<string, long[]> shapes, string source) =>
        CheckLayout(Config, specs, shapes, source);

    /// <summary>
    /// Checks tensor names and shapes against the layout <paramref name="config"/> implies, before a model is built: a
    /// config whose num_hidden_layers (or any size) disagrees with the weights is refused without allocating anything.
    /// </summary>
    /// <exception cref="InvalidDataException">Tensors are missing, unexpected or of another shape; the message names them.</exception>
    public static void CheckLayout(LlamaConfig config, IReadOnlyDictionary<string, long[]> shapes, string source)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(shapes);
        CheckLayout(config, LlamaTensorLayout.Tensors(config), shapes, source);
    }

    private static void CheckLayout(LlamaConfig config, IReadOnlyList<TensorSpec> specs, IReadOnlyDictionary<string, long[]> shapes, string source)
    {
        var missing = new List<string>();
        var mismatched = new List<string>();
        foreach (TensorSpec spec in specs)
        {
            if (!shapes.TryGetValue(spec.Name, out long[]? shape))
            {
                missing.Add($"{spec.Name} {FormatShape(spec.Shape)}");
            }
            else if (!shape.SequenceEqual(spec.Shape))
            {
                mismatched.Add($"{spec.Name}: expected {FormatShape(spec.Shape)}, found {FormatShape(shape)}");
            }
        }

        var expected = specs.Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
        long[] embeddingShape = [config.VocabSize, config.HiddenSize];
        var unexpected = shapes
            .Where(kv => !expected.Contains(kv.Key))
            .Where(kv => !(config.TieWordEmbeddings && kv.Key == LlamaTensorLayout.LmHead && kv.Value.SequenceEqual(embeddingShape)))
            .Select(kv => $"{kv.Key} {FormatShape(kv.Value)}")
            .Order(StringComparer.Ordinal)
            .ToList();
        if (missing.Count == 0 && unexpected.Count == 0 && mismatched.Count == 0)
        {
            return;
        }

        var message = new StringBuilder().Append(CultureInfo.InvariantCulture, $"{source}: weights do not match the {config.ModelType} model it describes (num_hidden_layers {config.NumHiddenLayers}, hidden_size {config.HiddenSize}, intermediate_size {config.IntermediateSize}, vocab_size {config.VocabSize}).");
        AppendList("missing", missing);
        AppendList("unexpected", unexpected);
        AppendList("shape mismatch", mismatched);
        throw new InvalidDataException(message.ToString());

        void AppendList(string title, List<string> items)
        {
            if (items.Count > 0)
            {
                message.Append(CultureInfo.InvariantCulture, $" {title} ({items.Count}): {string.Join("; ", items)}.");
            }
        }
    }

    private static string FormatShape(long[] shape) => $"[{string.Join(", ", shape)}]";
}
