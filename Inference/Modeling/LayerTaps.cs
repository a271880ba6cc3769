using static TorchSharp.torch;

namespace ModelSurgery.Inference.Modeling;

/// <summary>
/// The intermediate activations of one decoder layer's forward pass, as the layer computed them (gates applied). The
/// tensors belong to the layer's dispose scope and are valid only during the <see cref="LayerTaps.Observer"/> call; they
/// carry the autograd graph, so detach them before keeping statistics.
/// </summary>
/// <param name="AttentionInput">Output of <c>input_layernorm</c>, the input of q/k/v_proj: [B, T, D].</param>
/// <param name="HeadOutputs">Each query head's attention output before <c>o_proj</c>, after the head gates: [B, H, T, hd].</param>
/// <param name="MergedHeads">The heads side by side, the input of <c>o_proj</c>: [B, T, H*hd].</param>
/// <param name="MlpInput">Output of <c>post_attention_layernorm</c>, the input of gate/up_proj: [B, T, D].</param>
/// <param name="FfnActivation"><c>silu(gate_proj(x)) * up_proj(x)</c> after the neuron gates, the input of <c>down_proj</c>: [B, T, F].</param>
public sealed record LayerActivations(Tensor AttentionInput, Tensor HeadOutputs, Tensor MergedHeads, Tensor MlpInput, Tensor FfnActivation);

/// <summary>
/// Hooks into one decoder layer's own forward pass (<see cref="LlamaDecoderLayer.forward(Tensor, RotaryTables, KvCache?, AttentionMasks?, LayerTaps?)"/>):
/// multiplicative gates and an observer of the intermediate activations. Scoring (activation statistics, learned masks)
/// uses these instead of a second copy of the layer's arithmetic. Null gates are ones and cost nothing; gradients flow
/// through the gates, so they can be trained.
/// </summary>
/// <param name="HeadGates">Per query head, multiplies its attention output before <c>o_proj</c>: [H], or null.</param>
/// <param name="NeuronGates">Per FFN neuron, multiplies <c>silu(gate) * up</c> before <c>down_proj</c>: [F], or null.</param>
/// <param name="ChannelGates">Per hidden channel, multiplies what attention and the MLP each add to the residual stream: [D], or null.</param>
/// <param name="Observer">Receives the layer's <see cref="LayerActivations"/> once per forward call, or null.</param>
public sealed record LayerTaps(Tensor? HeadGates = null, Tensor? NeuronGates = null, Tensor? ChannelGates = null, Action<LayerActivations>? Observer = null);
