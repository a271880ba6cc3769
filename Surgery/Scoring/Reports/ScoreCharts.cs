using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Surgery.Scoring.Reports;

/// <summary>Importance scores drawn as PNG charts.</summary>
public static class ScoreCharts
{
    /// <summary>Draws the layer-by-head scores as a heat map (rows are layers, top to bottom).</summary>
    /// <exception cref="InvalidOperationException">There are no head scores.</exception>
    public static void DrawHeadHeatMap(this ImportanceScores scores, string path)
    {
        ArgumentNullException.ThrowIfNull(scores);
        ScoreMatrix heads = scores.Heads ?? throw new InvalidOperationException($"Scores '{scores.Metric}' have no head scores to draw.");
        Charts.HeatMap(path, $"{scores.Metric}: head importance", "query head", "layer", heads.ToArray());
    }

    /// <summary>
    /// Draws per-layer curves: the layer score and the mean head and neuron score of each layer, each divided by its
    /// largest absolute value so that metrics of different scales share one axis.
    /// </summary>
    /// <exception cref="InvalidOperationException">There are no layer, head or neuron scores.</exception>
    public static void DrawLayerCurves(this ImportanceScores scores, string path) => Charts.Save(scores.LayerCurves(), path);

    /// <summary>The chart <see cref="DrawLayerCurves"/> draws, before rendering: layers on the x axis, whole numbers only.</summary>
    /// <exception cref="InvalidOperationException">There are no layer, head or neuron scores.</exception>
    public static ScottPlot.Plot LayerCurves(this ImportanceScores scores)
    {
        ArgumentNullException.ThrowIfNull(scores);
        var series = new List<LineSeries>();
        Add("layer score", scores.Layers);
        Add("mean head score", scores.Heads is null ? null : RowMeans(scores.Heads));
        Add("mean neuron score", scores.Neurons is null ? null : RowMeans(scores.Neurons));
        if (series.Count == 0)
        {
            throw new InvalidOperationException($"Scores '{scores.Metric}' have no layer, head or neuron scores to draw.");
        }

        return Charts.LinesPlot($"{scores.Metric}: per-layer importance", "layer", "score / max |score|", series, integerX: true);

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
}
