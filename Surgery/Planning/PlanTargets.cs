using System.Globalization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Scoring;

namespace ModelSurgery.Surgery.Planning;

/// <summary>
/// What a student keeps, as data: layer, head, width and vocabulary targets and/or a parameter budget, applied to a
/// <see cref="PlanBuilder"/> by <see cref="ApplyTo"/>. Targets left null keep that dimension whole. A budget sets every
/// dimension from the deepest-and-thinnest <see cref="BudgetPlanner"/> shape first; explicit targets then override it.
/// </summary>
/// <remarks>
/// Errors name the target at fault by its key (<see cref="Keys"/>, e.g. <c>neuron_fraction</c>); callers that expose the
/// targets under other names (command-line options, JSON fields) pass a function mapping each key to their own name.
/// </remarks>
public sealed record PlanTargets
{
    /// <summary>Decoder layers to keep, chosen by <see cref="LayerSelection"/> (key <c>layers</c>).</summary>
    public int? Layers { get; init; }

    /// <summary>Exactly these teacher layers, in any order (key <c>keep_layers</c>); not with <see cref="Layers"/>.</summary>
    public IReadOnlyList<int>? KeepLayers { get; init; }

    /// <summary>How <see cref="Layers"/> and a budget's layer count pick layers (key <c>layer_selection</c>).</summary>
    public LayerSelection LayerSelection { get; init; } = LayerSelection.PositionPrior;

    /// <summary>KV groups to keep, each with its query heads (key <c>kv_groups</c>); null keeps them all.</summary>
    public int? KvGroups { get; init; }

    /// <summary>Query heads to keep inside each kept KV group (key <c>heads_per_group</c>); null keeps the whole group.</summary>
    public int? HeadsPerGroup { get; init; }

    /// <summary>
    /// Query heads to keep per layer, cut by <see cref="GqaMode"/> (key <c>query_heads</c>); not with
    /// <see cref="KvGroups"/> or <see cref="HeadsPerGroup"/>.
    /// </summary>
    public int? QueryHeads { get; init; }

    /// <summary>How <see cref="QueryHeads"/> is cut under grouped-query attention (key <c>gqa_mode</c>).</summary>
    public GqaHeadMode GqaMode { get; init; } = GqaHeadMode.WholeKvGroups;

    /// <summary>FFN neurons per layer (key <c>neurons</c>); not with <see cref="NeuronFraction"/>.</summary>
    public int? Neurons { get; init; }

    /// <summary>FFN neurons per layer as a share of the teacher's, in (0, 1] (key <c>neuron_fraction</c>).</summary>
    public double? NeuronFraction { get; init; }

    /// <summary>Hidden channels (key <c>hidden_channels</c>); not with <see cref="HiddenFraction"/>.</summary>
    public int? HiddenChannels { get; init; }

    /// <summary>Hidden channels as a share of the teacher's, in (0, 1] (key <c>hidden_fraction</c>).</summary>
    public double? HiddenFraction { get; init; }

    /// <summary>
    /// Vocabulary size: the special tokens and the top <c>tokens</c> scores are kept (key <c>vocab_size</c>); not with
    /// <see cref="KeptTokenIds"/>. With a budget, candidate shapes are sized for this vocabulary.
    /// </summary>
    public int? VocabSize { get; init; }

    /// <summary>Exactly these teacher token ids, position = student id (key <c>kept_token_ids</c>).</summary>
    public IReadOnlyList<int>? KeptTokenIds { get; init; }

    /// <summary>
    /// Round neuron and hidden-channel counts to a multiple of this (key <c>round_to</c>); with a budget, candidate widths
    /// are multiples of it too. Null: no rounding, and the budget planner's default multiples.
    /// </summary>
    public int? RoundTo { get; init; }

    /// <summary>Total parameter budget (key <c>budget_parameters</c>): the deepest-and-thinnest shape that meets it.</summary>
    public long? BudgetParameters { get; init; }

    /// <summary>Every problem of the targets that needs no teacher, each starting with the name of the target at fault.</summary>
    /// <param name="name">Maps a key of <see cref="Keys"/> to the caller's name for it; null uses the keys.</param>
    /// <returns>The problems; empty when the targets are valid.</returns>
    public IReadOnlyList<string> Validate(Func<string, string>? name = null)
    {
        var problems = new OptionProblems(name);

        problems.Check(Layers is null or >= 1, Keys.Layers, $"must be at least 1, got {Layers}");
        problems.Check(KeepLayers is null || KeepLayers.Count > 0, Keys.KeepLayers, "give at least one layer");
        problems.Check(KeepLayers is null || KeepLayers.All(l => l >= 0), Keys.KeepLayers, "layer indices must not be negative");
        problems.Check(KeepLayers is null || KeepLayers.Distinct().Count() == KeepLayers.Count, Keys.KeepLayers, "a layer is given twice");
        problems.Check(Enum.IsDefined(LayerSelection), Keys.LayerSelection, $"unknown selection {LayerSelection}");
        problems.Check(KvGroups is null or >= 1, Keys.KvGroups, $"must be at least 1, got {KvGroups}");
        problems.Check(HeadsPerGroup is null or >= 1, Keys.HeadsPerGroup, $"must be at least 1, got {HeadsPerGroup}");
        problems.Check(QueryHeads is null or >= 1, Keys.QueryHeads, $"must be at least 1, got {QueryHeads}");
        problems.Check(Enum.IsDefined(GqaMode), Keys.GqaMode, $"unknown mode {GqaMode}");
        problems.Check(Neurons is null or >= 1, Keys.Neurons, $"must be at least 1, got {Neurons}");
        problems.Check(NeuronFraction is null or (> 0 and <= 1), Keys.NeuronFraction, $"must be in (0, 1], got {Format(NeuronFraction)}");
        problems.Check(HiddenChannels is null or >= 1, Keys.HiddenChannels, $"must be at least 1, got {HiddenChannels}");
        problems.Check(HiddenFraction is null or (> 0 and <= 1), Keys.HiddenFraction, $"must be in (0, 1], got {Format(HiddenFraction)}");
        problems.Check(VocabSize is null or >= 1, Keys.VocabSize, $"must be at least 1, got {VocabSize}");
        problems.Check(KeptTokenIds is null || KeptTokenIds.Count > 0, Keys.KeptTokenIds, "give at least one token id");
        problems.Check(RoundTo is null or >= 1, Keys.RoundTo, $"must be at least 1, got {RoundTo}");
        problems.Check(BudgetParameters is null or > 0, Keys.BudgetParameters, $"must be positive, got {BudgetParameters}");
        problems.Exclusive(Layers is not null, Keys.Layers, KeepLayers is not null, Keys.KeepLayers);
        problems.Exclusive(QueryHeads is not null, Keys.QueryHeads, KvGroups is not null, Keys.KvGroups);
        problems.Exclusive(QueryHeads is not null, Keys.QueryHeads, HeadsPerGroup is not null, Keys.HeadsPerGroup);
        problems.Exclusive(Neurons is not null, Keys.Neurons, NeuronFraction is not null, Keys.NeuronFraction);
        problems.Exclusive(HiddenChannels is not null, Keys.HiddenChannels, HiddenFraction is not null, Keys.HiddenFraction);
        problems.Exclusive(VocabSize is not null, Keys.VocabSize, KeptTokenIds is not null, Keys.KeptTokenIds);
        return problems.List;
    }

    /// <summary>
    /// The shapes of <paramref name="teacher"/> that meet <see cref="BudgetParameters"/>, deepest and thinnest first
    /// (the first is the one <see cref="ApplyTo"/> uses); empty when there is no budget.
    /// </summary>
    /// <param name="teacher">The teacher the student is cut from.</param>
    /// <param name="name">Maps a key of <see cref="Keys"/> to the caller's name for it; null uses the keys.</param>
    /// <exception cref="ArgumentException">The targets are invalid, or no shape meets the budget; the message names the target.</exception>
    public IReadOnlyList<ShapeCandidate> BudgetCandidates(LlamaConfig teacher, Func<string, string>? name = null)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        name ??= key => key;
        ThrowIfInvalid(name);
        if (BudgetParameters is not long budget)
        {
            return [];
        }

        var constraints = new BudgetConstraints { VocabSize = VocabSize ?? KeptTokenIds?.Count };
        if (RoundTo is int multiple)
        {
            constraints = constraints with { HiddenMultiple = multiple, IntermediateMultiple = multiple };
        }

        IReadOnlyList<ShapeCandidate> candidates = Named(name, Keys.BudgetParameters, budget, () => BudgetPlanner.Candidates(teacher, budget, constraints));
        return candidates.Count > 0
            ? candidates
            : throw new ArgumentException($"{name(Keys.BudgetParameters)} {Format(budget)}: no student shape of this teacher comes within the tolerance of that budget.");
    }

    /// <summary>Sets every target on <paramref name="builder"/>: the budget's shape first, then each explicit target.</summary>
    /// <param name="builder">The builder (its teacher and scores are used).</param>
    /// <param name="name">Maps a key of <see cref="Keys"/> to the caller's name for it; null uses the keys.</param>
    /// <returns>The same builder, for chaining.</returns>
    /// <exception cref="ArgumentException">A target is invalid or does not fit the teacher; the message starts with its name.</exception>
    public PlanBuilder ApplyTo(PlanBuilder builder, Func<string, string>? name = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        name ??= key => key;
        LlamaConfig teacher = builder.Teacher;
        IReadOnlyList<ShapeCandidate> candidates = BudgetCandidates(teacher, name);
        if (candidates.Count > 0)
        {
            Named(name, Keys.BudgetParameters, BudgetParameters, () => builder.WithShape(candidates[0].Shape, LayerSelection));
        }

        if (Layers is int layers)
        {
            Named(name, Keys.Layers, layers, () => LayerSelection == LayerSelection.TopScores ? builder.KeepTopLayers(layers) : builder.KeepLayersByPositionPrior(layers));
        }

        if (KeepLayers is { } keep)
        {
            Named(name, Keys.KeepLayers, string.Join(',', keep), () => builder.KeepLayers(keep));
        }

        if (QueryHeads is int queryHeads)
        {
            Named(name, Keys.QueryHeads, queryHeads, () => builder.KeepHeads(queryHeads, GqaMode));
        }

        if (KvGroups is not null || HeadsPerGroup is not null)
        {
            // One call, so that a group count and a per-group count combine into the general GQA cut.
            string key = KvGroups is null ? Keys.HeadsPerGroup : Keys.KvGroups;
            Named(name, key, KvGroups ?? HeadsPerGroup, () => builder.KeepHeads(KvGroups ?? teacher.NumKeyValueHeads, HeadsPerGroup ?? teacher.QueryGroupSize));
        }

        if (Neurons is int neurons)
        {
            Named(name, Keys.Neurons, neurons, () => builder.KeepNeurons(neurons));
        }

        if (NeuronFraction is double neuronFraction)
        {
            Named(name, Keys.NeuronFraction, neuronFraction, () => builder.KeepNeuronFraction(neuronFraction));
        }

        if (HiddenChannels is int hidden)
        {
            Named(name, Keys.HiddenChannels, hidden, () => builder.KeepHiddenChannels(hidden));
        }

        if (HiddenFraction is double hiddenFraction)
        {
            Named(name, Keys.HiddenFraction, hiddenFraction, () => builder.KeepHiddenChannelFraction(hiddenFraction));
        }

        if (VocabSize is int vocab)
        {
            Named(name, Keys.VocabSize, vocab, () => builder.KeepTopTokens(vocab));
        }

        if (KeptTokenIds is { } tokens)
        {
            Named(name, Keys.KeptTokenIds, $"({tokens.Count} ids)", () => builder.KeepTokens(tokens));
        }

        if (RoundTo is int multiple)
        {
            Named(name, Keys.RoundTo, multiple, () => builder.RoundWidthsTo(multiple));
        }

        return builder;
    }

    /// <summary>Builds the plan for <paramref name="teacher"/> from <paramref name="scores"/> and these targets.</summary>
    /// <param name="teacher">The teacher.</param>
    /// <param name="scores">Importance scores; needed by every choice that ranks (null keeps dimensions whole or by position).</param>
    /// <param name="name">Maps a key of <see cref="Keys"/> to the caller's name for it; null uses the keys.</param>
    /// <returns>The validated plan.</returns>
    /// <exception cref="ArgumentException">A target is invalid, does not fit the teacher, or needs scores that are missing.</exception>
    public SurgeryPlan Build(LlamaConfig teacher, ImportanceScores? scores = null, Func<string, string>? name = null) =>
        ApplyTo(PlanBuilder.For(teacher, scores), name).Build();

    private void ThrowIfInvalid(Func<string, string> name)
    {
        OptionProblems.ThrowIfAny(Validate(name));
    }

    // Runs one builder call; a rejection is re-raised with the target's name and value in front.
    private static void Named(Func<string, string> name, string key, object? value, Func<PlanBuilder> call) => Named<PlanBuilder>(name, key, value, call);

    private static T Named<T>(Func<string, string> name, string key, object? value, Func<T> call)
    {
        try
        {
            return call();
        }
        catch (ArgumentException ex)
        {
            throw new ArgumentException($"{name(key)} {Format(value)}: {WithoutParameterName(ex)}", ex);
        }
    }

    // ArgumentException.Message ends in "(Parameter 'x')" (and "Actual value was ..."): the target name replaces both.
    private static string WithoutParameterName(ArgumentException ex)
    {
        string message = ex.Message;
        int cut = ex.ParamName is null ? -1 : message.IndexOf($" (Parameter '{ex.ParamName}')", StringComparison.Ordinal);
        return cut >= 0 ? message[..cut] : message;
    }

    private static string Format(object? value) => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "null";

    /// <summary>The keys that name each target in error messages.</summary>
    public static class Keys
    {
        /// <summary><see cref="PlanTargets.Layers"/>.</summary>
        public const string Layers = "layers";

        /// <summary><see cref="PlanTargets.KeepLayers"/>.</summary>
        public const string KeepLayers = "keep_layers";

        /// <summary><see cref="PlanTargets.LayerSelection"/>.</summary>
        public const string LayerSelection = "layer_selection";

        /// <summary><see cref="PlanTargets.KvGroups"/>.</summary>
        public const string KvGroups = "kv_groups";

        /// <summary><see cref="PlanTargets.HeadsPerGroup"/>.</summary>
        public const string HeadsPerGroup = "heads_per_group";

        /// <summary><see cref="PlanTargets.QueryHeads"/>.</summary>
        public const string QueryHeads = "query_heads";

        /// <summary><see cref="PlanTargets.GqaMode"/>.</summary>
        public const string GqaMode = "gqa_mode";

        /// <summary><see cref="PlanTargets.Neurons"/>.</summary>
        public const string Neurons = "neurons";

        /// <summary><see cref="PlanTargets.NeuronFraction"/>.</summary>
        public const string NeuronFraction = "neuron_fraction";

        /// <summary><see cref="PlanTargets.HiddenChannels"/>.</summary>
        public const string HiddenChannels = "hidden_channels";

        /// <summary><see cref="PlanTargets.HiddenFraction"/>.</summary>
        public const string HiddenFraction = "hidden_fraction";

        /// <summary><see cref="PlanTargets.VocabSize"/>.</summary>
        public const string VocabSize = "vocab_size";

        /// <summary><see cref="PlanTargets.KeptTokenIds"/>.</summary>
        public const string KeptTokenIds = "kept_token_ids";

        /// <summary><see cref="PlanTargets.RoundTo"/>.</summary>
        public const string RoundTo = "round_to";

        /// <summary><see cref="PlanTargets.BudgetParameters"/>.</summary>
        public const string BudgetParameters = "budget_parameters";
    }
}
