using System.Text.Json.Serialization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Scoring;

namespace ModelSurgery.Surgery.Planning;

/// <summary>How query heads are cut when the teacher uses grouped-query attention.</summary>
public enum GqaHeadMode
{
    /// <summary>Rank KV groups (by <c>kv_groups</c> scores, else the sum of their query-head scores) and keep the top groups with all their query heads.</summary>
    [JsonStringEnumMemberName("whole-kv-groups")]
    WholeKvGroups,

    /// <summary>Keep every KV head and the same number of top-scoring query heads inside each group.</summary>
    [JsonStringEnumMemberName("same-query-heads-per-group")]
    SameQueryHeadsPerGroup,
}

/// <summary>How <see cref="PlanBuilder.WithShape"/> picks layers.</summary>
public enum LayerSelection
{
    /// <summary>The paper's position prior: keep the first and last layers and thin the middle uniformly.</summary>
    [JsonStringEnumMemberName("position-prior")]
    PositionPrior,

    /// <summary>The top layers by <c>layers</c> score, kept in teacher order.</summary>
    [JsonStringEnumMemberName("top-scores")]
    TopScores,
}

/// <summary>
/// Builds a <see cref="SurgeryPlan"/> from a teacher config and importance scores (higher = more important). Each call sets one
/// dimension; the last call for a dimension wins; dimensions never set are kept whole. Widths are uniform across layers:
/// every kept layer keeps the same number of heads and neurons, chosen by ranking that layer's own scores. Ranking keeps
/// the highest scores, ties going to the lower index; the kept indices are then sorted ascending.
/// </summary>
/// <example><code>
/// SurgeryPlan plan = PlanBuilder.For(teacher, scores)
///     .KeepLayersByPositionPrior(20).KeepHeads(14, GqaHeadMode.WholeKvGroups)
///     .KeepNeuronFraction(0.45).KeepHiddenChannels(1792).RoundWidthsTo(64).Build();
/// </code></example>
public sealed class PlanBuilder
{
    private readonly LlamaConfig _teacher;
    private readonly ImportanceScores? _scores;
    private string _description = string.Empty;
    private Func<int[]>? _layers;
    private int _kvHeads;
    private int _queryPerKv;
    private int _neurons;
    private int _hidden;
    private Func<int[]?>? _tokens;
    private int _widthMultiple = 1;
    private int? _expectedVocab;

    /// <summary>Starts a plan for <paramref name="teacher"/>; <paramref name="scores"/> are needed by every top-k choice.</summary>
    /// <exception cref="ArgumentException">The config is invalid or the scores do not fit it.</exception>
    public PlanBuilder(LlamaConfig teacher, ImportanceScores? scores = null)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        try
        {
            teacher.Validate("teacher");
        }
        catch (InvalidDataException ex)
        {
            throw new ArgumentException(ex.Message, nameof(teacher), ex);
        }

        scores?.EnsureMatches(teacher);
        _teacher = teacher;
        _scores = scores;
        _kvHeads = teacher.NumKeyValueHeads;
        _queryPerKv = teacher.QueryGroupSize;
        _neurons = teacher.IntermediateSize;
        _hidden = teacher.HiddenSize;
    }

    /// <summary>The teacher the plan cuts.</summary>
    public LlamaConfig Teacher => _teacher;

    /// <summary>Starts a plan for <paramref name="teacher"/> (same as the constructor).</summary>
    public static PlanBuilder For(LlamaConfig teacher, ImportanceScores? scores = null) => new(teacher, scores);

    /// <summary>A plan that keeps everything: its student equals the teacher (with head_dim written explicitly).</summary>
    public static SurgeryPlan Identity(LlamaConfig teacher) => new PlanBuilder(teacher).WithDescription("identity").Build();

    /// <summary>
    /// A valid plan of the given shape with randomly chosen layers, heads, neurons, channels and (when the shape's vocabulary
    /// is smaller) tokens, reproducible from <paramref name="seed"/>. Useful as a baseline and for tests.
    /// </summary>
    public static SurgeryPlan Random(LlamaConfig teacher, StudentShape shape, int seed)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(shape);
#pragma warning disable CA5394 // Not security related: a reproducible random baseline.
        var random = new Random(seed);
        double[] Vector(int n) => [.. Enumerable.Range(0, n).Select(_ => random.NextDouble())];
        ScoreMatrix Matrix(int columns) => ScoreMatrix.Create(teacher.NumHiddenLayers, columns, (_, _) => random.NextDouble());
#pragma warning restore CA5394
        var scores = new ImportanceScores
        {
            Metric = "random",
            Source = $"seed {seed}",
            Layers = Vector(teacher.NumHiddenLayers),
            Heads = Matrix(teacher.NumAttentionHeads),
            KvGroups = Matrix(teacher.NumKeyValueHeads),
            Neurons = Matrix(teacher.IntermediateSize),
            HiddenChannels = Vector(teacher.HiddenSize),
            Tokens = Vector(teacher.VocabSize),
        };
        var builder = new PlanBuilder(teacher, scores).WithDescription($"random, seed {seed}").WithShape(shape, LayerSelection.TopScores);
        if (shape.VocabSize != teacher.VocabSize)
        {
            builder.KeepTopTokens(shape.VocabSize);
        }

        return builder.Build();
    }

    /// <summary>Sets the plan's free-text description.</summary>
    public PlanBuilder WithDescription(string description)
    {
        _description = description ?? string.Empty;
        return this;
    }

    /// <summary>Keeps exactly these teacher layers (any order given; kept in teacher order).</summary>
    /// <exception cref="ArgumentException">An index is out of range or repeated.</exception>
    public PlanBuilder KeepLayers(IEnumerable<int> teacherLayers)
    {
        ArgumentNullException.ThrowIfNull(teacherLayers);
        int[] layers = [.. teacherLayers.Order()];
        CheckIndices(layers, _teacher.NumHiddenLayers, nameof(teacherLayers), "num_hidden_layers");
        _layers = () => layers;
        return this;
    }

    /// <summary>Keeps the <paramref name="count"/> layers with the highest <c>layers</c> scores, in teacher order.</summary>
    public PlanBuilder KeepTopLayers(int count)
    {
        CheckCount(count, _teacher.NumHiddenLayers, nameof(count), "num_hidden_layers");
        _layers = () => TopK(RequireScores(_scores?.Layers, "layers", nameof(KeepTopLayers)), count, "layers");
        return this;
    }

    /// <summary>Keeps <paramref name="count"/> layers by the paper's position prior (<see cref="PositionPriorLayers"/>).</summary>
    public PlanBuilder KeepLayersByPositionPrior(int count)
    {
        int[] layers = PositionPriorLayers(_teacher.NumHiddenLayers, count);
        _layers = () => layers;
        return this;
    }

    /// <summary>
    /// Keeps <paramref name="queryHeads"/> query heads per layer. <see cref="GqaHeadMode.WholeKvGroups"/> needs a multiple of
    /// the teacher's group size (queryHeads / group size KV groups are kept); <see cref="GqaHeadMode.SameQueryHeadsPerGroup"/>
    /// needs a multiple of the teacher's KV heads (queryHeads / KV heads per group).
    /// </summary>
    /// <exception cref="ArgumentException">The count does not divide as the mode needs.</exception>
    public PlanBuilder KeepHeads(int queryHeads, GqaHeadMode mode)
    {
        CheckCount(queryHeads, _teacher.NumAttentionHeads, nameof(queryHeads), "num_attention_heads");
        int divisor = mode == GqaHeadMode.WholeKvGroups ? _teacher.QueryGroupSize : _teacher.NumKeyValueHeads;
        if (queryHeads % divisor != 0)
        {
            throw new ArgumentException(mode == GqaHeadMode.WholeKvGroups
                ? $"{mode}: {queryHeads} query heads is not a whole number of KV groups of {divisor} query heads."
                : $"{mode}: {queryHeads} query heads cannot be spread evenly over {divisor} KV heads.", nameof(queryHeads));
        }

        return mode == GqaHeadMode.WholeKvGroups ? KeepWholeKvGroups(queryHeads / divisor) : KeepQueryHeadsPerGroup(queryHeads / divisor);
    }

    /// <summary>Keeps the top <paramref name="kvGroups"/> KV groups per layer with all their query heads.</summary>
    public PlanBuilder KeepWholeKvGroups(int kvGroups) => KeepHeads(kvGroups, _teacher.QueryGroupSize);

    /// <summary>Keeps every KV head and the top <paramref name="queryHeadsPerGroup"/> query heads inside each group.</summary>
    public PlanBuilder KeepQueryHeadsPerGroup(int queryHeadsPerGroup) => KeepHeads(_teacher.NumKeyValueHeads, queryHeadsPerGroup);

    /// <summary>
    /// The general form of both GQA modes: keep the top <paramref name="kvHeads"/> KV groups and, inside each, the top
    /// <paramref name="queryHeadsPerKvHead"/> query heads.
    /// </summary>
    public PlanBuilder KeepHeads(int kvHeads, int queryHeadsPerKvHead)
    {
        CheckCount(kvHeads, _teacher.NumKeyValueHeads, nameof(kvHeads), "num_key_value_heads");
        CheckCount(queryHeadsPerKvHead, _teacher.QueryGroupSize, nameof(queryHeadsPerKvHead), "query heads per KV head");
        _kvHeads = kvHeads;
        _queryPerKv = queryHeadsPerKvHead;
        return this;
    }

    /// <summary>Keeps the top <paramref name="count"/> FFN neurons of every kept layer (rounded by <see cref="RoundWidthsTo"/>).</summary>
    public PlanBuilder KeepNeurons(int count)
    {
        CheckCount(count, _teacher.IntermediateSize, nameof(count), "intermediate_size");
        _neurons = count;
        return this;
    }

    /// <summary>Keeps round(<paramref name="fraction"/> * intermediate_size) neurons per layer (at least one).</summary>
    public PlanBuilder KeepNeuronFraction(double fraction) => KeepNeurons(FromFraction(fraction, _teacher.IntermediateSize, nameof(fraction)));

    /// <summary>Keeps the top <paramref name="count"/> hidden channels (rounded by <see cref="RoundWidthsTo"/>).</summary>
    public PlanBuilder KeepHiddenChannels(int count)
    {
        CheckCount(count, _teacher.HiddenSize, nameof(count), "hidden_size");
        _hidden = count;
        return this;
    }

    /// <summary>Keeps round(<paramref name="fraction"/> * hidden_size) hidden channels (at least one).</summary>
    public PlanBuilder KeepHiddenChannelFraction(double fraction) => KeepHiddenChannels(FromFraction(fraction, _teacher.HiddenSize, nameof(fraction)));

    /// <summary>
    /// Keeps these teacher token ids, in this order (position = student id), e.g. from vocabulary compression; null keeps
    /// the whole vocabulary. Validation requires the teacher's special tokens among them.
    /// </summary>
    public PlanBuilder KeepTokens(IReadOnlyList<int>? tokenIds)
    {
        int[]? tokens = tokenIds is null ? null : [.. tokenIds];
        _tokens = () => tokens;
        return this;
    }

    /// <summary>
    /// Keeps <paramref name="count"/> tokens: the teacher's special tokens (bos, eos, pad) first, then the highest
    /// <c>tokens</c> scores; the ids are kept in ascending teacher order.
    /// </summary>
    public PlanBuilder KeepTopTokens(int count)
    {
        CheckCount(count, _teacher.VocabSize, nameof(count), "vocab_size");
        _tokens = () =>
        {
            IReadOnlyList<double> scores = RequireScores(_scores?.Tokens, "tokens", nameof(KeepTopTokens));
            var special = new SortedSet<int>(new[] { _teacher.BosTokenId, _teacher.PadTokenId }.OfType<int>().Concat(_teacher.EosTokenIds)
                .Where(id => id >= 0 && id < _teacher.VocabSize));
            if (special.Count > count)
            {
                throw new ArgumentException($"KeepTopTokens: {count} tokens cannot hold the teacher's {special.Count} special tokens.", nameof(count));
            }

            double[] boosted = [.. scores.Select((s, id) => special.Contains(id) ? double.PositiveInfinity : s)];
            return TopK(boosted, count, "tokens");
        };
        return this;
    }

    /// <summary>
    /// Rounds the neuron and hidden-channel counts to a multiple of <paramref name="multiple"/> (e.g. 64) by
    /// <see cref="RoundWidth"/>. Head counts are not rounded. 1 turns rounding off.
    /// </summary>
    public PlanBuilder RoundWidthsTo(int multiple)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(multiple, 1);
        _widthMultiple = multiple;
        return this;
    }

    /// <summary>
    /// Sets every dimension from <paramref name="shape"/>: layers by <paramref name="layers"/>, KV heads and query heads per KV
    /// head (the general GQA cut), neurons and hidden channels. A vocabulary smaller than the teacher's must be supplied with
    /// <see cref="KeepTokens"/> or <see cref="KeepTopTokens"/> before <see cref="Build"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The shape exceeds the teacher or its heads do not divide into its KV heads.</exception>
    public PlanBuilder WithShape(StudentShape shape, LayerSelection layers = LayerSelection.PositionPrior)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.NumKeyValueHeads <= 0 || shape.NumAttentionHeads % shape.NumKeyValueHeads != 0)
        {
            throw new ArgumentException($"Shape {shape}: {shape.NumAttentionHeads} heads do not divide into {shape.NumKeyValueHeads} KV heads.", nameof(shape));
        }

        CheckCount(shape.VocabSize, _teacher.VocabSize, nameof(shape), "vocab_size");
        _ = layers == LayerSelection.TopScores ? KeepTopLayers(shape.NumHiddenLayers) : KeepLayersByPositionPrior(shape.NumHiddenLayers);
        KeepHeads(shape.NumKeyValueHeads, shape.NumAttentionHeads / shape.NumKeyValueHeads);
        KeepNeurons(shape.IntermediateSize);
        KeepHiddenChannels(shape.HiddenSize);
        _expectedVocab = shape.VocabSize;
        return this;
    }

    /// <summary>Builds and validates the plan.</summary>
    /// <exception cref="ArgumentException">A choice needs a score component that is missing, or the vocabulary does not match the shape.</exception>
    /// <exception cref="InvalidDataException">The result is invalid (a bug in the choices, e.g. dropped special tokens).</exception>
    public SurgeryPlan Build()
    {
        int[] layers = _layers?.Invoke() ?? [.. Enumerable.Range(0, _teacher.NumHiddenLayers)];
        int neurons = RoundWidth(_neurons, _teacher.IntermediateSize, _widthMultiple);
        int hidden = RoundWidth(_hidden, _teacher.HiddenSize, _widthMultiple);
        int[]? tokens = _tokens?.Invoke();
        int vocab = tokens?.Length ?? _teacher.VocabSize;
        if (_expectedVocab is int expected && expected != vocab)
        {
            throw new ArgumentException($"The shape asks for vocab {expected} but the plan keeps {vocab} tokens; supply them with KeepTokens or KeepTopTokens.");
        }

        int[] hiddenChannels = hidden == _teacher.HiddenSize
            ? [.. Enumerable.Range(0, hidden)]
            : TopK(RequireScores(_scores?.HiddenChannels, "hidden_channels", nameof(KeepHiddenChannels)), hidden, "hidden_channels");
        var layerPlans = new List<LayerPlan>(layers.Length);
        foreach (int layer in layers)
        {
            (int[] kvHeads, int[] queryHeads) = ChooseHeads(layer);
            int[] kept = neurons == _teacher.IntermediateSize
                ? [.. Enumerable.Range(0, neurons)]
                : TopK(RequireScores(_scores?.Neurons, "neurons", nameof(KeepNeurons)).Row(layer), neurons, $"neurons[{layer}]");
            layerPlans.Add(new LayerPlan { TeacherLayer = layer, KvHeads = kvHeads, QueryHeads = queryHeads, Neurons = kept });
        }

        var plan = new SurgeryPlan
        {
            Description = _description,
            Teacher = _teacher,
            HiddenChannels = hiddenChannels,
            KeptTokens = tokens,
            Layers = layerPlans,
        };
        plan.EnsureValid("built plan");
        return plan;
    }

    /// <summary>
    /// The width-rounding rule: a request of at least <paramref name="teacherSize"/> keeps the teacher size as is; otherwise the
    /// request goes to the nearest multiple of <paramref name="multiple"/> (halves round up), at least one multiple, and at
    /// most the largest multiple not above the teacher size (the teacher size itself when it is below one multiple).
    /// </summary>
    public static int RoundWidth(int requested, int teacherSize, int multiple)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(requested, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(teacherSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(multiple, 1);
        if (requested >= teacherSize || multiple == 1)
        {
            return Math.Min(requested, teacherSize);
        }

        if (teacherSize < multiple)
        {
            return teacherSize;
        }

        long rounded = (long)Math.Floor(((double)requested / multiple) + 0.5) * multiple;
        rounded = Math.Max(rounded, multiple);
        return (int)Math.Min(rounded, teacherSize / multiple * multiple);
    }

    /// <summary>
    /// The paper's position prior: <paramref name="count"/> layers spread uniformly over 0..teacherLayers-1, always including
    /// the first and the last (layer i of the student is teacher layer round(i * (L - 1) / (count - 1)), halves away from
    /// zero). One layer keeps layer 0.
    /// </summary>
    public static int[] PositionPriorLayers(int teacherLayers, int count)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(teacherLayers, 1);
        CheckCount(count, teacherLayers, nameof(count), "num_hidden_layers");
        if (count == 1)
        {
            return [0];
        }

        // The step is at least 1, so rounding keeps the indices distinct and ascending.
        return [.. Enumerable.Range(0, count).Select(i => (int)Math.Round((double)i * (teacherLayers - 1) / (count - 1), MidpointRounding.AwayFromZero))];
    }

    private (int[] KvHeads, int[] QueryHeads) ChooseHeads(int layer)
    {
        int groupSize = _teacher.QueryGroupSize;
        int[] kvHeads;
        if (_kvHeads == _teacher.NumKeyValueHeads)
        {
            kvHeads = [.. Enumerable.Range(0, _kvHeads)];
        }
        else
        {
            double[] groupScores;
            if (_scores?.KvGroups is { } kvScores)
            {
                groupScores = kvScores.Row(layer);
            }
            else
            {
                double[] heads = RequireScores(_scores?.Heads, "heads or kv_groups", "KeepWholeKvGroups").Row(layer);
                groupScores = [.. Enumerable.Range(0, _teacher.NumKeyValueHeads).Select(g => heads.AsSpan(g * groupSize, groupSize).ToArray().Sum())];
            }

            kvHeads = TopK(groupScores, _kvHeads, $"kv_groups[{layer}]");
        }

        if (_queryPerKv == groupSize)
        {
            return (kvHeads, [.. kvHeads.SelectMany(g => Enumerable.Range(g * groupSize, groupSize))]);
        }

        double[] headScores = RequireScores(_scores?.Heads, "heads", nameof(KeepQueryHeadsPerGroup)).Row(layer);
        var queryHeads = new List<int>(kvHeads.Length * _queryPerKv);
        foreach (int g in kvHeads)
        {
            int[] inGroup = TopK(headScores.AsSpan(g * groupSize, groupSize).ToArray(), _queryPerKv, $"heads[{layer}]");
            queryHeads.AddRange(inGroup.Select(i => (g * groupSize) + i));
        }

        return (kvHeads, [.. queryHeads]);
    }

    /// <summary>Indices of the <paramref name="k"/> highest scores (ties to the lower index), ascending.</summary>
    private static int[] TopK(IReadOnlyList<double> scores, int k, string field)
    {
        for (int i = 0; i < scores.Count; i++)
        {
            if (double.IsNaN(scores[i]))
            {
                throw new ArgumentException($"scores.{field}[{i}] is NaN; it cannot be ranked.");
            }
        }

        return [.. Enumerable.Range(0, scores.Count).OrderByDescending(i => scores[i]).ThenBy(i => i).Take(k).Order()];
    }

    private static T RequireScores<T>(T? scores, string field, string option)
        where T : class =>
        scores ?? throw new ArgumentException($"{option} ranks by importance, but the scores have no '{field}' component.");

    private static void CheckCount(int count, int teacherSize, string paramName, string key)
    {
        if (count < 1 || count > teacherSize)
        {
            throw new ArgumentOutOfRangeException(paramName, count, $"must be in 1..{teacherSize} (teacher {key} is {teacherSize}).");
        }
    }

    private static void CheckIndices(int[] sorted, int size, string paramName, string key)
    {
        if (sorted.Length == 0)
        {
            throw new ArgumentException("At least one index must be kept.", paramName);
        }

        for (int i = 0; i < sorted.Length; i++)
        {
            if (sorted[i] < 0 || sorted[i] >= size)
            {
                throw new ArgumentOutOfRangeException(paramName, sorted[i], $"index out of range 0..{size - 1} (teacher {key} is {size}).");
            }

            if (i > 0 && sorted[i] == sorted[i - 1])
            {
                throw new ArgumentException($"Index {sorted[i]} is given twice.", paramName);
            }
        }
    }

    private static int FromFraction(double fraction, int size, string paramName)
    {
        if (!(fraction > 0 && fraction <= 1))
        {
            throw new ArgumentOutOfRangeException(paramName, fraction, "must be in (0, 1].");
        }

        return Math.Max(1, (int)Math.Round(fraction * size, MidpointRounding.AwayFromZero));
    }
}
