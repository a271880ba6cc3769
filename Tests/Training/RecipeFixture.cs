using System.Text.Json;
using System.Text.Json.Nodes;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Tests.Vocabulary;

namespace ModelSurgery.Tests.Training;

/// <summary>A tiny teacher with a byte-level BPE tokenizer, a corpus, an evaluation text and a recipe over them.</summary>
internal static class RecipeFixture
{
    public const string RecipeFileName = "tiny.recipe.json";

    /// <summary>The recipe: every step, sized to run in a few seconds on CPU.</summary>
    public static JsonObject Recipe() => new()
    {
        ["teacher"] = "teacher",
        ["data"] = new JsonObject { ["corpus"] = new JsonArray("corpus.jsonl"), ["validation_fraction"] = 0.2 },
        ["vocabulary"] = new JsonObject { ["coverage"] = 0.95 },
        ["scoring"] = new JsonObject
        {
            ["metrics"] = new JsonArray("activation", "block-influence"),
            ["calibration_sequences"] = 4,
            ["calibration_length"] = 16,
            ["batch_size"] = 2,
        },
        ["plan"] = new JsonObject { ["layers"] = 1, ["kv_groups"] = 1, ["heads_per_group"] = 2, ["neuron_fraction"] = 0.5, ["round_to"] = 8 },
        ["distillation"] = new JsonObject
        {
            ["steps"] = 6,
            ["batch_size"] = 2,
            ["seq_len"] = 16,
            ["learning_rate"] = 0.003,
            ["checkpoint_every"] = 2,
            ["eval_every"] = 3,
            ["device"] = "cpu",
        },
        ["evaluation"] = new JsonObject { ["text"] = new JsonArray("eval.jsonl"), ["batch_size"] = 4 },
        ["export_job"] = new JsonObject { ["nodes"] = 1, ["gpus_per_node"] = 2, ["tokens"] = 100_000 },
    };

    /// <summary>Writes the teacher, corpus, evaluation text and <paramref name="recipe"/> into <paramref name="directory"/>; returns the recipe path.</summary>
    public static async Task<string> CreateAsync(string directory, JsonObject? recipe = null)
    {
        using (LlamaForCausalLM teacher = await TinyTokenizedModel.SaveAsync(Path.Combine(directory, "teacher")))
        {
        }

        TinyTokenizedModel.WriteCorpus(directory);
        File.WriteAllLines(Path.Combine(directory, "eval.jsonl"), VocabularyTestText.Documents().Take(3).Select(d => JsonSerializer.Serialize(new Dictionary<string, string> { ["text"] = d })));
        return WriteRecipe(directory, recipe ?? Recipe());
    }

    public static string WriteRecipe(string directory, JsonObject recipe)
    {
        string path = Path.Combine(directory, RecipeFileName);
        File.WriteAllText(path, recipe.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return path;
    }
}
