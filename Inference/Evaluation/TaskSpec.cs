namespace ModelSurgery.Inference.Evaluation;

/// <summary>The record layout of a task's JSONL file, which fixes its prompt format and metrics.</summary>
public enum TaskFormat
{
    /// <summary>ARC-Easy / ARC-Challenge: question, choices.text, choices.label, answerKey.</summary>
    Arc,

    /// <summary>HellaSwag: activity_label, ctx_a, ctx_b, endings, label.</summary>
    HellaSwag,

    /// <summary>PIQA: goal, sol1, sol2, label.</summary>
    Piqa,

    /// <summary>BoolQ: passage, question, and label (SuperGLUE, 0/1) or answer (original, true/false).</summary>
    BoolQ,

    /// <summary>MMLU: question, subject, choices (4), answer (index).</summary>
    Mmlu,

    /// <summary>User-written multiple choice: context, choices, answer (index).</summary>
    Generic,

    /// <summary>Plain text for bits per byte: a .jsonl file of {"text": ...} documents, or any other file as one document.</summary>
    Text,
}

/// <summary>One task to evaluate, read from local files.</summary>
/// <param name="Name">Name in reports (the harness's task names: arc_easy, hellaswag, ...).</param>
/// <param name="Format">Record layout of the file.</param>
/// <param name="DataPath">The evaluated documents (JSONL, or text for <see cref="TaskFormat.Text"/>).</param>
public sealed record TaskSpec(string Name, TaskFormat Format, string DataPath)
{
    /// <summary>Where few-shot examples come from (e.g. the train or dev split); null: the evaluated file itself, never using a document as its own example.</summary>
    public string? FewShotPath { get; init; }

    /// <summary>Few-shot examples for this task; null: <see cref="EvaluationOptions.FewShot"/>.</summary>
    public int? FewShot { get; init; }

    /// <summary>
    /// Whether each document draws k + 1 examples from a separate <see cref="FewShotPath"/> and keeps the first k that
    /// are not the document, as the harness does when a task's fewshot_split equals its test_split: both are unset for
    /// hellaswag, piqa and boolq, whose examples come from train, so the extra draw advances the shared generator there.
    /// Null: the harness's setting for the format (true for HellaSwag, PIQA and BoolQ). Examples taken from the
    /// evaluated file always draw k + 1.
    /// </summary>
    public bool? FewShotDrawsExtra { get; init; }

    /// <summary><see cref="FewShotDrawsExtra"/> with the format's default applied.</summary>
    public bool DrawsExtraFewShot => FewShotDrawsExtra ?? Format is TaskFormat.HellaSwag or TaskFormat.Piqa or TaskFormat.BoolQ;

    /// <summary>The metrics the harness reports for this task.</summary>
    public IReadOnlyList<string> Metrics => Format switch
    {
        TaskFormat.BoolQ or TaskFormat.Mmlu => [MetricNames.Accuracy],
        TaskFormat.Text => [MetricNames.BitsPerByte, MetricNames.TokenPerplexity],
        _ => [MetricNames.Accuracy, MetricNames.NormalizedAccuracy],
    };

    /// <summary>ARC-Easy (harness task arc_easy).</summary>
    /// <param name="path">JSONL file.</param>
    /// <returns>The spec.</returns>
    public static TaskSpec ArcEasy(string path) => new("arc_easy", TaskFormat.Arc, path);

    /// <summary>ARC-Challenge (harness task arc_challenge).</summary>
    /// <param name="path">JSONL file.</param>
    /// <returns>The spec.</returns>
    public static TaskSpec ArcChallenge(string path) => new("arc_challenge", TaskFormat.Arc, path);

    /// <summary>HellaSwag (harness task hellaswag).</summary>
    /// <param name="path">JSONL file.</param>
    /// <returns>The spec.</returns>
    public static TaskSpec HellaSwag(string path) => new("hellaswag", TaskFormat.HellaSwag, path);

    /// <summary>PIQA (harness task piqa).</summary>
    /// <param name="path">JSONL file.</param>
    /// <returns>The spec.</returns>
    public static TaskSpec Piqa(string path) => new("piqa", TaskFormat.Piqa, path);

    /// <summary>BoolQ (harness task boolq).</summary>
    /// <param name="path">JSONL file.</param>
    /// <returns>The spec.</returns>
    public static TaskSpec BoolQ(string path) => new("boolq", TaskFormat.BoolQ, path);

    /// <summary>MMLU, all subjects in one file (harness group mmlu); few-shot examples from a dev file are the first k of the same subject.</summary>
    /// <param name="path">JSONL file.</param>
    /// <returns>The spec.</returns>
    public static TaskSpec Mmlu(string path) => new("mmlu", TaskFormat.Mmlu, path);

    /// <summary>
    /// The task a harness name stands for (arc_easy, arc_challenge, hellaswag, piqa, boolq, mmlu; hyphens accepted for
    /// underscores, case ignored), or null for any other name.
    /// </summary>
    /// <param name="name">Task name.</param>
    /// <param name="path">JSONL file.</param>
    public static TaskSpec? ForHarnessTask(string name, string path)
    {
        ArgumentNullException.ThrowIfNull(name);
        return name.Replace('-', '_').ToUpperInvariant() switch
        {
            "ARC_EASY" => ArcEasy(path),
            "ARC_CHALLENGE" => ArcChallenge(path),
            "HELLASWAG" => HellaSwag(path),
            "PIQA" => Piqa(path),
            "BOOLQ" => BoolQ(path),
            "MMLU" => Mmlu(path),
            _ => null,
        };
    }

    /// <summary>Bits per byte on a text file.</summary>
    /// <param name="name">Name in reports.</param>
    /// <param name="path">Text file, or JSONL of {"text": ...}.</param>
    /// <returns>The spec.</returns>
    public static TaskSpec Text(string name, string path) => new(name, TaskFormat.Text, path);
}
