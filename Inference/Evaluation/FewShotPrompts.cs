namespace ModelSurgery.Inference.Evaluation;

/// <summary>Builds prompts the way the harness's <c>fewshot_context</c> does: description + examples + question.</summary>
public static class FewShotPrompts
{
    /// <summary>
    /// Renders one prompt: <c>description + (example.Query + targetDelimiter + example answer + fewShotDelimiter)* + doc.Query</c>.
    /// </summary>
    /// <param name="doc">The evaluated document (its description is used).</param>
    /// <param name="examples">Few-shot examples, in order.</param>
    /// <param name="targetDelimiter">Between a question and its answer (" ").</param>
    /// <param name="fewShotDelimiter">After each example ("\n\n").</param>
    /// <returns>The prompt.</returns>
    public static string Render(TaskDocument doc, IReadOnlyList<TaskDocument> examples, string targetDelimiter = " ", string fewShotDelimiter = "\n\n")
    {
        ArgumentNullException.ThrowIfNull(doc);
        ArgumentNullException.ThrowIfNull(examples);
        return doc.Description
            + string.Concat(examples.Select(e => e.Query + targetDelimiter + e.Choices[e.Gold] + fewShotDelimiter))
            + doc.Query;
    }

    /// <summary>
    /// Builds every document's prompt with <paramref name="k"/> examples. Examples come from <paramref name="pool"/> of the
    /// same <see cref="TaskDocument.Group"/>; when the pool is the evaluated list itself (<paramref name="poolIsDocs"/>) a
    /// document is never its own example. <paramref name="firstN"/> takes the first k candidates (the harness's first_n
    /// sampler, used by MMLU's dev split); otherwise k are drawn without replacement by a generator seeded once per task.
    /// </summary>
    /// <param name="docs">Evaluated documents.</param>
    /// <param name="pool">Example candidates.</param>
    /// <param name="poolIsDocs">Whether <paramref name="pool"/> is the evaluated list (indices coincide).</param>
    /// <param name="k">Examples per prompt.</param>
    /// <param name="seed">Sampler seed.</param>
    /// <param name="firstN">Take the first k candidates instead of sampling.</param>
    /// <param name="targetDelimiter">Between a question and its answer.</param>
    /// <param name="fewShotDelimiter">After each example.</param>
    /// <returns>One prompt per document.</returns>
    public static IReadOnlyList<string> Build(
        IReadOnlyList<TaskDocument> docs, IReadOnlyList<TaskDocument> pool, bool poolIsDocs, int k, int seed, bool firstN,
        string targetDelimiter = " ", string fewShotDelimiter = "\n\n")
    {
        ArgumentNullException.ThrowIfNull(docs);
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        var groups = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        for (int i = 0; i < pool.Count; i++)
        {
            string key = pool[i].Group ?? string.Empty;
            if (!groups.TryGetValue(key, out List<int>? members))
            {
                groups[key] = members = [];
            }

            members.Add(i);
        }

        var random = new Random(seed);
        var prompts = new string[docs.Count];
        for (int d = 0; d < docs.Count; d++)
        {
            TaskDocument doc = docs[d];
            IReadOnlyList<TaskDocument> examples = [];
            if (k > 0)
            {
                List<int> candidates = groups.GetValueOrDefault(doc.Group ?? string.Empty) ?? [];
                int self = poolIsDocs ? d : -1;
                int available = candidates.Count - (poolIsDocs ? 1 : 0); // a document is in its own group's candidates
                if (available < k)
                {
                    throw new ArgumentException(
                        $"Document {d}{(doc.Group is null ? string.Empty : $" (group '{doc.Group}')")} needs {k} few-shot examples but only {available} are available.", nameof(k));
                }

                examples = [.. (firstN ? candidates.Where(i => i != self).Take(k) : Sample(candidates, self, k, random)).Select(i => pool[i])];
            }

            prompts[d] = Render(doc, examples, targetDelimiter, fewShotDelimiter);
        }

        return prompts;
    }

    private static List<int> Sample(List<int> candidates, int self, int k, Random random)
    {
        var picked = new List<int>(k);
        var seen = new HashSet<int>();
        while (picked.Count < k)
        {
            int i = candidates[random.Next(candidates.Count)];
            if (i != self && seen.Add(i))
            {
                picked.Add(i);
            }
        }

        return picked;
    }
}
