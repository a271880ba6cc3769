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
    /// Builds every document's prompt with <paramref name="k"/> examples chosen by <see cref="SelectExamples"/>, so that the
    /// examples, their order and the prompt equal lm-evaluation-harness's for the same seed.
    /// </summary>
    /// <param name="docs">Evaluated documents, in evaluation order.</param>
    /// <param name="pool">Example candidates.</param>
    /// <param name="poolIsDocs">Whether <paramref name="pool"/> is the evaluated list (indices coincide).</param>
    /// <param name="k">Examples per prompt.</param>
    /// <param name="seed">Sampler seed (the harness's fewshot_random_seed, 1234 by default).</param>
    /// <param name="firstN">Take the first candidates instead of sampling (the harness's first_n sampler).</param>
    /// <param name="targetDelimiter">Between a question and its answer.</param>
    /// <param name="fewShotDelimiter">After each example.</param>
    /// <param name="drawExtra">Draw k + 1 even from a separate pool (see <see cref="TaskSpec.FewShotDrawsExtra"/>).</param>
    /// <returns>One prompt per document.</returns>
    public static IReadOnlyList<string> Build(
        IReadOnlyList<TaskDocument> docs, IReadOnlyList<TaskDocument> pool, bool poolIsDocs, int k, int seed, bool firstN,
        string targetDelimiter = " ", string fewShotDelimiter = "\n\n", bool drawExtra = false)
    {
        IReadOnlyList<IReadOnlyList<int>> chosen = SelectExamples(docs, pool, poolIsDocs, k, seed, firstN, drawExtra);
        return [.. docs.Select((doc, d) => Render(doc, [.. chosen[d].Select(i => pool[i])], targetDelimiter, fewShotDelimiter))];
    }

    /// <summary>
    /// The few-shot examples of every document as <paramref name="pool"/> indices, chosen as the harness's
    /// <c>ContextSampler.get_context</c> chooses them. Candidates are the pool documents of the document's
    /// <see cref="TaskDocument.Group"/> (a harness subtask, e.g. an MMLU subject), in pool order. Each group has one
    /// generator, Python's <c>random.Random(seed)</c>, shared by its documents in evaluation order. For each document it
    /// draws n = k, or k + 1 when the pool is the evaluated list or <paramref name="drawExtra"/> is set (the harness's
    /// fewshot_split == test_split), with <c>rnd.sample(candidates, n)</c> (or the first n with
    /// <paramref name="firstN"/>), drops the document itself and any candidate equal to it, and keeps the first k.
    /// </summary>
    /// <param name="docs">Evaluated documents, in evaluation order.</param>
    /// <param name="pool">Example candidates.</param>
    /// <param name="poolIsDocs">Whether <paramref name="pool"/> is the evaluated list (indices coincide).</param>
    /// <param name="k">Examples per prompt.</param>
    /// <param name="seed">Sampler seed.</param>
    /// <param name="firstN">Take the first candidates instead of sampling.</param>
    /// <param name="drawExtra">Draw k + 1 even from a separate pool.</param>
    /// <returns>Per document, the pool indices of its examples in prompt order.</returns>
    /// <exception cref="ArgumentException">A group has fewer candidates than a document needs to draw.</exception>
    public static IReadOnlyList<IReadOnlyList<int>> SelectExamples(
        IReadOnlyList<TaskDocument> docs, IReadOnlyList<TaskDocument> pool, bool poolIsDocs, int k, int seed, bool firstN, bool drawExtra = false)
    {
        ArgumentNullException.ThrowIfNull(docs);
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        var chosen = new IReadOnlyList<int>[docs.Count];
        if (k == 0)
        {
            Array.Fill(chosen, []);
            return chosen;
        }

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

        int draws = poolIsDocs || drawExtra ? k + 1 : k;
        var generators = new Dictionary<string, PythonRandom>(StringComparer.Ordinal);
        for (int d = 0; d < docs.Count; d++)
        {
            TaskDocument doc = docs[d];
            string key = doc.Group ?? string.Empty;
            List<int> candidates = groups.GetValueOrDefault(key) ?? [];
            if (candidates.Count < draws)
            {
                int available = candidates.Count - (draws - k);
                throw new ArgumentException(
                    $"Document {d}{(doc.Group is null ? string.Empty : $" (group '{doc.Group}')")} needs {k} few-shot examples but only {Math.Max(available, 0)} are available.", nameof(k));
            }

            IEnumerable<int> drawn;
            if (firstN)
            {
                drawn = candidates.Take(draws);
            }
            else
            {
                // One generator per group, as each harness subtask has its own sampler seeded with the same seed.
                if (!generators.TryGetValue(key, out PythonRandom? random))
                {
                    generators[key] = random = new PythonRandom(seed);
                }

                drawn = random.Sample(candidates, draws);
            }

            // The harness drops fewshot docs equal to the evaluated one (x != doc); here: itself or an identical rendering.
            chosen[d] = [.. drawn.Where(i => !(poolIsDocs && i == d) && !SameContent(pool[i], doc)).Take(k)];
        }

        return chosen;
    }

    private static bool SameContent(TaskDocument a, TaskDocument b) =>
        ReferenceEquals(a, b)
        || (a.Query == b.Query && a.Gold == b.Gold && a.Description == b.Description && a.Group == b.Group && a.Choices.SequenceEqual(b.Choices));
}
