namespace ModelSurgery.Inference.Generation;

/// <summary>How <see cref="TextGenerator"/> picks tokens and when it stops.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most tokens to generate after the prompt.</summary>
    public int MaxNewTokens { get; init; } = 128;

    /// <summary>Softmax temperature; 0 means greedy (always the most likely token).</summary>
    public double Temperature { get; init; }

    /// <summary>Sample only among the k most likely tokens; 0 turns the filter off.</summary>
    public int TopK { get; init; }

    /// <summary>Nucleus sampling: sample among the fewest most likely tokens whose probability reaches this mass; 1 turns it off.</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Seed of the sampling generator, for reproducible output; null draws a random seed.</summary>
    public ulong? Seed { get; init; }

    /// <summary>Token ids that end generation (typically the EOS ids); the stop token itself is not yielded.</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];

    /// <summary>Longest sequence (prompt plus generated tokens); null uses the model's <c>max_position_embeddings</c>.</summary>
    public int? MaxContext { get; init; }

    /// <summary>Checks the values; the message names the offending option.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public void Validate()
    {
        if (MaxNewTokens < 0)
        {
            throw new ArgumentException($"GenerationOptions.MaxNewTokens must not be negative, got {MaxNewTokens}.");
        }

        if (double.IsNaN(Temperature) || Temperature < 0)
        {
            throw new ArgumentException($"GenerationOptions.Temperature must be 0 (greedy) or positive, got {Temperature}.");
        }

        if (TopK < 0)
        {
            throw new ArgumentException($"GenerationOptions.TopK must be 0 (off) or positive, got {TopK}.");
        }

        if (double.IsNaN(TopP) || TopP <= 0 || TopP > 1)
        {
            throw new ArgumentException($"GenerationOptions.TopP must be in (0, 1], got {TopP}.");
        }

        if (MaxContext is <= 0)
        {
            throw new ArgumentException($"GenerationOptions.MaxContext must be positive, got {MaxContext}.");
        }
    }
}
