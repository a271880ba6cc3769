using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Tests.Configuration;

public sealed class OptionProblemsTests
{
    [Test]
    public void Problems_start_with_the_callers_name_for_the_key_and_keep_their_order()
    {
        var problems = new OptionProblems(key => "--" + key.Replace('_', '-'));
        problems.Check(ok: true, "steps", "never listed");
        problems.Check(ok: false, "batch_size", "must be at least 1");
        problems.Exclusive(givenA: true, "layers", givenB: true, "keep_layers");
        problems.Exclusive(givenA: true, "neurons", givenB: false, "neuron_fraction");
        problems.Add("device", "'tpu' is not auto, cpu, cuda or cuda:N");

        Assert.That(problems.List, Is.EqualTo(new[]
        {
            "--batch-size: must be at least 1",
            "--layers: give --layers or --keep-layers, not both",
            "--device: 'tpu' is not auto, cpu, cuda or cuda:N",
        }));
        var ex = Assert.Throws<ArgumentException>(() => OptionProblems.ThrowIfAny(problems.List));
        Assert.That(ex!.Message, Is.EqualTo(string.Join("; ", problems.List)));
    }

    [Test]
    public void Without_a_name_map_the_keys_are_used_and_no_problem_throws_nothing()
    {
        var problems = new OptionProblems();
        Assert.DoesNotThrow(() => OptionProblems.ThrowIfAny(problems.List));
        problems.Check(ok: false, "seq_len", "must be at least 1");
        Assert.That(problems.List, Is.EqualTo(new[] { "seq_len: must be at least 1" }));
    }
}
