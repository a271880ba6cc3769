namespace ModelSurgery.Reproduction;

/// <summary>One ablation's part of the report.</summary>
/// <param name="Ablation">Which one.</param>
/// <param name="Title">Section title.</param>
/// <param name="PaperClaim">What the paper reports (its metric, its numbers).</param>
/// <param name="PaperTable">The paper's numbers as a Markdown table, or empty when it gives none.</param>
/// <param name="Setup">What we ran: shapes, parameter counts, tokens, seeds.</param>
/// <param name="Header">Column names of our table.</param>
/// <param name="Rows">Our table's rows.</param>
/// <param name="Charts">PNG file names (in the output folder).</param>
/// <param name="Verdicts">One verdict per claim tested.</param>
/// <param name="Notes">Caveats and how to read the numbers.</param>
/// <param name="Runs">Every run behind the table (for report.json).</param>
/// <param name="Numbers">Further named numbers (for report.json), e.g. the crossing point.</param>
public sealed record AblationSection(
    Ablation Ablation,
    string Title,
    string PaperClaim,
    string PaperTable,
    string Setup,
    IReadOnlyList<string> Header,
    IReadOnlyList<IReadOnlyList<string>> Rows,
    IReadOnlyList<string> Charts,
    IReadOnlyList<Verdict> Verdicts,
    string Notes,
    IReadOnlyList<ModelRun> Runs,
    IReadOnlyDictionary<string, double?> Numbers)
{
    /// <summary>The outcome of the section's primary claim (its first verdict); the others are secondary.</summary>
    public Outcome Overall => Verdicts.Count > 0 ? Verdicts[0].Outcome : Outcome.Inconclusive;
}
