using System.Globalization;
using System.Text;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;

namespace ModelSurgery.Training.Recipes;

/// <summary>
/// What a recipe would do, without running it: the recipe as resolved (defaults filled in, overrides applied) and an
/// estimate of the student it plans, made from the teacher's config alone.
/// </summary>
public static class RecipeDryRun
{
    /// <summary>The resolved recipe as JSON, then the plan estimate, as text for a console.</summary>
    /// <remarks>
    /// The shape and parameter count do not depend on the scores (widths are uniform), so the estimate plans with the
    /// position prior; which layers, heads and neurons are kept is decided by the scores when the recipe runs. A
    /// <c>vocabulary.keep</c> sets the student's vocabulary; with <c>vocabulary.coverage</c> its size is only known once
    /// the corpus is counted, so the estimate keeps the teacher's.
    /// </remarks>
    public static string Describe(DistillationRecipe recipe)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        var text = new StringBuilder();
        text.AppendLine("resolved recipe:").AppendLine(recipe.ToJson()).AppendLine();

        string teacherDirectory = recipe.Resolve(recipe.Teacher);
        string configPath = Path.Combine(teacherDirectory, "config.json");
        if (!File.Exists(configPath))
        {
            return text.AppendLine(CultureInfo.InvariantCulture, $"plan estimate: none, {configPath} does not exist.").ToString();
        }

        LlamaConfig teacher = LlamaConfig.Load(configPath);
        string vocabulary = "the teacher's vocabulary";
        if (recipe.Vocabulary is { Keep: int keep } v)
        {
            int padded = (keep + v.PadToMultiple - 1) / v.PadToMultiple * v.PadToMultiple;
            teacher = teacher with { VocabSize = Math.Min(teacher.VocabSize, padded) };
            vocabulary = $"the vocabulary compressed to about {teacher.VocabSize:N0} tokens";
        }
        else if (recipe.Vocabulary is { Coverage: double coverage })
        {
            vocabulary = $"the teacher's vocabulary (compression to {coverage:P1} coverage sizes it when the corpus is counted)";
        }

        text.AppendLine(CultureInfo.InvariantCulture, $"plan estimate (from {configPath}, with {vocabulary}; the scores choose which units are kept):");
        try
        {
            SurgeryPlan plan = (recipe.Plan with { LayerSelection = LayerSelection.PositionPrior })
                .Build(teacher, FlatScores(teacher), DistillationRecipe.PlanFieldName);
            text.AppendLine(plan.Summary().TrimEnd());
        }
        catch (ArgumentException ex)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"the plan cannot be made: {ex.Message}");
        }

        DistillationOptions d = recipe.Distillation;
        long steps = d.TotalSteps();
        string accumulated = d.GradAccum == 1 ? string.Empty : string.Create(CultureInfo.InvariantCulture, $" x {d.GradAccum} accumulated");
        text.AppendLine(CultureInfo.InvariantCulture,
            $"distillation: {steps:N0} steps x {d.BatchSize} windows x {d.SeqLen} tokens{accumulated} = {steps * d.BatchSize * d.SeqLen * d.GradAccum:N0} tokens, {OptionNames.Name(d.KdLoss)} at temperature {d.Temperature}, alpha {d.Alpha}, device {d.Device}");
        text.AppendLine(CultureInfo.InvariantCulture, $"steps: {string.Join(", ", RecipeRunner.StepNames.Where(step => Runs(recipe, step)))}");
        return text.ToString();
    }

    /// <summary>Equal scores for every unit: the plan then has the shape and size the recipe asks for.</summary>
    private static ImportanceScores FlatScores(LlamaConfig teacher) => new()
    {
        Metric = "flat",
        Source = "dry run",
        Layers = new double[teacher.NumHiddenLayers],
        Heads = ScoreMatrix.Create(teacher.NumHiddenLayers, teacher.NumAttentionHeads, (_, _) => 0),
        KvGroups = ScoreMatrix.Create(teacher.NumHiddenLayers, teacher.NumKeyValueHeads, (_, _) => 0),
        Neurons = ScoreMatrix.Create(teacher.NumHiddenLayers, teacher.IntermediateSize, (_, _) => 0),
        HiddenChannels = new double[teacher.HiddenSize],
        Tokens = new double[teacher.VocabSize],
    };

    private static bool Runs(DistillationRecipe recipe, string step) => step switch
    {
        "vocabulary" => recipe.Vocabulary is not null,
        "evaluation" => recipe.Evaluation is not null,
        "export_job" => recipe.ExportJob is not null,
        _ => true,
    };
}
