using ModelSurgery.Inference.Checkpoints;

namespace ModelSurgery.Tests.Checkpoints;

public sealed class ByteSizeTests
{
    [TestCase("1234", 1234L)]
    [TestCase("0", 0L)]
    [TestCase("10B", 10L)]
    [TestCase("2GB", 2_000_000_000L)]
    [TestCase("500MB", 500_000_000L)]
    [TestCase("5kb", 5_000L)]
    [TestCase("1TB", 1_000_000_000_000L)]
    [TestCase("10GiB", 10L << 30)]
    [TestCase("3 MiB", 3L << 20)]
    [TestCase("1kib", 1024L)]
    [TestCase(" 1.5GB ", 1_500_000_000L)]
    [TestCase("0.5KiB", 512L)]
    public void Parses_plain_decimal_and_binary_sizes(string text, long expected)
    {
        Assert.That(ByteSize.Parse(text), Is.EqualTo(expected));
        Assert.That(ByteSize.TryParse(text, out long bytes) && bytes == expected);
    }

    [TestCase("", "empty")]
    [TestCase("GB", "number is missing")]
    [TestCase("-5MB", "negative")]
    [TestCase("5 furlongs", "expected a number followed by an optional unit")]
    [TestCase("5XB", "expected a number")]
    [TestCase("1.2.3GB", "not a number")]
    [TestCase(".GB", "expected a number")]
    [TestCase("99999999999TB", "too large")]
    [TestCase("99999999999999999999999999999999TiB", "too large")]
    public void Invalid_sizes_are_argument_errors_quoting_the_text(string text, string fragment)
    {
        var ex = Assert.Throws<ArgumentException>(() => ByteSize.Parse(text));
        Assert.That(ex!.Message, Does.Contain($"'{text}'").And.Contain(fragment));
        Assert.That(ByteSize.TryParse(text, out _), Is.False);
    }

    [TestCase(512L, "512 B")]
    [TestCase(1536L, "1.50 KiB")]
    [TestCase(10L << 30, "10.00 GiB")]
    public void Formats_with_binary_units(long bytes, string expected) =>
        Assert.That(ByteSize.Format(bytes), Is.EqualTo(expected));
}
