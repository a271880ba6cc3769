using System.Globalization;
using System.Numerics;
using ModelSurgery.Inference.Evaluation;

namespace ModelSurgery.Tests.Evaluation;

/// <summary>
/// <see cref="PythonRandom"/> against CPython 3.11.7's <c>random.Random</c>. Every golden value was printed by the
/// Python one-liner in the comment above it.
/// </summary>
public sealed class PythonRandomTests
{
    // python3 -c "import random; r=random.Random(0); print([r.getrandbits(32) for _ in range(3)])"
    [TestCase("0", new uint[] { 3626764237, 1654615998, 3255389356 })]
    // python3 -c "import random; r=random.Random(1234); print([r.getrandbits(32) for _ in range(3)])"
    [TestCase("1234", new uint[] { 4150886329, 3342196574, 1892932127 })]
    // python3 -c "import random; r=random.Random(2**40+7); print([r.getrandbits(32) for _ in range(3)])"
    [TestCase("1099511627783", new uint[] { 2635837658, 3209733218, 3500038837 })]
    // python3 -c "import random; r=random.Random(2**64+3); print([r.getrandbits(32) for _ in range(2)])"
    [TestCase("18446744073709551619", new uint[] { 3921169615, 2134766284 })]
    // python3 -c "import random; r=random.Random(-5); print([r.getrandbits(32) for _ in range(2)])"
    [TestCase("-5", new uint[] { 2675342405, 1097127993 })]
    public void Seeding_matches_python_for_small_large_and_negative_seeds(string seed, uint[] expected)
    {
        var random = new PythonRandom(BigInteger.Parse(seed, CultureInfo.InvariantCulture));
        Assert.That(expected.Select(_ => random.GetRandBits32(32)), Is.EqualTo(expected));
    }

    // python3 -c "import random; r=random.Random(1234); print([r.getrandbits(k) for k in (1, 31, 32, 33, 64, 100)])"
    [TestCase(1234, new[] { "1", "1671098287", "1892932127", "501869158", "16804540376168033093", "776990780702432415618358179138" })]
    // python3 -c "import random; r=random.Random(0); print([r.getrandbits(k) for k in (1, 31, 32, 33, 64, 100)])"
    [TestCase(0, new[] { "1", "827307999", "3255389356", "3823568514", "4776171008201404212", "513868133461680832233190503674" })]
    public void Getrandbits_matches_python_below_at_and_above_one_word(int seed, string[] expected)
    {
        var random = new PythonRandom(seed);
        BigInteger[] drawn = [.. new[] { 1, 31, 32, 33, 64, 100 }.Select(random.GetRandBits)];
        Assert.That(drawn, Is.EqualTo(expected.Select(e => BigInteger.Parse(e, CultureInfo.InvariantCulture))));
    }

    // python3 -c "import random; r=random.Random(1234); print([repr(r.random()) for _ in range(3)])"
    [TestCase(1234L, new[] { 0.9664535356921388, 0.4407325991753527, 0.007491470058587191 })]
    // python3 -c "import random; r=random.Random(2**40+7); print([repr(r.random()) for _ in range(2)])"
    [TestCase(1099511627783L, new[] { 0.6137037779936511, 0.8149162973309487 })]
    public void Random_matches_python_to_the_last_bit(long seed, double[] expected)
    {
        var random = new PythonRandom(seed);
        Assert.That(expected.Select(_ => random.NextDouble()), Is.EqualTo(expected));
    }

    [Test]
    public void Randrange_matches_python()
    {
        // python3 -c "import random; r=random.Random(1234); print([r.randrange(1000) for _ in range(5)])"
        var random = new PythonRandom(1234);
        Assert.That(Enumerable.Range(0, 5).Select(_ => random.RandBelow(1000)), Is.EqualTo(new[] { 989, 796, 451, 119, 7 }));
    }

    [Test]
    public void Sample_matches_python_with_the_pool_and_the_set_method()
    {
        // python3 -c "import random; r=random.Random(1234); print(r.sample(range(10), 4), r.sample(range(10), 10))"
        var random = new PythonRandom(1234);
        Assert.That(random.Sample(Range(10), 4), Is.EqualTo(new[] { 7, 1, 0, 9 }));
        Assert.That(random.Sample(Range(10), 10), Is.EqualTo(new[] { 9, 0, 1, 8, 2, 7, 6, 3, 5, 4 }));

        // n = 100 > setsize 21 for k = 5: the set method.
        // python3 -c "import random; r=random.Random(1234); print(r.sample(range(100), 5))"
        Assert.That(new PythonRandom(1234).Sample(Range(100), 5), Is.EqualTo(new[] { 99, 56, 14, 0, 11 }));

        // k = 8: setsize 21 + 4 ** ceil(log4(24)) = 85 < 1000: the set method.
        // python3 -c "import random; r=random.Random(0); print(r.sample(range(1000), 8))"
        Assert.That(new PythonRandom(0).Sample(Range(1000), 8), Is.EqualTo(new[] { 864, 394, 776, 911, 430, 41, 265, 988 }));

        // k = 6: setsize 85 >= 30: the pool method.
        // python3 -c "import random; r=random.Random(1234); print(r.sample(range(30), 6))"
        Assert.That(new PythonRandom(1234).Sample(Range(30), 6), Is.EqualTo(new[] { 24, 14, 3, 0, 2, 18 }));
    }

    [Test]
    public void Sample_switches_method_exactly_where_python_does()
    {
        // k = 5: setsize 21, so 21 items use the pool and 22 the set (one generator for both calls).
        // python3 -c "import random; r=random.Random(1234); print(r.sample(range(21), 5), r.sample(range(22), 5))"
        var random = new PythonRandom(1234);
        Assert.That(random.Sample(Range(21), 5), Is.EqualTo(new[] { 14, 3, 0, 2, 1 }));
        Assert.That(random.Sample(Range(22), 5), Is.EqualTo(new[] { 21, 2, 3, 11, 7 }));
    }

    [Test]
    public void Sample_rejects_more_items_than_the_population()
    {
        Assert.That(() => new PythonRandom(1).Sample(Range(3), 4), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("population size 3"));
    }

    private static int[] Range(int n) => [.. Enumerable.Range(0, n)];
}
