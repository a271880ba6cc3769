using ModelSurgery.Training.Distillation;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Training;

/// <summary>
/// A tiny causal language model standing in for the Llama model in training tests: embedding, a causal convolution
/// over the current and previous position, a layer norm and a linear head. Parameter names follow the HF conventions the
/// trainer relies on (norm weights end in <c>norm.weight</c>, biases in <c>.bias</c>).
/// </summary>
internal sealed class TinyCausalLm : nn.Module<Tensor, Tensor>, IHiddenStateModel
{
    private const int Kernel = 2;
    private readonly Embedding embed_tokens;
    private readonly Conv1d conv;
    private readonly LayerNorm norm;
    private readonly Linear lm_head;

    public TinyCausalLm(int vocab, int width, long seed)
        : base(nameof(TinyCausalLm))
    {
        torch.random.manual_seed(seed);
        Vocab = vocab;
        Width = width;
        embed_tokens = nn.Embedding(vocab, width);
        conv = nn.Conv1d(width, width, Kernel);
        norm = nn.LayerNorm(width);
        lm_head = nn.Linear(width, vocab, hasBias: false);
        RegisterComponents();
    }

    public int Vocab { get; }

    public int Width { get; }

    public override Tensor forward(Tensor input) => ForwardWithHiddenStates(input).Logits;

    public (Tensor Logits, IReadOnlyList<Tensor> Hidden) ForwardWithHiddenStates(Tensor inputIds)
    {
        using var scope = torch.NewDisposeScope();
        Tensor h0 = embed_tokens.forward(inputIds); // [B, T, D]
        Tensor padded = nn.functional.pad(h0.transpose(1, 2), [Kernel - 1, 0]); // [B, D, T+1]: left padding keeps it causal
        Tensor h1 = h0 + nn.functional.gelu(conv.forward(padded)).transpose(1, 2); // [B, T, D]
        Tensor logits = lm_head.forward(norm.forward(h1)); // [B, T, V]
        return (logits.MoveToOuterDisposeScope(), [h0.MoveToOuterDisposeScope(), h1.MoveToOuterDisposeScope()]);
    }
}
