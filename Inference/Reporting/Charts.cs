using ScottPlot;

namespace ModelSurgery.Inference.Reporting;

/// <summary>A named series of (x, y) points for a line chart.</summary>
/// <param name="Label">Legend text.</param>
/// <param name="X">X values.</param>
/// <param name="Y">Y values, one per X value.</param>
public sealed record LineSeries(string Label, IReadOnlyList<double> X, IReadOnlyList<double> Y);

/// <summary>
/// PNG charts for the numbers people compare: loss curves, coverage curves, benchmark bars and score heat maps.
/// Every method writes atomically (temp file, then rename).
/// </summary>
public static class Charts
{
    /// <summary>Draws one or more line series.</summary>
    /// <param name="path">Output PNG path.</param>
    /// <param name="title">Chart title.</param>
    /// <param name="xLabel">X axis label.</param>
    /// <param name="yLabel">Y axis label.</param>
    /// <param name="series">The lines; each must have as many X as Y values.</param>
    /// <param name="logY">Plot the Y axis on a log10 scale (values must be positive).</param>
    public static void Lines(string path, string title, string xLabel, string yLabel, IReadOnlyList<LineSeries> series, bool logY = false)
    {
        ArgumentNullException.ThrowIfNull(series);
        var plot = new Plot();
        foreach (LineSeries s in series)
        {
            if (s.X.Count != s.Y.Count)
            {
                throw new ArgumentException($"Series '{s.Label}' has {s.X.Count} x values but {s.Y.Count} y values.", nameof(series));
            }

            double[] ys = logY ? [.. s.Y.Select(Math.Log10)] : [.. s.Y];
            var scatter = plot.Add.Scatter(s.X.ToArray(), ys);
            scatter.LegendText = s.Label;
            scatter.MarkerSize = s.X.Count > 50 ? 0 : 4;
        }

        if (logY)
        {
            // Values are plotted as log10; ticks are labelled with the original values.
            plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
            {
                MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
                LabelFormatter = y => Math.Pow(10, y).ToString("G3", System.Globalization.CultureInfo.InvariantCulture),
            };
        }

        Finish(plot, path, title, xLabel, logY ? yLabel + " (log scale)" : yLabel, series.Count > 1);
    }

    /// <summary>Draws a bar chart, optionally with error bars.</summary>
    /// <param name="path">Output PNG path.</param>
    /// <param name="title">Chart title.</param>
    /// <param name="yLabel">Y axis label.</param>
    /// <param name="labels">One label per bar.</param>
    /// <param name="values">Bar heights.</param>
    /// <param name="errors">Optional error bar half-widths (e.g. standard errors), one per bar.</param>
    /// <param name="baseline">
    /// Where the bars start and the value axis begins; null starts them at zero. Set it just below the smallest value
    /// to make small differences between large values visible (e.g. bits per byte of similar models).
    /// </param>
    /// <exception cref="ArgumentException">The lengths differ, or the baseline is not below every bar (and its error bar).</exception>
    public static void Bars(string path, string title, string yLabel, IReadOnlyList<string> labels, IReadOnlyList<double> values, IReadOnlyList<double>? errors = null, double? baseline = null)
    {
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(values);
        if (labels.Count != values.Count || (errors is not null && errors.Count != values.Count))
        {
            throw new ArgumentException("labels, values and errors must have the same length.", nameof(values));
        }

        if (baseline is double floor && (!double.IsFinite(floor) || values.Select((v, i) => v - (errors?[i] ?? 0)).Any(low => low <= floor)))
        {
            throw new ArgumentException($"The baseline {floor} must be finite and below every bar and error bar (lowest {values.Select((v, i) => v - (errors?[i] ?? 0)).DefaultIfEmpty(double.NaN).Min()}).", nameof(baseline));
        }

        var plot = new Plot();
        var bars = new List<Bar>();
        for (int i = 0; i < values.Count; i++)
        {
            bars.Add(new Bar { Position = i, Value = values[i], ValueBase = baseline ?? 0, Error = errors?[i] ?? 0 });
        }

        plot.Add.Bars(bars);
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            [.. Enumerable.Range(0, labels.Count).Select(i => (double)i)], [.. labels]);
        plot.Axes.Margins(bottom: 0);
        Finish(plot, path, title, string.Empty, yLabel, legend: false);
    }

    /// <summary>Draws a matrix as a heat map (rows top to bottom), e.g. layer-by-head importance.</summary>
    /// <param name="path">Output PNG path.</param>
    /// <param name="title">Chart title.</param>
    /// <param name="xLabel">Label of the columns (e.g. head).</param>
    /// <param name="yLabel">Label of the rows (e.g. layer).</param>
    /// <param name="values">The matrix, [rows, columns].</param>
    public static void HeatMap(string path, string title, string xLabel, string yLabel, double[,] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var plot = new Plot();
        var heatmap = plot.Add.Heatmap(values);
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        plot.Add.ColorBar(heatmap);
        // Rows and columns are unit indices (layers, heads): label whole numbers only.
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        Finish(plot, path, title, xLabel, yLabel, legend: false);
    }

    private static void Finish(Plot plot, string path, string title, string xLabel, string yLabel, bool legend)
    {
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        if (legend)
        {
            plot.ShowLegend(Alignment.UpperRight);
        }

        string directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(directory);
        string temp = Path.Combine(directory, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp.png");
        try
        {
            plot.SavePng(temp, 800, 500);
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }
}
