using ModelSurgery.Inference.Configuration;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ModelSurgery.Inference.Modeling;

/// <summary>The decoder stack of a Llama-family model (Hugging Face's <c>LlamaModel</c>): embedding, layers, final norm.</summary>
public sealed class LlamaModel : Module<Tensor, Tensor>
{
    [ComponentName(Name = "embed_tokens")]
    private readonly LlamaEmbedding _embedTokens;

    [ComponentName(Name = "layers")]
    private readonly ModuleList<LlamaDecoderLayer> _layers;

    [ComponentName(Name = "norm")]
    private readonly LlamaRmsNorm _norm;

    private readonly LlamaRotaryEmbedding _rotary;
    private readonly LlamaDecoderLayer[] _layerArray;

    /// <summary>Creates the stack (embedding and projections uninitialised, norms at one).</summary>
    public LlamaModel(LlamaConfig config, ScalarType dtype, Device device)
        : base("model")
    {
        ArgumentNullException.ThrowIfNull(config);
        _rotary = new LlamaRotaryEmbedding(config);
        _embedTokens = new LlamaEmbedding("embed_tokens", config.VocabSize, config.HiddenSize, dtype, device);
        _layerArray = [.. Enumerable.Range(0, config.NumHiddenLayers).Select(i => new LlamaDecoderLayer(config, i, _rotary, dtype, device))];
        _layers = new ModuleList<LlamaDecoderLayer>(_layerArray);
        _norm = new LlamaRmsNorm("norm", config.HiddenSize, config.RmsNormEps, dtype, device);
        RegisterComponents();
    }

    /// <summary>The token embedding (<c>embed_tokens</c>).</summary>
    public LlamaEmbedding EmbedTokens => _embedTokens;

    /// <summary>The decoder layers in order (<c>layers.N</c>).</summary>
    public IReadOnlyList<LlamaDecoderLayer> Layers => _layerArray.AsReadOnly();

    /// <summary>The final norm (<c>norm</c>).</summary>
    public LlamaRmsNorm Norm => _norm;

    /// <summary>The rotary frequencies shared by all layers.</summary>
    public LlamaRotaryEmbedding Rotary => _rotary;

    /// <summary>Final normalised hidden states of a whole sequence: token ids [B, T] to [B, T, D].</summary>
    public override Tensor forward(Tensor inputIds) => forward(inputIds, null);

    /// <summary>
    /// Final normalised hidden states [B, T, D] of token ids [B, T] that follow the positions already in
    /// <paramref name="cache"/> (appending to it), or start at position 0 without one.
    /// </summary>
    public Tensor forward(Tensor inputIds, KvCache? cache) => forward(inputIds, cache, null);

    /// <summary>
    /// As <see cref="forward(Tensor, KvCache?)"/>; when <paramref name="layerOutputs"/> is given, the output of every
    /// decoder layer [B, T, D] is appended to it in layer order (in the caller's dispose scope). Rotary tables and
    /// attention masks are built once and shared by all layers.
    /// </summary>
    public Tensor forward(Tensor inputIds, KvCache? cache, IList<Tensor>? layerOutputs) => ForwardWithBuffers(inputIds, cache, layerOutputs, null);

    /// <summary>
    /// As <see cref="forward(Tensor, KvCache?, IList{Tensor}?)"/>. With <paramref name="buffers"/> (a decoding step of one
    /// token, no layer outputs) the embedded row, every layer's activations and the final norm's output go into the
    /// buffers where the kernels apply, and the result may be <see cref="DecodingBuffers.Normed"/>: the caller reads it
    /// before the next step and never disposes it or hands it on (see <see cref="DecodingBuffers"/>).
    /// </summary>
    internal Tensor ForwardWithBuffers(Tensor inputIds, KvCache? cache, IList<Tensor>? layerOutputs, DecodingBuffers? buffers)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        if (layerOutputs is not null)
        {
            // Each layer's output is kept, so it cannot be one row rewritten in place.
            buffers = null;
        }

        using var scope = NewDisposeScope();
        Tensor hidden = buffers is not null && _embedTokens.TryLookUpRow(inputIds, buffers.Hidden) ? buffers.Hidden : _embedTokens.forward(inputIds); // [B, T, D]
        using RotaryTables rope = _rotary.CreateTables(cache?.Length ?? 0, inputIds.size(1), hidden.dtype, hidden.device);
        using var masks = new AttentionMasks();
        foreach (LlamaDecoderLayer layer in _layerArray)
        {
            hidden = layer.ForwardWithBuffers(hidden, rope, cache, masks, null, buffers); // [B, T, D]
            layerOutputs?.Add(hidden.MoveToOuterDisposeScope());
        }

        return _norm.ForwardInto(hidden, buffers?.Normed).MoveToOuterDisposeScope(); // [B, T, D]
    }
}
