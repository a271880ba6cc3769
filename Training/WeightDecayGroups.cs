using TorchSharp.Modules;

namespace ModelSurgery.Training;

/// <summary>Splits parameters into AdamW groups with and without weight decay.</summary>
public static class WeightDecayGroups
{
    /// <summary>
    /// True for parameters that must not decay: biases (name ends in <c>.bias</c>) and norm weights (the module name
    /// before <c>.weight</c> contains "norm", e.g. <c>model.norm.weight</c>, <c>input_layernorm.weight</c>).
    /// </summary>
    /// <param name="name">Parameter name (HF style).</param>
    /// <returns>Whether the parameter is excluded from weight decay.</returns>
    public static bool IsExcluded(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name == "bias" || name.EndsWith(".bias", StringComparison.Ordinal))
        {
            return true;
        }

        if (!name.EndsWith("weight", StringComparison.Ordinal))
        {
            return false;
        }

        string owner = name.EndsWith(".weight", StringComparison.Ordinal) ? name[..^".weight".Length] : string.Empty;
        string last = owner[(owner.LastIndexOf('.') + 1)..];
        return last.Contains("norm", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>Splits named parameters into (decayed, not decayed) lists, keeping order.</summary>
    /// <param name="parameters">Named parameters.</param>
    /// <returns>The two groups.</returns>
    public static (IReadOnlyList<(string Name, Parameter Parameter)> Decay, IReadOnlyList<(string Name, Parameter Parameter)> NoDecay) Split(
        IEnumerable<(string Name, Parameter Parameter)> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var decay = new List<(string, Parameter)>();
        var noDecay = new List<(string, Parameter)>();
        foreach ((string name, Parameter p) in parameters)
        {
            (IsExcluded(name) ? noDecay : decay).Add((name, p));
        }

        return (decay, noDecay);
    }
}
