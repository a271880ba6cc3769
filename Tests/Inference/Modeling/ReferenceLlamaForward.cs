using ModelSurgery.Inference.Configuration;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Modeling;

/// <summary>
/// An independent float64 forward pass of a Llama-family model written as plain loops from the Hugging Face definitions
/// (LlamaRMSNorm, rotate_half RoPE, repeat_kv grouped-query attention with transformers' sliding-window mask, SwiGLU),
/// reading the weights by their checkpoint names. It shares no code with the library's modules and takes the per-layer
/// windows as an argument instead of reading them from the config, so agreement checks the config reading too.
/// </summary>
internal sealed class ReferenceLlamaForward
{
    private readonly Dictionary<string, double[]> _weights;
    private readonly int _d, _f, _heads, _kvHeads, _hd, _vocab, _layers;
    private readonly double _eps;
    private readonly double[] _inverseFrequencies;
    private readonly int?[] _windows;

    /// <param name="config">Sizes, epsilon, rope theta, biases and tying.</param>
    /// <param name="stateDict">Weights by Hugging Face name (copied to float64).</param>
    /// <param name="windows">Per layer, null for full causal attention or the window W: query i sees keys j with i - W &lt; j &lt;= i.</param>
    public ReferenceLlamaForward(LlamaConfig config, IReadOnlyDictionary<string, Tensor> stateDict, IReadOnlyList<int?> windows)
    {
        Assert.That(windows, Has.Count.EqualTo(config.NumHiddenLayers));
        Assert.That(config.RopeScaling, Is.Null, "the reference implements plain RoPE only");
        _d = config.HiddenSize;
        _f = config.IntermediateSize;
        _heads = config.NumAttentionHeads;
        _kvHeads = config.NumKeyValueHeads;
        _hd = config.HeadDim;
        _vocab = config.VocabSize;
        _layers = config.NumHiddenLayers;
        _eps = config.RmsNormEps;
        _windows = [.. windows];
        _weights = stateDict.ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu().to_type(ScalarType.Float64).data<double>().ToArray(), StringComparer.Ordinal);
        if (config.TieWordEmbeddings)
        {
            _weights["lm_head.weight"] = _weights["model.embed_tokens.weight"];
        }

        // inv_freq[i] = theta^(-2i / head_dim), HF's default RoPE.
        _inverseFrequencies = [.. Enumerable.Range(0, _hd / 2).Select(i => Math.Pow(config.RopeTheta, -2.0 * i / _hd))];
    }

    /// <summary>Logits [T][V] of every position of <paramref name="tokens"/> (positions 0..T-1).</summary>
    public double[][] Logits(IReadOnlyList<long> tokens)
    {
        int t = tokens.Count;
        double[] embedding = _weights["model.embed_tokens.weight"];
        double[][] x = [.. tokens.Select(id => embedding.AsSpan((int)id * _d, _d).ToArray())];
        for (int layer = 0; layer < _layers; layer++)
        {
            string p = $"model.layers.{layer}.";
            double[][] normed = [.. x.Select(row => RmsNorm(row, _weights[p + "input_layernorm.weight"]))];
            double[][] q = [.. normed.Select(row => Linear(row, p + "self_attn.q_proj", _heads * _hd))];
            double[][] k = [.. normed.Select(row => Linear(row, p + "self_attn.k_proj", _kvHeads * _hd))];
            double[][] v = [.. normed.Select(row => Linear(row, p + "self_attn.v_proj", _kvHeads * _hd))];
            for (int pos = 0; pos < t; pos++)
            {
                Rotate(q[pos], _heads, pos);
                Rotate(k[pos], _kvHeads, pos);
            }

            var merged = new double[t][];
            int group = _heads / _kvHeads;
            double scale = 1.0 / Math.Sqrt(_hd);
            for (int i = 0; i < t; i++)
            {
                merged[i] = new double[_heads * _hd];
                int first = _windows[layer] is int w ? Math.Max(0, i - w + 1) : 0; // keys j with i - W < j <= i
                for (int h = 0; h < _heads; h++)
                {
                    int kv = h / group; // repeat_kv: query head h reads KV head h / group
                    var scores = new double[i - first + 1];
                    for (int j = first; j <= i; j++)
                    {
                        double dot = 0;
                        for (int e = 0; e < _hd; e++)
                        {
                            dot += q[i][(h * _hd) + e] * k[j][(kv * _hd) + e];
                        }

                        scores[j - first] = dot * scale;
                    }

                    double max = scores.Max(), sum = 0;
                    for (int s = 0; s < scores.Length; s++)
                    {
                        scores[s] = Math.Exp(scores[s] - max);
                        sum += scores[s];
                    }

                    for (int j = first; j <= i; j++)
                    {
                        double weight = scores[j - first] / sum;
                        for (int e = 0; e < _hd; e++)
                        {
                            merged[i][(h * _hd) + e] += weight * v[j][(kv * _hd) + e];
                        }
                    }
                }
            }

            for (int i = 0; i < t; i++)
            {
                Add(x[i], Linear(merged[i], p + "self_attn.o_proj", _d));
                double[] n2 = RmsNorm(x[i], _weights[p + "post_attention_layernorm.weight"]);
                double[] gate = Linear(n2, p + "mlp.gate_proj", _f);
                double[] up = Linear(n2, p + "mlp.up_proj", _f);
                var activation = new double[_f];
                for (int n = 0; n < _f; n++)
                {
                    activation[n] = gate[n] / (1 + Math.Exp(-gate[n])) * up[n]; // silu(gate) * up
                }

                Add(x[i], Linear(activation, p + "mlp.down_proj", _d));
            }
        }

        return [.. x.Select(row => Linear(RmsNorm(row, _weights["model.norm.weight"]), "lm_head", _vocab))];
    }

    /// <summary>log softmax(<paramref name="logits"/>)[<paramref name="target"/>], natural log.</summary>
    public static double LogProbability(double[] logits, long target)
    {
        double max = logits.Max();
        double logSum = max + Math.Log(logits.Sum(l => Math.Exp(l - max)));
        return logits[target] - logSum;
    }

    /// <summary>Greedy continuation: <paramref name="newTokens"/> argmax tokens after <paramref name="prompt"/>, recomputing the whole prefix each step.</summary>
    public List<long> Greedy(IReadOnlyList<long> prompt, int newTokens)
    {
        var sequence = new List<long>(prompt);
        var generated = new List<long>();
        for (int step = 0; step < newTokens; step++)
        {
            double[] last = Logits(sequence)[^1];
            long next = Array.IndexOf(last, last.Max());
            generated.Add(next);
            sequence.Add(next);
        }

        return generated;
    }

    // LlamaRMSNorm: weight * x / sqrt(mean(x^2) + eps).
    private double[] RmsNorm(double[] x, double[] weight)
    {
        double meanSquare = x.Sum(value => value * value) / x.Length;
        double inverse = 1.0 / Math.Sqrt(meanSquare + _eps);
        return [.. x.Select((value, i) => weight[i] * value * inverse)];
    }

    // y = W x (+ b) with W stored [out, in] row-major as in the checkpoint.
    private double[] Linear(double[] input, string name, int outputs)
    {
        double[] weight = _weights[name + ".weight"];
        _weights.TryGetValue(name + ".bias", out double[]? bias);
        int inputs = input.Length;
        var output = new double[outputs];
        for (int o = 0; o < outputs; o++)
        {
            double sum = bias?[o] ?? 0;
            for (int i = 0; i < inputs; i++)
            {
                sum += weight[(o * inputs) + i] * input[i];
            }

            output[o] = sum;
        }

        return output;
    }

    // rotate_half RoPE: element e pairs with e + hd/2, both turned by angle pos * inv_freq[e].
    private void Rotate(double[] vector, int heads, int position)
    {
        int half = _hd / 2;
        for (int h = 0; h < heads; h++)
        {
            for (int e = 0; e < half; e++)
            {
                double angle = position * _inverseFrequencies[e];
                double a = vector[(h * _hd) + e], b = vector[(h * _hd) + e + half];
                vector[(h * _hd) + e] = (a * Math.Cos(angle)) - (b * Math.Sin(angle));
                vector[(h * _hd) + e + half] = (b * Math.Cos(angle)) + (a * Math.Sin(angle));
            }
        }
    }

    private static void Add(double[] target, double[] values)
    {
        for (int i = 0; i < target.Length; i++)
        {
            target[i] += values[i];
        }
    }
}
