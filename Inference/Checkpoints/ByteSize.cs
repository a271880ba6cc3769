using System.Globalization;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>Parses and formats byte sizes such as <c>2GB</c>, <c>500MB</c> or <c>10GiB</c> (e.g. for <c>--max-shard-size</c>).</summary>
public static class ByteSize
{
    private static readonly (string Unit, long Factor)[] Units =
    [
        // Longest suffixes first so "GiB" is not read as "B".
        ("KIB", 1L << 10), ("MIB", 1L << 20), ("GIB", 1L << 30), ("TIB", 1L << 40),
        ("KB", 1_000L), ("MB", 1_000_000L), ("GB", 1_000_000_000L), ("TB", 1_000_000_000_000L),
        ("B", 1L),
    ];

    /// <summary>
    /// Parses a non-negative size: a plain number of bytes (<c>1234</c>), or a number with a unit, case-insensitive and
    /// optionally separated by a space: decimal <c>KB</c>, <c>MB</c>, <c>GB</c>, <c>TB</c> (powers of 1000, as Hugging Face
    /// reads <c>max_shard_size</c>), binary <c>KiB</c>, <c>MiB</c>, <c>GiB</c>, <c>TiB</c>, or <c>B</c>. Fractions are
    /// allowed with a unit (<c>1.5GB</c>) and rounded down to whole bytes.
    /// </summary>
    /// <exception cref="ArgumentException">The text is empty, negative, not a number, has an unknown unit or overflows; the message says which.</exception>
    public static long Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TryParse(text, out long bytes, out string? error)
            ? bytes
            : throw new ArgumentException($"Invalid byte size '{text}': {error}.", nameof(text));
    }

    /// <summary>Parses like <see cref="Parse"/>, without throwing.</summary>
    public static bool TryParse(string? text, out long bytes) => TryParse(text, out bytes, out _);

    /// <summary>Formats a size with a binary unit for messages, e.g. <c>1.50 GiB</c>.</summary>
    public static string Format(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        double value = bytes;
        int unit = 0;
        while (Math.Abs(value) >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }

        return unit == 0
            ? string.Create(CultureInfo.InvariantCulture, $"{bytes} B")
            : string.Create(CultureInfo.InvariantCulture, $"{value:0.00} {units[unit]}");
    }

    private static bool TryParse(string? text, out long bytes, out string? error)
    {
        bytes = 0;
        string trimmed = text?.Trim() ?? string.Empty;
        if (trimmed.Length == 0)
        {
            error = "it is empty; use a number of bytes or a size such as 500MB, 2GB or 10GiB";
            return false;
        }

        long factor = 1;
        string number = trimmed;
        foreach (var (unit, unitFactor) in Units)
        {
            if (trimmed.EndsWith(unit, StringComparison.OrdinalIgnoreCase))
            {
                factor = unitFactor;
                number = trimmed[..^unit.Length].TrimEnd();
                break;
            }
        }

        if (number.Length == 0)
        {
            error = "the number is missing";
            return false;
        }

        if (!number.All(c => char.IsAsciiDigit(c) || c == '.'))
        {
            error = number.StartsWith('-')
                ? "sizes cannot be negative"
                : "expected a number followed by an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)";
            return false;
        }

        if (!decimal.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out decimal value))
        {
            error = $"'{number}' is not a number";
            return false;
        }

        // Decimal holds 28 digits, so the product can only overflow far beyond long.MaxValue.
        decimal total = value > long.MaxValue ? decimal.MaxValue : decimal.Floor(value * factor);
        if (total > long.MaxValue)
        {
            error = "it is too large";
            return false;
        }

        bytes = (long)total;
        error = null;
        return true;
    }
}
