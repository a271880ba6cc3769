using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.IO;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// Importance scores of a teacher's structures, as produced by one metric. Convention: HIGHER = MORE IMPORTANT, for every
/// component; planners keep the highest-scoring structures (ties go to the lower index). A metric whose natural output
/// is "lower is better" (e.g. loss increase when kept) must negate it before storing. Every component is optional so that a
/// metric can score only what it measures; planners report which component they are missing. Indices are teacher indices.
/// </summary>
/// <remarks>
/// Files: <see cref="Save"/> writes indented JSON (one row per line); <see cref="SaveCsv"/> writes long-form CSV with
/// columns <c>component,layer,index,score</c>, preceded by <c># metric:</c> and <c># source:</c> comment lines. Both are
/// written atomically and read back exactly (doubles are written round-trippable).
/// </remarks>
public sealed record ImportanceScores
{
    /// <summary>The file format version written by this library.</summary>
    public const int CurrentFormatVersion = 1;

    /// <summary>CSV component names, in file order.</summary>
    private static readonly string[] CsvComponents = ["layer", "head", "kv_group", "neuron", "hidden_channel", "token"];

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Format version of the file this came from (<see cref="CurrentFormatVersion"/> for new scores).</summary>
    [JsonPropertyName("format_version")]
    public int FormatVersion { get; init; } = CurrentFormatVersion;

    /// <summary>Name of the metric that produced the scores (e.g. <c>taylor-first-order</c>).</summary>
    [JsonPropertyName("metric")]
    public required string Metric { get; init; }

    /// <summary>Which model (and data) was scored, free text.</summary>
    [JsonPropertyName("source")]
    public string Source { get; init; } = string.Empty;

    /// <summary>Per-layer scores, [L].</summary>
    [JsonPropertyName("layers")]
    [JsonConverter(typeof(OneLineDoubleListConverter))]
    public IReadOnlyList<double>? Layers { get; init; }

    /// <summary>Per-query-head scores, [L, H].</summary>
    [JsonPropertyName("heads")]
    public ScoreMatrix? Heads { get; init; }

    /// <summary>Per-KV-group scores, [L, KV]; when absent, planners sum the head scores of each group.</summary>
    [JsonPropertyName("kv_groups")]
    public ScoreMatrix? KvGroups { get; init; }

    /// <summary>Per-FFN-neuron scores, [L, I].</summary>
    [JsonPropertyName("neurons")]
    public ScoreMatrix? Neurons { get; init; }

    /// <summary>Hidden-channel (residual stream) scores, [D].</summary>
    [JsonPropertyName("hidden_channels")]
    [JsonConverter(typeof(OneLineDoubleListConverter))]
    public IReadOnlyList<double>? HiddenChannels { get; init; }

    /// <summary>Per-token scores, [V].</summary>
    [JsonPropertyName("tokens")]
    [JsonConverter(typeof(OneLineDoubleListConverter))]
    public IReadOnlyList<double>? Tokens { get; init; }

    /// <summary>
    /// Shape errors of these scores against <paramref name="config"/>, each naming the field, e.g.
    /// <c>heads: 31 rows, expected 32 (num_hidden_layers)</c>. Empty when every present component fits.
    /// </summary>
    public IReadOnlyList<string> ShapeErrors(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var errors = new List<string>();
        CheckVector(Layers, "layers", config.NumHiddenLayers, "num_hidden_layers");
        CheckMatrix(Heads, "heads", config.NumAttentionHeads, "num_attention_heads");
        CheckMatrix(KvGroups, "kv_groups", config.NumKeyValueHeads, "num_key_value_heads");
        CheckMatrix(Neurons, "neurons", config.IntermediateSize, "intermediate_size");
        CheckVector(HiddenChannels, "hidden_channels", config.HiddenSize, "hidden_size");
        CheckVector(Tokens, "tokens", config.VocabSize, "vocab_size");
        return errors;

        void CheckVector(IReadOnlyList<double>? vector, string field, int expected, string key)
        {
            if (vector is not null && vector.Count != expected)
            {
                errors.Add($"{field}: {vector.Count} values, expected {expected} ({key}).");
            }
        }

        void CheckMatrix(ScoreMatrix? matrix, string field, int expectedColumns, string key)
        {
            if (matrix is null)
            {
                return;
            }

            if (matrix.Rows != config.NumHiddenLayers)
            {
                errors.Add($"{field}: {matrix.Rows} rows, expected {config.NumHiddenLayers} (num_hidden_layers).");
            }

            if (matrix.Columns != expectedColumns)
            {
                errors.Add($"{field}: {matrix.Columns} columns, expected {expectedColumns} ({key}).");
            }
        }
    }

    /// <summary>Throws unless every present component fits <paramref name="config"/>.</summary>
    /// <exception cref="ArgumentException">A component has the wrong shape; the message names it.</exception>
    public void EnsureMatches(LlamaConfig config)
    {
        IReadOnlyList<string> errors = ShapeErrors(config);
        if (errors.Count > 0)
        {
            throw new ArgumentException($"Scores '{Metric}' do not fit the model: {string.Join(" ", errors)}", nameof(config));
        }
    }

    /// <summary>The scores as indented JSON with stable snake_case field names; absent components are omitted.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Parses scores written by <see cref="ToJson"/>.</summary>
    /// <param name="json">The JSON text.</param>
    /// <param name="source">Where the text came from, for error messages.</param>
    /// <exception cref="InvalidDataException">The text is not valid scores JSON; the message names <paramref name="source"/>.</exception>
    public static ImportanceScores FromJson(string json, string source = "scores.json")
    {
        ImportanceScores scores;
        try
        {
            scores = JsonSerializer.Deserialize<ImportanceScores>(json, JsonOptions)
                ?? throw new InvalidDataException($"{source}: scores must be a JSON object, got null.");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{source}: invalid scores JSON at {ex.Path ?? "$"} ({ex.Message}).", ex);
        }

        if (scores.FormatVersion != CurrentFormatVersion)
        {
            throw new InvalidDataException($"{source}: format_version {scores.FormatVersion} is not supported (expected {CurrentFormatVersion}).");
        }

        scores.CheckLayerCounts(source);
        return scores;
    }

    /// <summary>
    /// Merges score sets part by part: the first set that has a part supplies it. Use it to rank layers by one metric (e.g.
    /// block influence) and widths by another (e.g. activations).
    /// </summary>
    /// <exception cref="ArgumentException">No score sets were given.</exception>
    public static ImportanceScores Combine(IReadOnlyList<ImportanceScores> scores)
    {
        ArgumentNullException.ThrowIfNull(scores);
        if (scores.Count == 0)
        {
            throw new ArgumentException("Give at least one set of scores to combine.", nameof(scores));
        }

        return scores[0] with
        {
            Metric = string.Join("+", scores.Select(s => s.Metric)),
            Layers = scores.Select(s => s.Layers).FirstOrDefault(p => p is not null),
            Heads = scores.Select(s => s.Heads).FirstOrDefault(p => p is not null),
            KvGroups = scores.Select(s => s.KvGroups).FirstOrDefault(p => p is not null),
            Neurons = scores.Select(s => s.Neurons).FirstOrDefault(p => p is not null),
            HiddenChannels = scores.Select(s => s.HiddenChannels).FirstOrDefault(p => p is not null),
            Tokens = scores.Select(s => s.Tokens).FirstOrDefault(p => p is not null),
        };
    }

    /// <summary>Writes <see cref="ToJson"/> to <paramref name="path"/> atomically.</summary>
    public void Save(string path) => AtomicFile.WriteAllText(path, ToJson());

    /// <summary>Reads scores saved by <see cref="Save"/>.</summary>
    /// <exception cref="InvalidDataException">The file cannot be read or is not valid scores JSON; the message names the file.</exception>
    public static ImportanceScores Load(string path) => FromJson(DataFile.ReadAllText(path, "scores"), path);

    /// <summary>The scores as long-form CSV (<c>component,layer,index,score</c>); see the type remarks.</summary>
    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.Append("# metric: ").Append(JsonSerializer.Serialize(Metric)).Append('\n');
        sb.Append("# source: ").Append(JsonSerializer.Serialize(Source)).Append('\n');
        sb.Append("component,layer,index,score\n");
        if (Layers is not null)
        {
            for (int i = 0; i < Layers.Count; i++)
            {
                sb.Append("layer,").Append(i.ToString(CultureInfo.InvariantCulture)).Append(",,").Append(Format(Layers[i])).Append('\n');
            }
        }

        AppendMatrix(Heads, "head");
        AppendMatrix(KvGroups, "kv_group");
        AppendMatrix(Neurons, "neuron");
        AppendVector(HiddenChannels, "hidden_channel");
        AppendVector(Tokens, "token");
        return sb.ToString();

        void AppendMatrix(ScoreMatrix? matrix, string component)
        {
            if (matrix is null)
            {
                return;
            }

            for (int r = 0; r < matrix.Rows; r++)
            {
                for (int c = 0; c < matrix.Columns; c++)
                {
                    sb.Append(component).Append(',').Append(r.ToString(CultureInfo.InvariantCulture)).Append(',')
                        .Append(c.ToString(CultureInfo.InvariantCulture)).Append(',').Append(Format(matrix[r, c])).Append('\n');
                }
            }
        }

        void AppendVector(IReadOnlyList<double>? vector, string component)
        {
            if (vector is null)
            {
                return;
            }

            for (int i = 0; i < vector.Count; i++)
            {
                sb.Append(component).Append(",,").Append(i.ToString(CultureInfo.InvariantCulture)).Append(',').Append(Format(vector[i])).Append('\n');
            }
        }

        static string Format(double value) => value.ToString("R", CultureInfo.InvariantCulture);
    }

    /// <summary>Parses CSV written by <see cref="ToCsv"/>. Rows may come in any order, but every cell must appear exactly once.</summary>
    /// <exception cref="InvalidDataException">A line is malformed or a component is incomplete; the message names source and line.</exception>
    public static ImportanceScores FromCsv(string csv, string source = "scores.csv")
    {
        ArgumentNullException.ThrowIfNull(csv);
        string? metric = null;
        string source0 = string.Empty;
        bool sawHeader = false;
        var cells = CsvComponents.ToDictionary(c => c, _ => new Dictionary<(int Layer, int Index), double>());
        string[] lines = csv.Split('\n');
        for (int n = 0; n < lines.Length; n++)
        {
            string line = lines[n].TrimEnd('\r');
            string where = $"{source}:{n + 1}";
            if (line.Length == 0)
            {
                continue;
            }

            if (line.StartsWith("# metric: ", StringComparison.Ordinal))
            {
                metric = ParseQuoted(line["# metric: ".Length..], where);
                continue;
            }

            if (line.StartsWith("# source: ", StringComparison.Ordinal))
            {
                source0 = ParseQuoted(line["# source: ".Length..], where);
                continue;
            }

            if (line.StartsWith('#'))
            {
                continue;
            }

            if (!sawHeader)
            {
                if (line != "component,layer,index,score")
                {
                    throw new InvalidDataException($"{where}: expected the header 'component,layer,index,score', got '{line}'.");
                }

                sawHeader = true;
                continue;
            }

            string[] parts = line.Split(',');
            if (parts.Length != 4)
            {
                throw new InvalidDataException($"{where}: expected 4 comma-separated fields, got {parts.Length}.");
            }

            if (!cells.TryGetValue(parts[0], out var componentCells))
            {
                throw new InvalidDataException($"{where}: unknown component '{parts[0]}' (expected one of {string.Join(", ", CsvComponents)}).");
            }

            bool isMatrix = parts[0] is "head" or "kv_group" or "neuron";
            int layer = parts[0] == "layer" || isMatrix ? ParseIndex(parts[1], "layer", where) : RequireEmpty(parts[1], "layer", where);
            int index = parts[0] == "layer" ? RequireEmpty(parts[2], "index", where) : ParseIndex(parts[2], "index", where);
            if (!double.TryParse(parts[3], NumberStyles.Float, CultureInfo.InvariantCulture, out double score))
            {
                throw new InvalidDataException($"{where}: score '{parts[3]}' is not a number.");
            }

            if (!componentCells.TryAdd((layer, index), score))
            {
                throw new InvalidDataException($"{where}: {parts[0]} layer {parts[1]} index {parts[2]} appears twice.");
            }
        }

        if (metric is null)
        {
            throw new InvalidDataException($"{source}: missing the '# metric: \"...\"' line.");
        }

        if (!sawHeader)
        {
            throw new InvalidDataException($"{source}: missing the header line 'component,layer,index,score'.");
        }

        var scores = new ImportanceScores
        {
            Metric = metric,
            Source = source0,
            Layers = ToVector(cells["layer"], "layer", byLayer: true),
            Heads = ToMatrix(cells["head"], "head"),
            KvGroups = ToMatrix(cells["kv_group"], "kv_group"),
            Neurons = ToMatrix(cells["neuron"], "neuron"),
            HiddenChannels = ToVector(cells["hidden_channel"], "hidden_channel", byLayer: false),
            Tokens = ToVector(cells["token"], "token", byLayer: false),
        };
        scores.CheckLayerCounts(source);
        return scores;

        double[]? ToVector(Dictionary<(int Layer, int Index), double> values, string component, bool byLayer)
        {
            if (values.Count == 0)
            {
                return null;
            }

            var vector = new double[values.Count];
            for (int i = 0; i < vector.Length; i++)
            {
                if (!values.TryGetValue(byLayer ? (i, -1) : (-1, i), out vector[i]))
                {
                    throw new InvalidDataException($"{source}: {component} {i} is missing ({values.Count} {component} rows, so indices 0..{values.Count - 1} are expected).");
                }
            }

            return vector;
        }

        ScoreMatrix? ToMatrix(Dictionary<(int Layer, int Index), double> values, string component)
        {
            if (values.Count == 0)
            {
                return null;
            }

            int rows = values.Keys.Max(k => k.Layer) + 1;
            int columns = values.Keys.Max(k => k.Index) + 1;
            return ScoreMatrix.Create(rows, columns, (r, c) => values.TryGetValue((r, c), out double v)
                ? v
                : throw new InvalidDataException($"{source}: {component} layer {r} index {c} is missing (the {component} rows span [{rows}, {columns}])."));
        }

        static int ParseIndex(string text, string field, string where) =>
            int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value)
                ? value
                : throw new InvalidDataException($"{where}: {field} '{text}' is not a non-negative integer.");

        static int RequireEmpty(string text, string field, string where) =>
            text.Length == 0 ? -1 : throw new InvalidDataException($"{where}: {field} must be empty for this component, got '{text}'.");

        static string ParseQuoted(string text, string where)
        {
            try
            {
                return JsonSerializer.Deserialize<string>(text) ?? throw new InvalidDataException($"{where}: expected a quoted string.");
            }
            catch (JsonException ex)
            {
                throw new InvalidDataException($"{where}: expected a JSON-quoted string ({ex.Message}).", ex);
            }
        }
    }

    /// <summary>Writes <see cref="ToCsv"/> to <paramref name="path"/> atomically.</summary>
    public void SaveCsv(string path) => AtomicFile.WriteAllText(path, ToCsv());

    /// <summary>Reads scores saved by <see cref="SaveCsv"/>.</summary>
    /// <exception cref="InvalidDataException">The file cannot be read or is malformed; the message names the file and line.</exception>
    public static ImportanceScores LoadCsv(string path) => FromCsv(DataFile.ReadAllText(path, "scores"), path);

    /// <summary>
    /// Spearman rank correlation of two equally long score vectors: the Pearson correlation of their ranks, tied values
    /// sharing the average of their ranks. NaN when either vector is constant (the correlation is undefined).
    /// </summary>
    /// <exception cref="ArgumentException">The lengths differ, there are fewer than two values, or a value is NaN.</exception>
    public static double SpearmanCorrelation(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Count != b.Count)
        {
            throw new ArgumentException($"Score vectors differ in length: {a.Count} vs {b.Count}.", nameof(b));
        }

        if (a.Count < 2)
        {
            throw new ArgumentException($"Spearman correlation needs at least two values, got {a.Count}.", nameof(a));
        }

        double[] ra = AverageRanks(a, nameof(a));
        double[] rb = AverageRanks(b, nameof(b));
        double meanA = ra.Average(), meanB = rb.Average();
        double cov = 0, varA = 0, varB = 0;
        for (int i = 0; i < ra.Length; i++)
        {
            double da = ra[i] - meanA, db = rb[i] - meanB;
            cov += da * db;
            varA += da * da;
            varB += db * db;
        }

        return varA == 0 || varB == 0 ? double.NaN : cov / Math.Sqrt(varA * varB);
    }

    /// <summary>Spearman rank correlation of two score matrices of equal shape, over all their cells.</summary>
    /// <exception cref="ArgumentException">The shapes differ.</exception>
    public static double SpearmanCorrelation(ScoreMatrix a, ScoreMatrix b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Rows != b.Rows || a.Columns != b.Columns)
        {
            throw new ArgumentException($"Score matrices differ in shape: [{a.Rows}, {a.Columns}] vs [{b.Rows}, {b.Columns}].", nameof(b));
        }

        return SpearmanCorrelation(a.Values, b.Values);
    }

    /// <summary>1-based ranks, ascending by value; tied values get the mean of the ranks they span.</summary>
    internal static double[] AverageRanks(IReadOnlyList<double> values, string name)
    {
        int[] order = [.. Enumerable.Range(0, values.Count).OrderBy(i => values[i])];
        var ranks = new double[values.Count];
        for (int start = 0; start < order.Length;)
        {
            if (double.IsNaN(values[order[start]]))
            {
                throw new ArgumentException($"{name}[{order[start]}] is NaN; ranks are undefined.", name);
            }

            int end = start;
            while (end + 1 < order.Length && values[order[end + 1]] == values[order[start]])
            {
                end++;
            }

            double rank = ((start + end) / 2.0) + 1;
            for (int k = start; k <= end; k++)
            {
                ranks[order[k]] = rank;
            }

            start = end + 1;
        }

        return ranks;
    }

    /// <summary>Draws the layer-by-head scores as a heat map (rows are layers, top to bottom).</summary>
    /// <exception cref="InvalidOperationException">There are no head scores.</exception>
    public void DrawHeadHeatMap(string path)
    {
        ScoreMatrix heads = Heads ?? throw new InvalidOperationException($"Scores '{Metric}' have no head scores to draw.");
        Charts.HeatMap(path, $"{Metric}: head importance", "query head", "layer", heads.ToArray());
    }

    /// <summary>
    /// Draws per-layer curves: the layer score and the mean head and neuron score of each layer, each divided by its
    /// largest absolute value so that metrics of different scales share one axis.
    /// </summary>
    /// <exception cref="InvalidOperationException">There are no layer, head or neuron scores.</exception>
    public void DrawLayerCurves(string path)
    {
        var series = new List<LineSeries>();
        Add("layer score", Layers);
        Add("mean head score", Heads is null ? null : RowMeans(Heads));
        Add("mean neuron score", Neurons is null ? null : RowMeans(Neurons));
        if (series.Count == 0)
        {
            throw new InvalidOperationException($"Scores '{Metric}' have no layer, head or neuron scores to draw.");
        }

        Charts.Lines(path, $"{Metric}: per-layer importance", "layer", "score / max |score|", series);

        void Add(string label, IReadOnlyList<double>? values)
        {
            if (values is null || values.Count == 0)
            {
                return;
            }

            double scale = values.Max(Math.Abs);
            double[] y = [.. values.Select(v => scale == 0 ? 0 : v / scale)];
            series.Add(new LineSeries(label, [.. Enumerable.Range(0, y.Length).Select(i => (double)i)], y));
        }

        static double[] RowMeans(ScoreMatrix m) => [.. Enumerable.Range(0, m.Rows).Select(r => m.Row(r).DefaultIfEmpty(0).Average())];
    }

    /// <inheritdoc/>
    public bool Equals(ImportanceScores? other) =>
        other is not null
        && FormatVersion == other.FormatVersion
        && Metric == other.Metric
        && Source == other.Source
        && SameVector(Layers, other.Layers)
        && Equals(Heads, other.Heads)
        && Equals(KvGroups, other.KvGroups)
        && Equals(Neurons, other.Neurons)
        && SameVector(HiddenChannels, other.HiddenChannels)
        && SameVector(Tokens, other.Tokens);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Metric, Source, Layers?.Count, Heads, Neurons, HiddenChannels?.Count);

    private static bool SameVector(IReadOnlyList<double>? a, IReadOnlyList<double>? b) =>
        a is null ? b is null : b is not null && a.SequenceEqual(b);

    /// <summary>All matrices must agree with each other and with <see cref="Layers"/> on the number of layers.</summary>
    private void CheckLayerCounts(string source)
    {
        var counts = new List<(string Field, int Layers)>();
        if (Layers is not null)
        {
            counts.Add(("layers", Layers.Count));
        }

        foreach (var (field, matrix) in new[] { ("heads", Heads), ("kv_groups", KvGroups), ("neurons", Neurons) })
        {
            if (matrix is not null)
            {
                counts.Add((field, matrix.Rows));
            }
        }

        foreach (var (field, layers) in counts)
        {
            if (layers != counts[0].Layers)
            {
                throw new InvalidDataException($"{source}: {field} covers {layers} layers but {counts[0].Field} covers {counts[0].Layers}.");
            }
        }
    }
}
