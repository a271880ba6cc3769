using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>Per-unit sums over layers for one metric.</summary>
internal sealed class UnitAccumulator
{
    private readonly LlamaConfig _config;
    private readonly double[][] _heads;
    private readonly double[][] _kvGroups;
    private readonly double[][] _neurons;
    private readonly double[] _channels;

    public UnitAccumulator(LlamaConfig config)
    {
        _config = config;
        int layers = config.NumHiddenLayers;
        _heads = [.. Enumerable.Range(0, layers).Select(_ => new double[config.NumAttentionHeads])];
        _kvGroups = [.. Enumerable.Range(0, layers).Select(_ => new double[config.NumKeyValueHeads])];
        _neurons = [.. Enumerable.Range(0, layers).Select(_ => new double[config.IntermediateSize])];
        _channels = new double[config.HiddenSize];
    }

    /// <summary>Adds one layer's element scores (e.g. one calibration batch's worth).</summary>
    public void AddLayer(int layer, LayerElementScores scores)
    {
        AddTo(_heads[layer], UnitRollup.Heads(scores, _config));
        AddTo(_kvGroups[layer], UnitRollup.KvGroups(scores, _config));
        AddTo(_neurons[layer], UnitRollup.Neurons(scores));
        AddTo(_channels, UnitRollup.Channels(scores));
    }

    public void SetLayer(int layer, double[] heads, double[] neurons)
    {
        _heads[layer] = heads;
        _neurons[layer] = neurons;
    }

    public void AddChannels(double[] values) => AddTo(_channels, values);

    /// <summary>The sums, or their square roots (for L2 norms).</summary>
    public UnitScores ToScores(bool sqrt) => new()
    {
        Heads = Map(_heads, sqrt),
        KvGroups = Map(_kvGroups, sqrt),
        Neurons = Map(_neurons, sqrt),
        Channels = Map([_channels], sqrt)[0],
    };

    private static void AddTo(double[] total, double[] values)
    {
        for (int i = 0; i < total.Length; i++)
        {
            total[i] += values[i];
        }
    }

    private static double[][] Map(double[][] rows, bool sqrt) => [.. rows.Select(r => r.Select(v => sqrt ? Math.Sqrt(v) : v).ToArray())];
}
