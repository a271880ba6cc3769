using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace ModelSurgery.Inference.Evaluation;

/// <summary>A multiple-choice document in harness form.</summary>
/// <param name="Query">The question as the task's doc_to_text renders it.</param>
/// <param name="Choices">Answers as doc_to_choice renders them (no target delimiter).</param>
/// <param name="Gold">Index of the correct answer.</param>
/// <param name="Description">Text placed once before the few-shot examples (MMLU's subject line), else empty.</param>
/// <param name="Group">Documents only take few-shot examples from their own group (MMLU subject); null for one group.</param>
public sealed record TaskDocument(string Query, IReadOnlyList<string> Choices, int Gold, string Description = "", string? Group = null);

/// <summary>Reads the public JSONL exports of the benchmark datasets and renders them as the harness's task YAMLs do.</summary>
public static partial class TaskReader
{
    private static readonly string[] MmluLetters = ["A", "B", "C", "D"];

    /// <summary>Reads every record of a JSONL file (blank lines are skipped).</summary>
    /// <param name="format">Record layout; not <see cref="TaskFormat.Text"/>.</param>
    /// <param name="path">The JSONL file.</param>
    /// <returns>The documents in file order.</returns>
    /// <exception cref="InvalidDataException">A line is not JSON or lacks a field; the message names file, line and field.</exception>
    public static IReadOnlyList<TaskDocument> Read(TaskFormat format, string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (format == TaskFormat.Text)
        {
            throw new ArgumentException("Text tasks have no multiple-choice documents; use ReadTexts.", nameof(format));
        }

        var docs = new List<TaskDocument>();
        int lineNumber = 0;
        foreach (string line in IO.TextFiles.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }

            var record = new Record(Parse(line, path, lineNumber), path, lineNumber);
            docs.Add(format switch
            {
                TaskFormat.Arc => Arc(record),
                TaskFormat.HellaSwag => HellaSwag(record),
                TaskFormat.Piqa => Piqa(record),
                TaskFormat.BoolQ => BoolQ(record),
                TaskFormat.Mmlu => Mmlu(record),
                TaskFormat.Generic => Generic(record),
                _ => throw new ArgumentException($"Unknown task format {format}.", nameof(format)),
            });
        }

        return docs.Count > 0 ? docs : throw new InvalidDataException($"{path}: holds no documents.");
    }

    /// <summary>Reads the documents of a text task: each "text" field of a .jsonl file, or the whole file.</summary>
    /// <param name="path">The file.</param>
    /// <returns>The documents.</returns>
    public static IReadOnlyList<string> ReadTexts(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase))
        {
            string text = IO.TextFiles.ReadAllText(path);
            return text.Length > 0 ? [text] : throw new InvalidDataException($"{path}: holds no text; bits per byte and perplexity are undefined.");
        }

        var texts = new List<string>();
        int lineNumber = 0;
        foreach (string line in IO.TextFiles.ReadLines(path))
        {
            lineNumber++;
            if (!string.IsNullOrWhiteSpace(line))
            {
                texts.Add(new Record(Parse(line, path, lineNumber), path, lineNumber).String("text"));
            }
        }

        return texts.Any(t => t.Length > 0) ? texts : throw new InvalidDataException($"{path}: holds no text; bits per byte and perplexity are undefined.");
    }

    /// <summary>The harness's HellaSwag text cleanup: strip, " [title]" to ". ", drop [bracketed] tags, collapse double spaces.</summary>
    /// <param name="text">Raw text.</param>
    /// <returns>Cleaned text.</returns>
    public static string PreprocessHellaSwag(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = text.Trim();
        text = text.Replace(" [title]", ". ", StringComparison.Ordinal);
        text = BracketTag().Replace(text, string.Empty);
        return text.Replace("  ", " ", StringComparison.Ordinal);
    }

    /// <summary>Python's str.capitalize: first character upper case, the rest lower case.</summary>
    /// <param name="text">Text.</param>
    /// <returns>Capitalised text.</returns>
    public static string Capitalize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Length == 0 ? text : char.ToUpperInvariant(text[0]) + text[1..].ToLowerInvariant();
    }

    private static TaskDocument Arc(Record r)
    {
        JsonElement choices = r.Object("choices");
        var c = new Record(choices, r.Path, r.Line, "choices.");
        IReadOnlyList<string> texts = c.Strings("text");
        IReadOnlyList<string> labels = c.Strings("label");
        string answerKey = r.String("answerKey");
        int gold = IndexOf(labels, answerKey);
        if (gold < 0 || labels.Count != texts.Count)
        {
            throw r.Error($"answerKey '{answerKey}' is not one of choices.label [{string.Join(", ", labels)}] or labels and texts differ in count");
        }

        return new TaskDocument($"Question: {r.String("question")}\nAnswer:", texts, gold);
    }

    private static TaskDocument HellaSwag(Record r)
    {
        string ctx = r.String("ctx_a") + " " + Capitalize(r.String("ctx_b"));
        string query = PreprocessHellaSwag(r.String("activity_label") + ": " + ctx);
        IReadOnlyList<string> endings = [.. r.Strings("endings").Select(PreprocessHellaSwag)];
        return new TaskDocument(query, endings, r.Index("label", endings.Count));
    }

    private static TaskDocument Piqa(Record r) =>
        new($"Question: {r.String("goal")}\nAnswer:", [r.String("sol1"), r.String("sol2")], r.Index("label", 2));

    private static TaskDocument BoolQ(Record r)
    {
        int gold = r.Has("label") ? r.Index("label", 2) : (r.Bool("answer") ? 1 : 0);
        return new TaskDocument($"{r.String("passage")}\nQuestion: {r.String("question")}?\nAnswer:", ["no", "yes"], gold);
    }

    private static TaskDocument Mmlu(Record r)
    {
        IReadOnlyList<string> options = r.Strings("choices");
        if (options.Count != 4)
        {
            throw r.Error($"field 'choices' has {options.Count} entries; MMLU needs 4");
        }

        string subject = r.String("subject");
        var query = new StringBuilder(r.String("question").Trim());
        for (int i = 0; i < 4; i++)
        {
            query.Append('\n').Append(MmluLetters[i]).Append(". ").Append(options[i]);
        }

        query.Append("\nAnswer:");
        string description = $"The following are multiple choice questions (with answers) about {subject.Replace('_', ' ')}.\n\n";
        return new TaskDocument(query.ToString(), MmluLetters, r.Index("answer", 4), description, subject);
    }

    private static TaskDocument Generic(Record r)
    {
        IReadOnlyList<string> choices = r.Strings("choices");
        return new TaskDocument(r.String("context"), choices, r.Index("answer", choices.Count));
    }

    private static int IndexOf(IReadOnlyList<string> values, string value)
    {
        for (int i = 0; i < values.Count; i++)
        {
            if (values[i] == value)
            {
                return i;
            }
        }

        return -1;
    }

    private static JsonElement Parse(string line, string path, int lineNumber)
    {
        try
        {
            using var document = JsonDocument.Parse(line);
            JsonElement root = document.RootElement.Clone();
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"{path}, line {lineNumber}: expected a JSON object but found {root.ValueKind}.");
            }

            return root;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}, line {lineNumber}: not valid JSON ({e.Message}).", e);
        }
    }

    [GeneratedRegex(@"\[.*?\]")]
    private static partial Regex BracketTag();

    /// <summary>Typed field access whose errors name file, line and field.</summary>
    private sealed record Record(JsonElement Json, string Path, int Line, string Prefix = "")
    {
        public InvalidDataException Error(string what) => new($"{Path}, line {Line}: {what}.");

        public bool Has(string field) => Json.TryGetProperty(field, out JsonElement v) && v.ValueKind != JsonValueKind.Null;

        public JsonElement Get(string field) =>
            Json.TryGetProperty(field, out JsonElement v) && v.ValueKind != JsonValueKind.Null
                ? v
                : throw Error($"missing field '{Prefix}{field}'");

        public string String(string field)
        {
            JsonElement v = Get(field);
            return v.ValueKind == JsonValueKind.String ? v.GetString()! : throw Error($"field '{Prefix}{field}' must be a string but is {v.ValueKind}");
        }

        public JsonElement Object(string field)
        {
            JsonElement v = Get(field);
            return v.ValueKind == JsonValueKind.Object ? v : throw Error($"field '{Prefix}{field}' must be an object but is {v.ValueKind}");
        }

        public IReadOnlyList<string> Strings(string field)
        {
            JsonElement v = Get(field);
            if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() == 0 || v.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
            {
                throw Error($"field '{Prefix}{field}' must be a non-empty array of strings");
            }

            return [.. v.EnumerateArray().Select(e => e.GetString()!)];
        }

        public bool Bool(string field)
        {
            JsonElement v = Get(field);
            return v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw Error($"field '{Prefix}{field}' must be true or false but is {v.ValueKind}"),
            };
        }

        /// <summary>An answer index given as a number or a digit string (HellaSwag's "label": "2").</summary>
        public int Index(string field, int count)
        {
            JsonElement v = Get(field);
            int index = v.ValueKind switch
            {
                JsonValueKind.Number when v.TryGetInt32(out int n) => n,
                JsonValueKind.String when int.TryParse(v.GetString(), NumberStyles.None, CultureInfo.InvariantCulture, out int n) => n,
                _ => throw Error($"field '{Prefix}{field}' must be an answer index but is {v}"),
            };
            return index >= 0 && index < count ? index : throw Error($"field '{Prefix}{field}' is {index}, outside the {count} choices");
        }
    }
}
