using System.Text.RegularExpressions;
using ModelSurgery.Tests.Support;
using ModelSurgery.Tests.Vocabulary;
using ModelSurgery.Training.Data;

namespace ModelSurgery.Tests.Samples;

/// <summary>
/// Compiles and runs the README's fluent chain (teacher to report) as a file-based app on a tiny teacher, so the snippet
/// users copy always builds against the current API and runs end to end.
/// </summary>
[Category("Samples")]
public sealed partial class ReadmeChainTests
{
    /// <summary>The README's sizes, scaled to the tiny teacher (2 layers, 2 KV groups of 2 heads, hidden 32, FFN 64).</summary>
    private static readonly (string Readme, string Tiny)[] Sizes =
    [
        ("sequences: 64, length: 256", "sequences: 4, length: 32"),
        (".KeepTopLayers(12)", ".KeepTopLayers(1)"),
        (".KeepQueryHeadsPerGroup(4)", ".KeepQueryHeadsPerGroup(1)"),
        (".RoundWidthsTo(64)", ".RoundWidthsTo(8)"),
        ("Steps = 2000, BatchSize = 8, SeqLen = 512", "Steps = 2, BatchSize = 2, SeqLen = 32"),
    ];

    [Test]
    public async Task The_readme_chain_compiles_and_runs_from_teacher_to_report()
    {
        string root = DotnetCli.FindRepositoryRoot("README.md");
        string readme = File.ReadAllText(Path.Combine(root, "README.md")).ReplaceLineEndings("\n");
        string[] chains = [.. CSharpBlock().Matches(readme).Select(m => m.Groups[1].Value).Where(code => code.Contains(".BuildStudent(", StringComparison.Ordinal))];
        Assert.That(chains, Has.Length.EqualTo(1), "README.md holds one C# block with the chain (.BuildStudent(...))");

        // The folders the snippet names, relative to where it runs: inside the repository (ignored artifacts/), so the
        // app builds with the repository's settings as the file-based samples do.
        string dir = Path.Combine(root, "artifacts", "readme-chain-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            (await TinyTokenizedModel.SaveAsync(Path.Combine(dir, "models", "teacher"))).Dispose();
            Directory.CreateDirectory(Path.Combine(dir, "data"));
            int[] ids = [.. Modeling.TinyModels.RandomIds(800, TinyTokenizedModel.VocabSize, seed: 4).Select(i => (int)i)];
            using (var writer = new TokenFileWriter(Path.Combine(dir, "data", "train.tokens"), TinyTokenizedModel.VocabSize, TinyTokenizedModel.EndOfText))
            {
                writer.AppendDocument(ids);
                writer.Complete();
            }

            await File.WriteAllTextAsync(Path.Combine(dir, "data", "heldout.txt"), "The jury said the election was conducted fairly, and the city thanked it.");
            await File.WriteAllLinesAsync(Path.Combine(dir, "data", "arc_easy.jsonl"),
            [
                """{"id": "q1", "question": "Which is a planet?", "choices": {"text": ["Mars", "Moon", "Sun"], "label": ["A", "B", "C"]}, "answerKey": "A"}""",
                """{"id": "q2", "question": "Ice is", "choices": {"text": ["hot", "cold"], "label": ["1", "2"]}, "answerKey": "2"}""",
            ]);

            string code = chains[0];
            // The snippet calibrates on the token file it distils on, so the file written above feeds both.
            Assert.That(code, Does.Contain("TokenFile.Open(\"data/train.tokens\")"), "the README's calibration source changed: update this test");
            foreach ((string from, string to) in Sizes)
            {
                Assert.That(code, Does.Contain(from), "the README's sizes changed: update this test");
                code = code.Replace(from, to, StringComparison.Ordinal);
            }

            string project = Path.Combine(root, "Training", "ModelSurgery.Training.csproj");
            string app = Path.Combine(dir, "readme.cs");
            await File.WriteAllTextAsync(app, $"#:project {project}\n#:property UsesTorchBackend=true\n#:property PublishAot=false\n\n{code}");

            string output = DotnetCli.Run(dir, "run", app);

            Assert.That(output, Does.Contain("| teacher").And.Contain("| student").And.Contain("arc_easy").And.Contain("heldout"));
            Assert.That(File.Exists(Path.Combine(dir, "models", "student", "surgery_plan.json")), Is.True);
            Assert.That(File.Exists(Path.Combine(dir, "runs", "student", "checkpoints", "final", "config.json")), Is.True);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [GeneratedRegex("```csharp\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex CSharpBlock();
}
