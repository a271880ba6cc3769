namespace ModelSurgery.Inference.Configuration;

/// <summary>
/// Collects what is wrong with an options record, each problem starting with the caller's name for the key at fault
/// (a command-line option, a recipe field, a property), so every stage validates and reports the same way.
/// </summary>
public sealed class OptionProblems
{
    private readonly Func<string, string> _name;
    private readonly List<string> _problems = [];

    /// <summary>Starts an empty list.</summary>
    /// <param name="name">Maps a key to the caller's name for it; null uses the keys.</param>
    public OptionProblems(Func<string, string>? name = null) => _name = name ?? (key => key);

    /// <summary>The problems found so far.</summary>
    public IReadOnlyList<string> List => _problems;

    /// <summary>The caller's name for <paramref name="key"/>, for messages that mention another option.</summary>
    public string Name(string key) => _name(key);

    /// <summary>Adds <paramref name="problem"/> under <paramref name="key"/> unless <paramref name="ok"/>.</summary>
    public void Check(bool ok, string key, string problem)
    {
        if (!ok)
        {
            Add(key, problem);
        }
    }

    /// <summary>Adds a problem of two options that exclude each other, when both are given.</summary>
    public void Exclusive(bool givenA, string keyA, bool givenB, string keyB) =>
        Check(!(givenA && givenB), keyA, $"give {Name(keyA)} or {Name(keyB)}, not both");

    /// <summary>Adds <paramref name="problem"/> under <paramref name="key"/>.</summary>
    public void Add(string key, string problem) => _problems.Add($"{Name(key)}: {problem}");

    /// <summary>Throws when <paramref name="problems"/> is not empty.</summary>
    /// <exception cref="ArgumentException">Every problem, joined by "; ".</exception>
    public static void ThrowIfAny(IReadOnlyList<string> problems)
    {
        ArgumentNullException.ThrowIfNull(problems);
        if (problems.Count > 0)
        {
            throw new ArgumentException(string.Join("; ", problems));
        }
    }
}
