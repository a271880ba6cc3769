namespace ModelSurgery.Inference.Evaluation;

/// <summary>
/// Settings shared by every evaluation step. Defaults follow EleutherAI's lm-evaluation-harness
/// (no BOS token added to prompts, few-shot seed 1234, "\n\n" between few-shot examples, " " before each answer).
/// </summary>
public sealed record EvaluationOptions
{
    /// <summary>Name of the model in reports.</summary>
    public string ModelName { get; init; } = "model";

    /// <summary>Requests scored per forward pass; 1 turns batching off.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>The model's maximum sequence length; longer inputs are truncated on the left as the harness does.</summary>
    public int MaxLength { get; init; } = 2048;

    /// <summary>Few-shot examples per prompt, unless a <see cref="TaskSpec"/> sets its own.</summary>
    public int FewShot { get; init; }

    /// <summary>
    /// Seed of the few-shot example sampler (the harness's fewshot_random_seed): each task, or subtask, draws its examples
    /// with Python's <c>random.Random(Seed)</c>, shared by its documents in order, so prompts equal the harness's.
    /// </summary>
    public int Seed { get; init; } = 1234;

    /// <summary>Evaluate only the first N documents of each task (null: all).</summary>
    public int? Limit { get; init; }

    /// <summary>
    /// Token fed as the only context when a request's context is empty (the harness uses BOS, else EOS).
    /// Null: taken from the tokenizer (SentencePiece / BPE BOS id) where it has one.
    /// </summary>
    public int? PrefixTokenId { get; init; }

    /// <summary>Prepend <see cref="PrefixTokenId"/> to every context (the harness's add_bos_token; off by default).</summary>
    public bool AddBosToken { get; init; }

    /// <summary>Tokens each bits-per-byte window holds (null: <see cref="MaxLength"/>).</summary>
    public int? TextContextLength { get; init; }

    /// <summary>New tokens scored per bits-per-byte window (null: the context length, i.e. disjoint windows as the harness's rolling log-likelihood).</summary>
    public int? TextStride { get; init; }

    /// <summary>String placed between a prompt and its answer.</summary>
    public string TargetDelimiter { get; init; } = " ";

    /// <summary>String placed between few-shot examples and before the question.</summary>
    public string FewShotDelimiter { get; init; } = "\n\n";

    internal void Validate()
    {
        if (BatchSize < 1)
        {
            throw new ArgumentException($"BatchSize must be at least 1 but is {BatchSize}.", nameof(BatchSize));
        }

        if (MaxLength < 1)
        {
            throw new ArgumentException($"MaxLength must be at least 1 but is {MaxLength}.", nameof(MaxLength));
        }

        if (FewShot < 0)
        {
            throw new ArgumentException($"FewShot must not be negative but is {FewShot}.", nameof(FewShot));
        }

        if (Limit is < 1)
        {
            throw new ArgumentException($"Limit must be at least 1 when set but is {Limit}.", nameof(Limit));
        }
    }
}
