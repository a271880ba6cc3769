using System.Text.Json;
using System.Text.Json.Serialization;

namespace ModelSurgery.Surgery.Scoring;

/// <summary>
/// An immutable dense matrix of scores, [rows, columns], e.g. [layers, heads]. Compared by value. Serialized to JSON as an
/// array of row arrays.
/// </summary>
[JsonConverter(typeof(ScoreMatrixJsonConverter))]
public sealed class ScoreMatrix : IEquatable<ScoreMatrix>
{
    private readonly double[] _values;

    /// <summary>Creates a matrix from row-major values.</summary>
    /// <param name="rows">Number of rows.</param>
    /// <param name="columns">Number of columns.</param>
    /// <param name="rowMajorValues">rows * columns values, row after row; copied.</param>
    /// <exception cref="ArgumentException">The value count does not match the shape.</exception>
    public ScoreMatrix(int rows, int columns, IReadOnlyList<double> rowMajorValues)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(columns);
        ArgumentNullException.ThrowIfNull(rowMajorValues);
        if ((long)rows * columns != rowMajorValues.Count)
        {
            throw new ArgumentException($"A [{rows}, {columns}] matrix needs {(long)rows * columns} values, got {rowMajorValues.Count}.", nameof(rowMajorValues));
        }

        Rows = rows;
        Columns = columns;
        _values = [.. rowMajorValues];
    }

    /// <summary>Number of rows (usually layers).</summary>
    public int Rows { get; }

    /// <summary>Number of columns (heads, KV groups or neurons).</summary>
    public int Columns { get; }

    /// <summary>The value at (<paramref name="row"/>, <paramref name="column"/>).</summary>
    public double this[int row, int column]
    {
        get
        {
            if ((uint)row >= (uint)Rows || (uint)column >= (uint)Columns)
            {
                throw new ArgumentOutOfRangeException(nameof(row), $"({row}, {column}) is outside a [{Rows}, {Columns}] matrix.");
            }

            return _values[(row * Columns) + column];
        }
    }

    /// <summary>All values, row after row.</summary>
    public IReadOnlyList<double> Values => Array.AsReadOnly(_values);

    /// <summary>One row, copied.</summary>
    public double[] Row(int row)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, Rows);
        return _values.AsSpan(row * Columns, Columns).ToArray();
    }

    /// <summary>Builds a matrix from equally long rows.</summary>
    /// <exception cref="ArgumentException">Rows have different lengths; the message names the first bad row.</exception>
    public static ScoreMatrix FromRows(IReadOnlyList<IReadOnlyList<double>> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        int columns = rows.Count == 0 ? 0 : rows[0].Count;
        var values = new List<double>(rows.Count * columns);
        for (int r = 0; r < rows.Count; r++)
        {
            if (rows[r].Count != columns)
            {
                throw new ArgumentException($"Row {r} has {rows[r].Count} values but row 0 has {columns}.", nameof(rows));
            }

            values.AddRange(rows[r]);
        }

        return new ScoreMatrix(rows.Count, columns, values);
    }

    /// <summary>Builds a matrix by evaluating <paramref name="value"/> at every cell.</summary>
    public static ScoreMatrix Create(int rows, int columns, Func<int, int, double> value)
    {
        ArgumentNullException.ThrowIfNull(value);
        var values = new double[(long)rows * columns];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                values[(r * columns) + c] = value(r, c);
            }
        }

        return new ScoreMatrix(rows, columns, values);
    }

    /// <summary>The matrix as a two-dimensional array, e.g. for <see cref="Inference.Reporting.Charts.HeatMap"/>.</summary>
    public double[,] ToArray()
    {
        var result = new double[Rows, Columns];
        for (int r = 0; r < Rows; r++)
        {
            for (int c = 0; c < Columns; c++)
            {
                result[r, c] = _values[(r * Columns) + c];
            }
        }

        return result;
    }

    /// <inheritdoc/>
    public bool Equals(ScoreMatrix? other) =>
        other is not null && Rows == other.Rows && Columns == other.Columns && _values.AsSpan().SequenceEqual(other._values);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as ScoreMatrix);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Rows, Columns, _values.Length == 0 ? 0 : _values[0]);

    /// <inheritdoc/>
    public override string ToString() => $"ScoreMatrix [{Rows}, {Columns}]";
}

/// <summary>Writes a <see cref="ScoreMatrix"/> as an array of rows, each on one line, and reads it back.</summary>
internal sealed class ScoreMatrixJsonConverter : JsonConverter<ScoreMatrix>
{
    public override ScoreMatrix Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        var rows = JsonSerializer.Deserialize<List<List<double>>>(ref reader, options)
            ?? throw new JsonException("A score matrix must be an array of rows, not null.");
        try
        {
            return ScoreMatrix.FromRows(rows);
        }
        catch (ArgumentException ex)
        {
            throw new JsonException(ex.Message, ex);
        }
    }

    public override void Write(Utf8JsonWriter writer, ScoreMatrix value, JsonSerializerOptions options)
    {
        // One row per line keeps large matrices readable and diffable; the writer does not indent raw values itself.
        string[] rows = [.. Enumerable.Range(0, value.Rows).Select(r => JsonSerializer.Serialize(value.Row(r), CompactJson.NamedFloats))];
        if (!writer.Options.Indented || rows.Length == 0)
        {
            writer.WriteRawValue($"[{string.Join(',', rows)}]");
            return;
        }

        string newLine = writer.Options.NewLine;
        string inner = newLine + new string(writer.Options.IndentCharacter, (writer.CurrentDepth + 1) * writer.Options.IndentSize);
        string outer = newLine + new string(writer.Options.IndentCharacter, writer.CurrentDepth * writer.Options.IndentSize);
        writer.WriteRawValue($"[{inner}{string.Join("," + inner, rows)}{outer}]");
    }
}

/// <summary>Unindented serializer options for one-line arrays inside indented documents.</summary>
internal static class CompactJson
{
    public static readonly JsonSerializerOptions Strict = new() { WriteIndented = false };

    public static readonly JsonSerializerOptions NamedFloats = new()
    {
        WriteIndented = false,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };
}
