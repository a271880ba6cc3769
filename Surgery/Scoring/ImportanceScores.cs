using System.Text.Json;
using System.Text.Json.Serialization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.IO;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// Importance scores of a teacher's structures, as produced by one metric. Convention: HIGHER = MORE IMPORTANT, for every
/// component; planners keep the highest-scoring structures (ties go to the lower index). A metric whose natural output
/// is "lower is better" (e.g. loss increase when kept) must negate it before storing. Every component is optional so that a
/// metric can score only what it measures; planners report which component they are missing. Indices are teacher indices.
/// </summary>
/// <remarks>
/// Files: <see cref="Save"/> writes indented JSON (one row per line) atomically, and <see cref="Load"/> reads it back
/// exactly. Reports live apart: CSV in <see cref="Reports.ScoreCsv"/>, rank agreement between metrics in
/// <see cref="Reports.RankAgreement"/>, charts in <see cref="Reports.ScoreCharts"/>.
/// </remarks>
public sealed record ImportanceScores
{
    /// <summary>The file format version written by this library.</summary>
    public const int CurrentFormatVersion = 1;

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
