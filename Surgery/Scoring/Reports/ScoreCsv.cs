using System.Globalization;
using System.Text;
using System.Text.Json;
using ModelSurgery.Inference.IO;

namespace ModelSurgery.Surgery.Scoring.Reports;

/// <summary>
/// Importance scores as long-form CSV for spreadsheets and plotting tools: a <c># metric:</c> and a <c># source:</c>
/// comment line (JSON-quoted), the header <c>component,layer,index,score</c>, then one row per score. Layers fill
/// <c>layer</c>; heads, KV groups and neurons fill both; hidden channels and tokens fill <c>index</c>. Doubles are written
/// round-trippable. JSON (<see cref="ImportanceScores.Save"/>) is the format scores are read back from.
/// </summary>
public static class ScoreCsv
{
    /// <summary>The scores as CSV; see the type remarks.</summary>
    public static string ToCsv(this ImportanceScores scores)
    {
        ArgumentNullException.ThrowIfNull(scores);
        var sb = new StringBuilder();
        sb.Append("# metric: ").Append(JsonSerializer.Serialize(scores.Metric)).Append('\n');
        sb.Append("# source: ").Append(JsonSerializer.Serialize(scores.Source)).Append('\n');
        sb.Append("component,layer,index,score\n");
        if (scores.Layers is { } layers)
        {
            for (int i = 0; i < layers.Count; i++)
            {
                sb.Append("layer,").Append(i.ToString(CultureInfo.InvariantCulture)).Append(",,").Append(Format(layers[i])).Append('\n');
            }
        }

        AppendMatrix(scores.Heads, "head");
        AppendMatrix(scores.KvGroups, "kv_group");
        AppendMatrix(scores.Neurons, "neuron");
        AppendVector(scores.HiddenChannels, "hidden_channel");
        AppendVector(scores.Tokens, "token");
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

    /// <summary>Writes <see cref="ToCsv"/> to <paramref name="path"/> atomically.</summary>
    public static void SaveCsv(this ImportanceScores scores, string path) => AtomicFile.WriteAllText(path, scores.ToCsv());
}
