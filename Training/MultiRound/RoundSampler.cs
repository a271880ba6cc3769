namespace ModelSurgery.Training.MultiRound;

/// <summary>
/// Draws batches for the next training round without replacement, with probability proportional to exp(loss), so
/// batches the model still finds hard are revisited more often (PanGu-pi Pro multi-round training).
/// </summary>
public static class RoundSampler
{
    /// <summary>
    /// Samples <paramref name="count"/> distinct indices. Uses the Gumbel-top-k trick: with key_i = loss_i + G_i and
    /// G_i = -ln(-ln U_i) standard Gumbel noise, the indices of the <paramref name="count"/> largest keys, in decreasing
    /// key order, are distributed exactly as sequential draws without replacement with probabilities
    /// exp(loss_i) / sum_j exp(loss_j) over the remaining items. Working with the losses themselves (log-weights) never
    /// exponentiates them, so it is numerically stable for any loss scale.
    /// </summary>
    /// <param name="losses">Loss of each batch (finite).</param>
    /// <param name="count">How many to draw, at most the number of losses.</param>
    /// <param name="random">The random source (advanced by one draw per loss).</param>
    /// <returns>Distinct batch indices in draw order.</returns>
    public static int[] Sample(IReadOnlyList<double> losses, int count, DeterministicRandom random)
    {
        ArgumentNullException.ThrowIfNull(losses);
        ArgumentNullException.ThrowIfNull(random);
        if (count < 0 || count > losses.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"Cannot draw {count} of {losses.Count} batches without replacement.");
        }

        var keys = new double[losses.Count];
        for (int i = 0; i < losses.Count; i++)
        {
            if (!double.IsFinite(losses[i]))
            {
                throw new ArgumentException($"Loss of batch {i} is {losses[i]}; sampling needs finite losses.", nameof(losses));
            }

            // U in (0, 1): offsetting by half a unit keeps both logarithms finite.
            double u = ((random.NextUInt64() >> 11) + 0.5) * (1.0 / (1UL << 53));
            keys[i] = losses[i] - Math.Log(-Math.Log(u));
        }

        // Highest keys first; ties (practically impossible) go to the lower index.
        return [.. Enumerable.Range(0, keys.Length).OrderByDescending(i => keys[i]).ThenBy(i => i).Take(count)];
    }

    /// <summary>Number of batches drawn for the next round: round(ratio * N), at least 1 when N is positive.</summary>
    /// <param name="batches">N, batches in the data set.</param>
    /// <param name="ratio">r in (0, 1].</param>
    /// <returns>The count.</returns>
    public static int CountFor(int batches, double ratio)
    {
        if (!(ratio > 0 && ratio <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(ratio), $"Round sampling ratio must be in (0, 1]; got {ratio}.");
        }

        return batches == 0 ? 0 : Math.Max(1, (int)Math.Round(ratio * batches));
    }
}
