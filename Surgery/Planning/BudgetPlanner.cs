using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Surgery.Planning;

/// <summary>Constraints on the student shapes <see cref="BudgetPlanner"/> lists. head_dim is always the teacher's.</summary>
public sealed record BudgetConstraints
{
    /// <summary>Accepted relative distance from the budget: |parameters - budget| &lt;= Tolerance * budget.</summary>
    public double Tolerance { get; init; } = 0.05;

    /// <summary>Hidden sizes are multiples of this (64 or 128 suit GPU kernels).</summary>
    public int HiddenMultiple { get; init; } = 64;

    /// <summary>FFN sizes are multiples of this.</summary>
    public int IntermediateMultiple { get; init; } = 64;

    /// <summary>Smallest intermediate_size / hidden_size accepted.</summary>
    public double MinFfnRatio { get; init; } = 2.0;

    /// <summary>Largest intermediate_size / hidden_size accepted.</summary>
    public double MaxFfnRatio { get; init; } = 4.0;

    /// <summary>The student's vocabulary size (e.g. after vocabulary compression); null keeps the teacher's.</summary>
    public int? VocabSize { get; init; }

    /// <summary>Fewest layers considered.</summary>
    public int MinLayers { get; init; } = 1;

    /// <summary>Most layers considered; null means the teacher's layer count (inheritance cannot add layers).</summary>
    public int? MaxLayers { get; init; }

    /// <summary>
    /// When true (default) hidden = heads * head_dim, as in standard Llama shapes; when false the head count is
    /// floor(hidden / head_dim) (at least 1) and hidden may be any multiple of <see cref="HiddenMultiple"/>.
    /// </summary>
    public bool HiddenEqualsHeadsTimesHeadDim { get; init; } = true;
}

/// <summary>One student shape near the budget.</summary>
/// <param name="Shape">The sizes, usable with <see cref="PlanBuilder.WithShape"/>.</param>
/// <param name="Config">The student config cut from the teacher.</param>
/// <param name="Parameters">Its parameters by component.</param>
/// <param name="BudgetDeviation">(parameters - budget) / budget.</param>
public sealed record ShapeCandidate(StudentShape Shape, LlamaConfig Config, ParameterCount Parameters, double BudgetDeviation)
{
    /// <summary>intermediate_size / hidden_size.</summary>
    public double FfnRatio => (double)Shape.IntermediateSize / Shape.HiddenSize;

    /// <summary><c>L20 D1792 H14/KV14 FFN6208 V48000: 1,093,214,208 params (-0.6%)</c>.</summary>
    public override string ToString() =>
        string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{Shape}: {Parameters.Total:N0} params ({(BudgetDeviation >= 0 ? "+" : "")}{BudgetDeviation:0.0%}), FFN ratio {FfnRatio:0.00}");
}

/// <summary>
/// Lists student shapes whose parameter count is within a tolerance of a budget, for parameter inheritance from a teacher.
/// For every (layers, hidden) pair it derives the heads (hidden / head_dim), the fewest KV heads that keep the teacher's
/// grouping inheritable, and the FFN size closest to the budget within the FFN ratio range. Candidates are ranked deep and
/// thin first (more layers, then smaller hidden, then closer to the budget): PanGu-pi Pro found depth beats width at a fixed
/// budget (its 1B student: 20-21 layers, hidden 1792, 14 heads of 128, vocab 48k).
/// </summary>
public static class BudgetPlanner
{
    /// <summary>Every shape within tolerance of <paramref name="parameterBudget"/>, deep and thin first.</summary>
    /// <param name="teacher">The teacher; no shape exceeds its layers, hidden size, heads, KV heads or FFN size.</param>
    /// <param name="parameterBudget">Target total parameters (embeddings and head included), e.g. 1_100_000_000.</param>
    /// <param name="constraints">Constraints; null for the defaults.</param>
    /// <exception cref="ArgumentException">The budget or a constraint is out of range; the message names it.</exception>
    public static IReadOnlyList<ShapeCandidate> Candidates(LlamaConfig teacher, long parameterBudget, BudgetConstraints? constraints = null)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentOutOfRangeException.ThrowIfLessThan(parameterBudget, 1);
        BudgetConstraints c = constraints ?? new BudgetConstraints();
        int maxLayers = c.MaxLayers ?? teacher.NumHiddenLayers;
        int vocab = c.VocabSize ?? teacher.VocabSize;
        if (maxLayers > teacher.NumHiddenLayers || c.MinLayers < 1 || c.MinLayers > maxLayers)
        {
            throw new ArgumentException($"Layers {c.MinLayers}..{maxLayers} must lie in 1..{teacher.NumHiddenLayers} (teacher num_hidden_layers).", nameof(constraints));
        }

        if (vocab < 1 || vocab > teacher.VocabSize)
        {
            throw new ArgumentException($"VocabSize {vocab} must lie in 1..{teacher.VocabSize} (teacher vocab_size).", nameof(constraints));
        }

        if (c.HiddenMultiple < 1 || c.IntermediateMultiple < 1 || !(c.Tolerance >= 0) || !(c.MinFfnRatio > 0) || c.MaxFfnRatio < c.MinFfnRatio)
        {
            throw new ArgumentException("HiddenMultiple and IntermediateMultiple must be >= 1, Tolerance >= 0 and 0 < MinFfnRatio <= MaxFfnRatio.", nameof(constraints));
        }

        int headDim = teacher.HeadDim;
        var candidates = new List<ShapeCandidate>();
        for (int hidden = c.HiddenMultiple; hidden <= teacher.HiddenSize; hidden += c.HiddenMultiple)
        {
            if (c.HiddenEqualsHeadsTimesHeadDim && hidden % headDim != 0)
            {
                continue;
            }

            int heads = Math.Max(1, hidden / headDim);
            if (heads > teacher.NumAttentionHeads || FewestKvHeads(teacher, heads) is not int kvHeads)
            {
                continue;
            }

            int minFfn = CeilTo((int)Math.Ceiling(c.MinFfnRatio * hidden), c.IntermediateMultiple);
            int maxFfn = Math.Min(teacher.IntermediateSize, (int)Math.Floor(c.MaxFfnRatio * hidden)) / c.IntermediateMultiple * c.IntermediateMultiple;
            if (minFfn > maxFfn)
            {
                continue;
            }

            for (int layers = c.MinLayers; layers <= maxLayers; layers++)
            {
                // Parameters are linear in the FFN size: solve for the budget, round, clamp into the ratio range.
                long atMin = Count(new StudentShape(layers, hidden, minFfn, heads, kvHeads, vocab));
                long perNeuron = (Count(new StudentShape(layers, hidden, minFfn + 1, heads, kvHeads, vocab)) - atMin);
                double ideal = minFfn + ((double)(parameterBudget - atMin) / perNeuron);
                long ffn = (long)Math.Round(ideal / c.IntermediateMultiple, MidpointRounding.AwayFromZero) * c.IntermediateMultiple;
                ffn = Math.Clamp(ffn, minFfn, maxFfn);
                var shape = new StudentShape(layers, hidden, (int)ffn, heads, kvHeads, vocab);
                LlamaConfig config = shape.ToConfig(teacher);
                ParameterCount parameters = LlamaTensorLayout.CountParameters(config);
                double deviation = (double)(parameters.Total - parameterBudget) / parameterBudget;
                if (Math.Abs(deviation) <= c.Tolerance)
                {
                    candidates.Add(new ShapeCandidate(shape, config, parameters, deviation));
                }
            }
        }

        return [.. candidates
            .OrderByDescending(x => x.Shape.NumHiddenLayers)
            .ThenBy(x => x.Shape.HiddenSize)
            .ThenBy(x => Math.Abs(x.BudgetDeviation))];

        long Count(StudentShape shape) => shape.CountParameters(teacher).Total;
    }

    /// <summary>
    /// The fewest KV heads (at most the teacher's) that divide <paramref name="heads"/> into groups no larger than the
    /// teacher's group size, so whole groups can be inherited; null when none exists.
    /// </summary>
    public static int? FewestKvHeads(LlamaConfig teacher, int heads)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        int groupSize = teacher.QueryGroupSize;
        for (int kv = (heads + groupSize - 1) / groupSize; kv <= Math.Min(heads, teacher.NumKeyValueHeads); kv++)
        {
            if (heads % kv == 0)
            {
                return kv;
            }
        }

        return null;
    }

    private static int CeilTo(int value, int multiple) => (value + multiple - 1) / multiple * multiple;
}
