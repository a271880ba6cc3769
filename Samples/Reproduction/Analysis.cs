using System.Globalization;

namespace ModelSurgery.Reproduction;

/// <summary>Whether our numbers back one of the paper's claims.</summary>
public enum Outcome
{
    /// <summary>Every seed agrees with the claim and the mean difference is larger than the evaluation noise.</summary>
    Reproduces,

    /// <summary>Every seed contradicts the claim and the mean difference is larger than the evaluation noise.</summary>
    DoesNotReproduce,

    /// <summary>Seeds disagree, or the difference is within the evaluation noise.</summary>
    Inconclusive,
}

/// <summary>One claim's verdict with the numbers behind it.</summary>
/// <param name="Claim">What the paper claims, in our terms (e.g. "inherited (l1) beats random init").</param>
/// <param name="Outcome">The verdict.</param>
/// <param name="MeanDifference">Mean over seeds of (claimed-worse minus claimed-better) held-out bits per byte; positive supports the claim.</param>
/// <param name="SeedDifferences">That difference for each seed.</param>
/// <param name="Noise">Half-width of the 95% bootstrap interval of the difference over evaluation documents.</param>
public sealed record Verdict(string Claim, Outcome Outcome, double MeanDifference, IReadOnlyList<double> SeedDifferences, double Noise)
{
    /// <summary>The words of an outcome as the report prints them.</summary>
    public static string Words(Outcome outcome) => outcome switch
    {
        Outcome.Reproduces => "reproduces",
        Outcome.DoesNotReproduce => "does not reproduce",
        _ => "inconclusive",
    };

    /// <summary>
    /// Smallest mean difference (bits per byte) that counts as an effect, however small the evaluation noise: two
    /// nearly identical models have a tiny paired bootstrap interval, but a difference this small is within what another
    /// training seed would change.
    /// </summary>
    public const double MinimumEffect = 0.005;

    /// <summary>
    /// The rule: with d_s the difference (claimed-worse minus claimed-better, so positive supports the claim) of seed s
    /// and <paramref name="noise"/> the evaluation noise, the claim reproduces when every d_s is positive and their mean
    /// exceeds both the noise and <see cref="MinimumEffect"/>, does not reproduce when every d_s is negative and the
    /// mean is below minus both, and is inconclusive otherwise.
    /// </summary>
    /// <param name="claim">The claim's text.</param>
    /// <param name="seedDifferences">d_s per seed (at least one).</param>
    /// <param name="noise">Non-negative noise half-width.</param>
    /// <returns>The verdict.</returns>
    /// <exception cref="ArgumentException">No differences, a non-finite one, or negative noise.</exception>
    public static Verdict Decide(string claim, IReadOnlyList<double> seedDifferences, double noise)
    {
        ArgumentNullException.ThrowIfNull(claim);
        ArgumentNullException.ThrowIfNull(seedDifferences);
        if (seedDifferences.Count == 0 || seedDifferences.Any(d => !double.IsFinite(d)))
        {
            throw new ArgumentException($"Claim '{claim}': a verdict needs at least one finite difference; got [{string.Join(", ", seedDifferences)}].", nameof(seedDifferences));
        }

        if (!(noise >= 0))
        {
            throw new ArgumentException($"Claim '{claim}': noise must be non-negative; got {noise}.", nameof(noise));
        }

        double mean = seedDifferences.Average();
        double threshold = Math.Max(noise, MinimumEffect);
        Outcome outcome = seedDifferences.All(d => d > 0) && mean > threshold ? Outcome.Reproduces
            : seedDifferences.All(d => d < 0) && mean < -threshold ? Outcome.DoesNotReproduce
            : Outcome.Inconclusive;
        return new Verdict(claim, outcome, mean, seedDifferences, noise);
    }

    /// <summary>A difference with its sign and three decimals: <c>+0.412</c>, <c>-0.038</c>, and <c>0.000</c> for anything that rounds to zero.</summary>
    public static string SignedDifference(double difference)
    {
        double rounded = Math.Round(difference, 3, MidpointRounding.AwayFromZero);
        return rounded == 0 ? "0.000" : rounded.ToString("+0.000;-0.000", CultureInfo.InvariantCulture);
    }

    /// <summary>The report's verdict line, e.g. <c>**Verdict: reproduces**: inherited beats random (difference 0.412 bpb, noise ±0.021, 2 seeds: 0.400, 0.424)</c>.</summary>
    public string ToMarkdown() => string.Create(
        CultureInfo.InvariantCulture,
        $"**Verdict: {Words(Outcome)}**: {Claim} (difference {SignedDifference(MeanDifference)} bits/byte in the claim's favour, evaluation noise ±{Noise:0.000}, {SeedDifferences.Count} seed{(SeedDifferences.Count == 1 ? "" : "s")}: {string.Join(", ", SeedDifferences.Select(SignedDifference))})");
}

/// <summary>Per-document losses of one evaluation, the unit the bootstrap resamples.</summary>
/// <param name="NllNats">Total negative log-likelihood of each document.</param>
/// <param name="Bytes">UTF-8 bytes of each document.</param>
public sealed record DocumentLosses(IReadOnlyList<double> NllNats, IReadOnlyList<long> Bytes)
{
    /// <summary>Bits per byte over all documents: total NLL / (ln 2 × total bytes).</summary>
    public double BitsPerByte => Analysis.BitsPerByte(NllNats, Bytes, Enumerable.Range(0, NllNats.Count));

    /// <summary>Document-wise mean of several evaluations of the same documents (e.g. one per seed).</summary>
    /// <exception cref="ArgumentException">The evaluations differ in documents.</exception>
    public static DocumentLosses Mean(IReadOnlyList<DocumentLosses> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        if (runs.Count == 0 || runs.Any(r => r.NllNats.Count != runs[0].NllNats.Count || !r.Bytes.SequenceEqual(runs[0].Bytes)))
        {
            throw new ArgumentException("Averaging needs at least one evaluation, all of the same documents.", nameof(runs));
        }

        return new DocumentLosses([.. Enumerable.Range(0, runs[0].NllNats.Count).Select(d => runs.Average(r => r.NllNats[d]))], runs[0].Bytes);
    }
}

/// <summary>The numbers behind the verdicts: crossing points, bootstrap intervals, mean and spread.</summary>
public static class Analysis
{
    /// <summary>Resamples of <see cref="PairedBootstrap"/>.</summary>
    public const int BootstrapResamples = 2000;

    /// <summary>
    /// The first x at which a curve reaches <paramref name="target"/> (y at or below it), linearly interpolated between
    /// the last point above and the first at or below; null when no point reaches it. A curve whose first point already
    /// reaches the target returns that point's x.
    /// </summary>
    /// <param name="curve">(x, y) points with ascending x, e.g. (tokens, validation loss).</param>
    /// <param name="target">The y to reach.</param>
    /// <returns>The crossing x, or null.</returns>
    /// <exception cref="ArgumentException">x is not ascending, or a value is not finite.</exception>
    public static double? FirstCrossingBelow(IReadOnlyList<(double X, double Y)> curve, double target)
    {
        ArgumentNullException.ThrowIfNull(curve);
        if (!double.IsFinite(target))
        {
            throw new ArgumentException($"The target must be finite; got {target}.", nameof(target));
        }

        for (int i = 0; i < curve.Count; i++)
        {
            if (!double.IsFinite(curve[i].X) || !double.IsFinite(curve[i].Y) || (i > 0 && curve[i].X <= curve[i - 1].X))
            {
                throw new ArgumentException($"Curve point {i} ({curve[i].X}, {curve[i].Y}) is not finite or its x does not ascend.", nameof(curve));
            }

            if (curve[i].Y <= target)
            {
                if (i == 0)
                {
                    return curve[0].X;
                }

                (double x0, double y0) = curve[i - 1];
                (double x1, double y1) = curve[i];
                return x0 + ((x1 - x0) * (y0 - target) / (y0 - y1));
            }
        }

        return null;
    }

    /// <summary>Bits per byte over the chosen documents.</summary>
    public static double BitsPerByte(IReadOnlyList<double> nllNats, IReadOnlyList<long> bytes, IEnumerable<int> documents)
    {
        ArgumentNullException.ThrowIfNull(nllNats);
        ArgumentNullException.ThrowIfNull(bytes);
        ArgumentNullException.ThrowIfNull(documents);
        double nll = 0;
        long total = 0;
        foreach (int d in documents)
        {
            nll += nllNats[d];
            total += bytes[d];
        }

        return total == 0 ? double.NaN : nll / (Math.Log(2) * total);
    }

    /// <summary>
    /// 95% percentile interval of bpb(<paramref name="worse"/>) - bpb(<paramref name="better"/>) when the evaluation
    /// documents are resampled with replacement (the same resample for both: the documents are paired). Seeded, so a
    /// report is reproducible.
    /// </summary>
    /// <param name="better">The claimed-better model's per-document losses.</param>
    /// <param name="worse">The claimed-worse model's, on the same documents.</param>
    /// <param name="seed">Resampling seed.</param>
    /// <returns>The interval's ends.</returns>
    /// <exception cref="ArgumentException">The two evaluations differ in documents.</exception>
    public static (double Low, double High) PairedBootstrap(DocumentLosses better, DocumentLosses worse, int seed = 17)
    {
        ArgumentNullException.ThrowIfNull(better);
        ArgumentNullException.ThrowIfNull(worse);
        int n = better.NllNats.Count;
        if (n == 0 || worse.NllNats.Count != n || !better.Bytes.SequenceEqual(worse.Bytes))
        {
            throw new ArgumentException("A paired bootstrap needs two evaluations of the same (non-empty) documents.", nameof(worse));
        }

#pragma warning disable CA5394 // Not security related: a reproducible resampling.
        var random = new Random(seed);
        var differences = new double[BootstrapResamples];
        var sample = new int[n];
        for (int r = 0; r < differences.Length; r++)
        {
            for (int i = 0; i < n; i++)
            {
                sample[i] = random.Next(n);
            }

            differences[r] = BitsPerByte(worse.NllNats, worse.Bytes, sample) - BitsPerByte(better.NllNats, better.Bytes, sample);
        }
#pragma warning restore CA5394
        Array.Sort(differences);
        return (Quantile(differences, 0.025), Quantile(differences, 0.975));
    }

    /// <summary>Half the width of <see cref="PairedBootstrap"/>'s interval: the evaluation noise of a difference.</summary>
    public static double BootstrapHalfWidth(DocumentLosses better, DocumentLosses worse, int seed = 17)
    {
        (double low, double high) = PairedBootstrap(better, worse, seed);
        return (high - low) / 2;
    }

    /// <summary>Linear-interpolated quantile of sorted values.</summary>
    /// <exception cref="ArgumentException">No values, or q outside [0, 1].</exception>
    public static double Quantile(IReadOnlyList<double> sorted, double q)
    {
        ArgumentNullException.ThrowIfNull(sorted);
        if (sorted.Count == 0 || q is < 0 or > 1)
        {
            throw new ArgumentException($"A quantile needs values and q in [0, 1]; got {sorted.Count} values and q = {q}.", nameof(q));
        }

        // R-7 (numpy's default): linear interpolation between the order statistics.
        return MathNet.Numerics.Statistics.SortedArrayStatistics.QuantileCustom(sorted as double[] ?? [.. sorted], q, MathNet.Numerics.Statistics.QuantileDefinition.R7);
    }

    /// <summary>Mean and (when there are two or more values) half the range, e.g. <c>2.345 ± 0.012</c>.</summary>
    public static string MeanAndSpread(IReadOnlyList<double> values, string format = "0.000")
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Count == 0)
        {
            return "n/a";
        }

        string mean = values.Average().ToString(format, CultureInfo.InvariantCulture);
        return values.Count == 1 ? mean : $"{mean} ± {((values.Max() - values.Min()) / 2).ToString(format, CultureInfo.InvariantCulture)}";
    }
}
