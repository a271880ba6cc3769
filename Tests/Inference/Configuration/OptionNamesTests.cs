using System.Text.Json;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Training;
using ModelSurgery.Training.Distillation;

namespace ModelSurgery.Tests.Configuration;

public sealed class OptionNamesTests
{
    private static readonly JsonSerializerOptions Json = new() { Converters = { new OptionNames.JsonConverter() } };

    [Test]
    public void Every_choice_has_one_spelling_shared_by_the_command_line_and_json()
    {
        Assert.Multiple(() =>
        {
            Assert.That(OptionNames.Names<LayerSelection>(), Is.EqualTo(new[] { "position-prior", "top-scores" }));
            Assert.That(OptionNames.Names<GqaHeadMode>(), Is.EqualTo(new[] { "whole-kv-groups", "same-query-heads-per-group" }));
            Assert.That(OptionNames.Names<DistillationDivergence>(), Is.EqualTo(new[] { "kl", "rkl", "jsd" }));
            Assert.That(OptionNames.Names<TrainingPrecision>(), Is.EqualTo(new[] { "fp32", "bf16" }));
        });
    }

    [TestCase(LayerSelection.TopScores)]
    [TestCase(LayerSelection.PositionPrior)]
    public void Names_parse_back_and_round_trip_through_json(LayerSelection value)
    {
        string name = OptionNames.Name(value);
        Assert.That(OptionNames.Parse<LayerSelection>(name.ToUpperInvariant(), "--layer-selection"), Is.EqualTo(value), "case-insensitive");
        string json = JsonSerializer.Serialize(value, Json);
        Assert.That(json, Is.EqualTo($"\"{name}\""));
        Assert.That(JsonSerializer.Deserialize<LayerSelection>(json, Json), Is.EqualTo(value));
    }

    [Test]
    public void An_unknown_name_is_an_error_that_names_the_field_and_lists_the_choices()
    {
        var ex = Assert.Throws<FormatException>(() => OptionNames.Parse<DistillationDivergence>("kx", "--kd-loss"));
        Assert.That(ex!.Message, Is.EqualTo("--kd-loss: 'kx' is not one of kl, rkl, jsd."));

        var json = Assert.Throws<JsonException>(() => JsonSerializer.Deserialize<DistillationDivergence>("\"ForwardKl\"", Json));
        Assert.That(json!.Message, Does.StartWith("'ForwardKl' is not one of kl, rkl, jsd."), "the .NET member name is not a spelling users type");
        Assert.Throws<JsonException>(() => JsonSerializer.Deserialize<DistillationDivergence>("0", Json), "numbers are not names");
    }
}
