using ModelSurgery.Training.Distillation;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Training;

/// <summary>
/// A tiny causal language model standing in for the Llama model in training tests: embedding, a causal mixing of the
/// current and previous position, a layer norm and a linear head. Parameter names follow the HF conventions the
/// trainer relies on (norm weights end in <c>norm.weight</c>, biases in <c>.bias</c>).
/// </summary>
/// <remarks>
/// The mixing is a kernel-2 causal convolution written as one linear layer over [previous, current], not
/// <c>nn.Conv1d</c>: LibTorch 2.10's float32 CPU conv1d returns wrong values, sometimes NaN, on AVX-512 hosts (checked
/// against float64 conv1d: 194 of 200 random [4, 24, 17] inputs off by up to 1.9), which made distillation tests diverge
/// on some machines and not others.
/// </remarks>
internal sealed class TinyCausalLm : nn.Module<Tensor, Tensor>, IHiddenStateModel
{
    private readonly Embedding embed_tokens;
    private readonly Linear mix;
    private readonly LayerNorm norm;
    private readonly Linear lm_head;

    public TinyCausalLm(int vocab, int width, long seed)
        : base(nameof(TinyCausalLm))
    {
        torch.random.manual_seed(seed);
        Vocab = vocab;
        Width = width;
        embed_tokens = nn.Embedding(vocab, width);
        mix = nn.Linear(2 * width, width);
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
        Tensor previous = nn.functional.pad(h0, [0, 0, 1, 0])[.., ..^1]; // [B, T, D]: position t sees t-1 (zeros at 0), so it stays causal
        Tensor h1 = h0 + nn.functional.gelu(mix.forward(torch.cat([previous, h0], dim: -1))); // [B, T, D]
        Tensor logits = lm_head.forward(norm.forward(h1)); // [B, T, V]
        return (logits.MoveToOuterDisposeScope(), [h0.MoveToOuterDisposeScope(), h1.MoveToOuterDisposeScope()]);
    }
}
