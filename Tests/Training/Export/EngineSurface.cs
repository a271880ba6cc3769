using System.Text.Json;
using System.Text.RegularExpressions;

namespace ModelSurgery.Tests.Training.Export;

/// <summary>
/// The names an exported hf-accelerate job may use, as extracted from the engine's source at the pinned release
/// (hf-accelerate-surface.json, made by extract_hf_accelerate_surface.py), and the checks that find the names a
/// written job uses in its YAML and Python. The Python is parsed with patterns that fit the job's own scripts.
/// </summary>
internal sealed partial class EngineSurface
{
    private readonly JsonElement _root;

    private EngineSurface(JsonElement root) => _root = root;

    public static EngineSurface Load()
    {
        string path = Path.Combine(TestContext.CurrentContext.TestDirectory, "Training", "Export", "hf-accelerate-surface.json");
        using JsonDocument document = JsonDocument.Parse(File.ReadAllText(path));
        return new EngineSurface(document.RootElement.Clone());
    }

    public JsonElement Root => _root;

    public IReadOnlySet<string> Set(params string[] path)
    {
        JsonElement e = _root;
        foreach (string p in path)
        {
            e = e.GetProperty(p);
        }

        return e.EnumerateArray().Select(x => x.GetString()!).ToHashSet(StringComparer.Ordinal);
    }

    public IReadOnlyDictionary<string, IReadOnlySet<string>> AcceleratorMembers =>
        _root.GetProperty("accelerator_members").EnumerateObject().ToDictionary(
            p => p.Name, p => (IReadOnlySet<string>)p.Value.EnumerateArray().Select(x => x.GetString()!).ToHashSet(StringComparer.Ordinal), StringComparer.Ordinal);

    /// <summary>Every use of the engine's API in <paramref name="python"/> that the pinned release does not have, as readable lines.</summary>
    public IReadOnlyList<string> UnknownPythonNames(string python)
    {
        var problems = new List<string>();
        var exports = new Dictionary<string, IReadOnlySet<string>>(StringComparer.Ordinal)
        {
            ["accelerate"] = Set("accelerate_exports"),
            ["accelerate.utils"] = Set("accelerate_utils_exports"),
            ["transformers"] = Set("transformers", "exports"),
        };
        foreach (Match m in FromImport().Matches(python))
        {
            string module = m.Groups[1].Value;
            if (module.StartsWith("accelerate", StringComparison.Ordinal) || module.StartsWith("transformers", StringComparison.Ordinal))
            {
                if (!exports.TryGetValue(module, out IReadOnlySet<string>? names))
                {
                    problems.Add($"module {module} is not checked against the engine");
                    continue;
                }

                foreach (string name in m.Groups[2].Value.Split(',').Select(n => n.Trim().Split(" as ")[0]))
                {
                    if (!names.Contains(name))
                    {
                        problems.Add($"from {module} import {name}");
                    }
                }
            }
        }

        IReadOnlyDictionary<string, IReadOnlySet<string>> members = AcceleratorMembers;
        foreach (Match m in AcceleratorMember().Matches(python))
        {
            string member = m.Groups[1].Value;
            if (!members.TryGetValue(member, out IReadOnlySet<string>? parameters))
            {
                problems.Add($"accelerator.{member}");
                continue;
            }

            if (python.Length > m.Index + m.Length && python[m.Index + m.Length] == '(')
            {
                foreach (string keyword in Keywords(python, m.Index + m.Length))
                {
                    if (!parameters.Contains(keyword) && !parameters.Any(p => p.StartsWith("**", StringComparison.Ordinal)))
                    {
                        problems.Add($"accelerator.{member}({keyword}=...)");
                    }
                }
            }
        }

        IReadOnlySet<string> load = Set("transformers", "from_pretrained_keywords");
        foreach (Match m in FromPretrained().Matches(python))
        {
            // The first argument is the folder; every keyword must be one the pinned Transformers reads.
            problems.AddRange(Keywords(python, m.Index + m.Length - 1).Where(k => !load.Contains(k)).Select(k => $"from_pretrained({k}=...)"));
        }

        IReadOnlySet<string> forward = Set("transformers", "forward_keywords");
        IReadOnlySet<string> outputs = Set("transformers", "output_attributes");
        foreach (Match m in ModelCall().Matches(python))
        {
            int open = m.Index + m.Length - 1;
            problems.AddRange(Keywords(python, open).Where(k => !forward.Contains(k)).Select(k => $"{m.Groups[1].Value}({k}=...)"));
            int close = Close(python, open);
            Match attribute = Attribute().Match(python, close + 1);
            if (attribute.Success && attribute.Index == close + 1 && !outputs.Contains(attribute.Groups[1].Value))
            {
                problems.Add($"{m.Groups[1].Value}(...).{attribute.Groups[1].Value}");
            }
        }

        return problems;
    }

    /// <summary>The keyword names of the call whose '(' is at <paramref name="open"/>.</summary>
    public static IReadOnlyList<string> Keywords(string text, int open)
    {
        int close = Close(text, open);
        var keywords = new List<string>();
        int depth = 0;
        int start = open + 1;
        for (int i = open + 1; i <= close; i++)
        {
            char c = text[i];
            if (c is '(' or '[' or '{')
            {
                depth++;
            }
            else if (c is ')' or ']' or '}')
            {
                depth--;
            }

            if ((c == ',' && depth == 0) || i == close)
            {
                Match k = KeywordArgument().Match(text[start..i]);
                if (k.Success)
                {
                    keywords.Add(k.Groups[1].Value);
                }

                start = i + 1;
            }
        }

        return keywords;
    }

    private static int Close(string text, int open)
    {
        int depth = 0;
        for (int i = open; i < text.Length; i++)
        {
            if (text[i] == '(')
            {
                depth++;
            }
            else if (text[i] == ')' && --depth == 0)
            {
                return i;
            }
        }

        throw new FormatException($"unbalanced parenthesis at {open}");
    }

    [GeneratedRegex(@"^from ([\w.]+) import (.+)$", RegexOptions.Multiline)]
    private static partial Regex FromImport();

    [GeneratedRegex(@"\baccelerator\.(\w+)")]
    private static partial Regex AcceleratorMember();

    [GeneratedRegex(@"\bAutoModelForCausalLM\.from_pretrained\(")]
    private static partial Regex FromPretrained();

    [GeneratedRegex(@"(?<![\w.])(model|teacher)\(")]
    private static partial Regex ModelCall();

    [GeneratedRegex(@"\.(\w+)")]
    private static partial Regex Attribute();

    [GeneratedRegex(@"^\s*(\w+)\s*=(?!=)", RegexOptions.Singleline)]
    private static partial Regex KeywordArgument();
}
