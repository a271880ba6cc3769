using System.Globalization;
using ScottPlot;

namespace ModelSurgery.Inference.Reporting;

/// <summary>A named series of (x, y) points for a line chart.</summary>
/// <param name="Label">Legend text.</param>
/// <param name="X">X values.</param>
/// <param name="Y">Y values, one per X value.</param>
public sealed record LineSeries(string Label, IReadOnlyList<double> X, IReadOnlyList<double> Y);

/// <summary>A vertical line across a line chart with its label, e.g. the chosen cut-off.</summary>
/// <param name="X">Where on the x axis.</param>
/// <param name="Label">What it marks.</param>
public sealed record ChartMarker(double X, string Label);

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
    /// <param name="integerX">X values are counts of whole things (layers, steps): label whole numbers only.</param>
    /// <param name="marker">A vertical line with its label, e.g. the chosen cut-off.</param>
    public static void Lines(string path, string title, string xLabel, string yLabel, IReadOnlyList<LineSeries> series, bool logY = false, bool integerX = false, ChartMarker? marker = null) =>
        Save(LinesPlot(title, xLabel, yLabel, series, logY, integerX, marker), path);

    /// <summary>The plot <see cref="Lines"/> renders, for inspection before it is drawn.</summary>
    /// <inheritdoc cref="Lines" path="/param"/>
    public static Plot LinesPlot(string title, string xLabel, string yLabel, IReadOnlyList<LineSeries> series, bool logY = false, bool integerX = false, ChartMarker? marker = null)
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
            UseLogTicks(plot);
        }

        if (integerX)
        {
            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        }

        if (marker is not null)
        {
            var line = plot.Add.VerticalLine(marker.X);
            line.LabelText = marker.Label;
            line.LinePattern = LinePattern.Dashed;
        }

        Finish(plot, title, xLabel, logY ? yLabel + " (log scale)" : yLabel, series.Count > 1);
        return plot;
    }

    /// <summary>Draws a bar chart with each bar's value written on it, optionally with error bars.</summary>
    /// <param name="path">Output PNG path.</param>
    /// <param name="title">Chart title.</param>
    /// <param name="yLabel">Y axis label.</param>
    /// <param name="labels">One label per bar.</param>
    /// <param name="values">Bar heights.</param>
    /// <param name="errors">Optional error bar half-widths (e.g. standard errors), one per bar.</param>
    /// <param name="baseline">
    /// Where the bars start and the value axis begins; null starts them at zero. Set it just below the smallest value
    /// (see <see cref="BaselineFor"/>) to make small differences between large values visible; the axis label then says
    /// where the axis starts.
    /// </param>
    /// <param name="logY">Plot values on a log10 axis (all values positive), for values spanning orders of magnitude.</param>
    /// <exception cref="ArgumentException">The lengths differ, or the baseline is not below every bar (and its error bar).</exception>
    public static void Bars(string path, string title, string yLabel, IReadOnlyList<string> labels, IReadOnlyList<double> values, IReadOnlyList<double>? errors = null, double? baseline = null, bool logY = false) =>
        Save(BarsPlot(title, yLabel, labels, values, errors, baseline, logY), path);

    /// <summary>The plot <see cref="Bars"/> renders, for inspection before it is drawn.</summary>
    /// <inheritdoc cref="Bars" path="/param"/>
    /// <inheritdoc cref="Bars" path="/exception"/>
    public static Plot BarsPlot(string title, string yLabel, IReadOnlyList<string> labels, IReadOnlyList<double> values, IReadOnlyList<double>? errors = null, double? baseline = null, bool logY = false)
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

        if (logY && (values.Any(v => !(v > 0)) || baseline is <= 0))
        {
            throw new ArgumentException("A log axis needs positive values and baseline.", nameof(values));
        }

        var plot = new Plot();
        var bars = new List<Bar>();
        double Scale(double v) => logY ? Math.Log10(v) : v;
        double start = logY ? Math.Floor(Math.Log10(baseline ?? values.Min())) : baseline ?? 0;
        for (int i = 0; i < values.Count; i++)
        {
            // Error bars on a log axis are asymmetric; they are drawn on the linear axis only.
            bars.Add(new Bar
            {
                Position = i, Value = Scale(values[i]), ValueBase = start, Error = logY ? 0 : errors?[i] ?? 0,
                Label = FormatValue(values[i], errors?[i]),
            });
        }

        var barPlot = plot.Add.Bars(bars);
        barPlot.ValueLabelStyle.FontSize = 14;
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            [.. Enumerable.Range(0, labels.Count).Select(i => (double)i)], [.. labels]);
        plot.Axes.Margins(bottom: 0);
        if (logY)
        {
            UseLogTicks(plot);
        }

        string axis = logY ? yLabel + " (log scale)" : baseline is double b && b != 0
            ? string.Create(CultureInfo.InvariantCulture, $"{yLabel} (axis starts at {b:G4}, not 0)")
            : yLabel;
        Finish(plot, title, string.Empty, axis, legend: false);
        return plot;
    }

    /// <summary>
    /// A baseline that shows the differences between <paramref name="values"/>: below the lowest bar (and error bar) by
    /// the spread of the values, or zero when that would be near zero anyway (within half the lowest value).
    /// </summary>
    /// <param name="values">Bar heights.</param>
    /// <param name="errors">Optional error bar half-widths.</param>
    /// <returns>The baseline, or null for zero.</returns>
    public static double? BaselineFor(IReadOnlyList<double> values, IReadOnlyList<double>? errors = null)
    {
        ArgumentNullException.ThrowIfNull(values);
        double[] low = [.. values.Select((v, i) => v - (errors?[i] ?? 0)).Where(double.IsFinite)];
        double[] high = [.. values.Select((v, i) => v + (errors?[i] ?? 0)).Where(double.IsFinite)];
        if (low.Length == 0 || low.Min() <= 0)
        {
            return null;
        }

        double spread = high.Max() - low.Min();
        double floor = low.Min() - Math.Max(spread, low.Min() * 1e-3);
        return floor <= low.Min() / 2 ? null : floor;
    }

    /// <summary>Whether values span enough orders of magnitude (a factor of 20 or more) that a linear axis hides the small ones.</summary>
    /// <param name="values">The values.</param>
    /// <returns>True for a log axis.</returns>
    public static bool NeedsLogAxis(IEnumerable<double> values)
    {
        double[] finite = [.. values.Where(v => double.IsFinite(v))];
        return finite.Length > 1 && finite.All(v => v > 0) && finite.Max() / finite.Min() >= 20;
    }

    private static string FormatValue(double value, double? error) =>
        Math.Abs(value) >= 100
            ? value.ToString("N0", CultureInfo.InvariantCulture)
            : value.ToString(error is > 0 ? "F3" : "G4", CultureInfo.InvariantCulture);

    private static void UseLogTicks(Plot plot)
    {
        // Values are plotted as log10; ticks are labelled with the original values.
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            LabelFormatter = y => Math.Pow(10, y).ToString("G3", CultureInfo.InvariantCulture),
        };
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
        Finish(plot, title, xLabel, yLabel, legend: false);
        Save(plot, path);
    }

    private static void Finish(Plot plot, string title, string xLabel, string yLabel, bool legend)
    {
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        if (legend)
        {
            plot.ShowLegend(Alignment.UpperRight);
        }
    }

    /// <summary>Renders <paramref name="plot"/> (from <see cref="LinesPlot"/> or <see cref="BarsPlot"/>) as an 800 x 500 PNG, atomically.</summary>
    /// <param name="plot">The plot.</param>
    /// <param name="path">Output PNG path.</param>
    public static void Save(Plot plot, string path)
    {
        ArgumentNullException.ThrowIfNull(plot);
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
