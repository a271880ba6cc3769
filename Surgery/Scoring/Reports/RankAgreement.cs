using MathNet.Numerics.Statistics;

namespace ModelSurgery.Surgery.Scoring.Reports;

/// <summary>
/// How far two metrics agree on the order of the same units: Spearman's rank correlation (Math.NET Numerics), the
/// Pearson correlation of the ranks, tied values sharing the average of the ranks they span.
/// </summary>
public static class RankAgreement
{
    /// <summary>Spearman rank correlation of two equally long score vectors; NaN when either is constant (it is undefined then).</summary>
    /// <exception cref="ArgumentException">The lengths differ, there are fewer than two values, or a value is NaN.</exception>
    public static double Spearman(IReadOnlyList<double> a, IReadOnlyList<double> b)
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

        // Math.NET ranks NaN as a value; a NaN score has no rank, so it is refused.
        CheckNoNaN(a, nameof(a));
        CheckNoNaN(b, nameof(b));

        // Math.NET's one-pass Pearson can round a perfect agreement to 1 + 2e-16; a correlation stays in [-1, 1] (NaN passes).
        return Math.Clamp(Correlation.Spearman(a, b), -1.0, 1.0);
    }

    /// <summary>Spearman rank correlation of two score matrices of equal shape, over all their cells.</summary>
    /// <exception cref="ArgumentException">The shapes differ.</exception>
    public static double Spearman(ScoreMatrix a, ScoreMatrix b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Rows != b.Rows || a.Columns != b.Columns)
        {
            throw new ArgumentException($"Score matrices differ in shape: [{a.Rows}, {a.Columns}] vs [{b.Rows}, {b.Columns}].", nameof(b));
        }

        return Spearman(a.Values, b.Values);
    }

    private static void CheckNoNaN(IReadOnlyList<double> values, string name)
    {
        for (int i = 0; i < values.Count; i++)
        {
            if (double.IsNaN(values[i]))
            {
                throw new ArgumentException($"{name}[{i}] is NaN; ranks are undefined.", name);
            }
        }
    }
}
