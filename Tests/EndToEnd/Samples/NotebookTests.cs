using System.Text;
using System.Text.Json.Nodes;
using ModelSurgery.Tests.Support;

namespace ModelSurgery.Tests.Samples;

/// <summary>
/// Executes every Polyglot Notebook in <c>Samples/notebooks</c> headless, cell by cell, in a fresh .NET Interactive
/// kernel (the <c>dotnet-repl</c> tool of the repository's tool manifest), against the library packed into the shared
/// local feed: a notebook passes when no cell reports an error. The executed notebooks, outputs included, are kept
/// under <c>artifacts/notebook-runs/</c>.
/// </summary>
[Category("Samples")]
[Category("Packaging")]
[NonParallelizable]
public sealed class NotebookTests
{
    private const string NotebookFolder = "Samples/notebooks";
    private static readonly Lock ToolGate = new();
    private static bool _toolRestored;

    /// <summary>One case per notebook in the folder, by file name.</summary>
    public static IEnumerable<TestCaseData> Notebooks()
    {
        string root = DotnetCli.FindRepositoryRoot("ModelSurgery.sln");
        return Directory.EnumerateFiles(Path.Combine(root, NotebookFolder), "*.ipynb")
            .Order(StringComparer.Ordinal)
            .Select(path => new TestCaseData(Path.GetFileName(path)).SetArgDisplayNames(Path.GetFileName(path)));
    }

    [Test]
    public void The_folder_holds_the_four_notebooks() =>
        Assert.That(Notebooks().Select(c => (string)c.Arguments[0]!), Is.EqualTo(new[]
        {
            "01-inspect-checkpoint.ipynb", "02-score-importance.ipynb", "03-build-student.ipynb", "04-distill-evaluate.ipynb",
        }));

    [TestCaseSource(nameof(Notebooks))]
    public void Notebook_runs_without_a_cell_error(string notebook)
    {
        string root = DotnetCli.FindRepositoryRoot("ModelSurgery.sln");
        string folder = Path.Combine(root, NotebookFolder);
        string source = Path.Combine(folder, notebook);
        AssertIsPolyglotCSharpNotebook(source);

        PackedFeed feed = LocalPackageFeed.Get();
        RestoreTool(root);
        string runs = Path.Combine(root, "artifacts", "notebook-runs");
        Directory.CreateDirectory(runs);
        string executed = Path.Combine(runs, notebook);
        File.Delete(executed);

        // The kernel starts in the notebook's folder, as Polyglot Notebooks starts it; the feed and version come from
        // the environment, so the committed notebook runs exactly as it is.
        var environment = new Dictionary<string, string?>
        {
            ["MODELSURGERY_FEED"] = feed.Folder,
            ["MODELSURGERY_VERSION"] = feed.Version,
            ["DOTNET_INTERACTIVE_CLI_TELEMETRY_OPTOUT"] = "1",
        };
        (int exitCode, string output) = DotnetCli.Execute(folder, environment,
            "tool", "run", "dotnet-repl", "--", "--run", source, "--exit-after-run", "--output-format", "ipynb", "--output-path", executed);

        if (!File.Exists(executed))
        {
            Assert.Fail($"{notebook}: dotnet-repl exited with {exitCode} and wrote no executed notebook:\n{Tail(output)}");
        }

        TestContext.AddTestAttachment(executed, "the executed notebook with its outputs");
        string? error = FirstCellError(notebook, executed);
        Assert.That(error, Is.Null, error);
        Assert.That(exitCode, Is.Zero, $"{notebook}: every cell ran, yet dotnet-repl exited with {exitCode}:\n{Tail(output)}");
    }

    // nbformat 4 with the .NET C# kernelspec and the Polyglot metadata that names the default kernel.
    private static void AssertIsPolyglotCSharpNotebook(string path)
    {
        JsonNode notebook = JsonNode.Parse(File.ReadAllText(path)) ?? throw new InvalidDataException($"{path} is empty.");
        Assert.Multiple(() =>
        {
            Assert.That((int?)notebook["nbformat"], Is.EqualTo(4), path);
            Assert.That((string?)notebook["metadata"]?["kernelspec"]?["name"], Is.EqualTo(".net-csharp"), path);
            Assert.That((string?)notebook["metadata"]?["polyglot_notebook"]?["kernelInfo"]?["defaultKernelName"], Is.EqualTo("csharp"), path);
            Assert.That(notebook["cells"]!.AsArray().Where(c => (string?)c!["cell_type"] == "code").Select(c => c!["outputs"]!.AsArray().Count),
                Has.All.Zero, $"{path} is committed with outputs; clear them");
        });
    }

    // "<notebook>, cell N: <error>" for the first code cell whose outputs hold an error, numbering all cells from 1.
    private static string? FirstCellError(string notebook, string executed)
    {
        JsonArray cells = JsonNode.Parse(File.ReadAllText(executed))!["cells"]!.AsArray();
        for (int i = 0; i < cells.Count; i++)
        {
            foreach (JsonNode? output in cells[i]!["outputs"]?.AsArray() ?? [])
            {
                if ((string?)output?["output_type"] == "error")
                {
                    string message = $"{output["ename"]}: {output["evalue"]}";
                    return $"{notebook}, cell {i + 1}: {message}";
                }
            }
        }

        return null;
    }

    // The tool comes from the repository's manifest (.config/dotnet-tools.json), restored once per test run.
    private static void RestoreTool(string root)
    {
        lock (ToolGate)
        {
            if (!_toolRestored)
            {
                DotnetCli.Run(root, "tool", "restore");
                _toolRestored = true;
            }
        }
    }

    private static string Tail(string text) => text.Length <= 4000 ? text : new StringBuilder("...").Append(text.AsSpan(text.Length - 4000)).ToString();
}
