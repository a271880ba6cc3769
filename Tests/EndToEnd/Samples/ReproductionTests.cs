using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using ModelSurgery.Reproduction;
using ModelSurgery.Tests.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Samples;

public sealed partial class ReproductionTests
{
    private static readonly byte[] PngMagic = [0x89, (byte)'P', (byte)'N', (byte)'G'];

    [GeneratedRegex(@"^- \*\*Verdict: (reproduces|does not reproduce|inconclusive)\*\*: .+ \(difference [+-]?\d+\.\d{3} bits/byte in the claim's favour, evaluation noise ±\d+\.\d{3}, \d+ seeds?: .+\)$", RegexOptions.Multiline)]
    private static partial Regex VerdictLine();

    [GeneratedRegex(@"^## (\d)\. ", RegexOptions.Multiline)]
    private static partial Regex SectionHeading();

    [GeneratedRegex(@"!\[[^\]]*\]\(([^)]+\.png)\)")]
    private static partial Regex ImageLink();

    [Test]
    public async Task Fast_run_writes_all_six_sections_with_numbers_verdicts_and_charts()
    {
        using var directory = new TempDirectory();
        int threads = torch.get_num_threads();
        ReproductionResult result;
        var log = new StringWriter();
        try
        {
            result = await ReproductionPipeline.RunAsync(new ReproductionOptions { Fast = true, OutputDir = directory.Path, Threads = 1 }, log, "test");
        }
        finally
        {
            torch.set_num_threads(threads);
        }

        string report = File.ReadAllText(result.ReportPath);
        Assert.That(SectionHeading().Matches(report).Select(m => m.Groups[1].Value), Is.EqualTo(new[] { "1", "2", "3", "4", "5", "6" }), log.ToString());
        Assert.That(result.Sections.Select(s => s.Ablation), Is.EqualTo(Enum.GetValues<Ablation>()));
        Assert.That(report, Does.Contain("| Command | `test` |"));
        Assert.That(report, Does.Contain("Total wall time"));
        Assert.That(report, Does.Contain("TorchSharp"));

        // Every section: a table whose number cells parse, at least one verdict line, and its charts.
        string[] sections = SectionHeading().Split(report);
        for (int s = 1; s <= 6; s++)
        {
            string section = sections[2 * s];
            Assert.That(VerdictLine().Matches(section), Is.Not.Empty, $"section {s} has verdict lines");
            List<double> values = BitsPerByteColumn(section);
            Assert.That(values, Is.Not.Empty, $"section {s} has a table of held-out Brown bits/byte");
            Assert.That(values, Has.All.Matches<double>(v => v > 0 && v < 20), $"section {s}");

            foreach (Match image in ImageLink().Matches(section))
            {
                string png = Path.Combine(directory.Path, image.Groups[1].Value);
                Assert.That(File.ReadAllBytes(png).Take(4), Is.EqualTo(PngMagic), png);
            }

            Assert.That(ImageLink().Matches(section), Is.Not.Empty, $"section {s} shows a chart");
        }

        Assert.That(result.Charts, Is.Not.Empty);
        Assert.That(result.Charts, Has.All.Matches<string>(File.Exists));

        // report.json holds the same numbers.
        using JsonDocument json = JsonDocument.Parse(File.ReadAllText(result.JsonPath));
        JsonElement[] jsonSections = [.. json.RootElement.GetProperty("sections").EnumerateArray()];
        Assert.That(jsonSections.Select(s => s.GetProperty("id").GetString()), Is.EqualTo(new[] { "inheritance", "layers", "vocab", "shape", "multiround", "distillation" }));
        foreach (JsonElement section in jsonSections)
        {
            Assert.That(section.GetProperty("verdicts").GetArrayLength(), Is.GreaterThan(0));
            foreach (JsonElement run in section.GetProperty("runs").EnumerateArray())
            {
                double bpb = run.GetProperty("brown_bits_per_byte").GetDouble();
                Assert.That(bpb, Is.GreaterThan(0).And.LessThan(20), run.GetProperty("name").GetString());
            }
        }

        Assert.That(json.RootElement.GetProperty("wall_seconds").GetDouble(), Is.GreaterThan(0));

        // Inheritance is the one effect large enough to show even at CI sizes.
        AblationSection inheritance = result.Sections[0];
        Assert.That(inheritance.Overall, Is.EqualTo(Outcome.Reproduces), report);
        Assert.That(inheritance.Numbers.ContainsKey("crossing_tokens"));
    }

    /// <summary>The "Held-out Brown bits/byte" cells (mean of "mean ± spread") of every table in a section that has that column.</summary>
    private static List<double> BitsPerByteColumn(string section)
    {
        string[] lines = section.Split('\n');
        var values = new List<double>();
        for (int i = 0; i + 1 < lines.Length; i++)
        {
            if (!lines[i].StartsWith('|') || !lines[i + 1].StartsWith("|---", StringComparison.Ordinal))
            {
                continue;
            }

            int column = Array.IndexOf(Cells(lines[i]), "Held-out Brown bits/byte");
            for (int r = i + 2; column >= 0 && r < lines.Length && lines[r].StartsWith("| ", StringComparison.Ordinal); r++)
            {
                string cell = Cells(lines[r])[column].Split(' ')[0];
                Assert.That(double.TryParse(cell, NumberStyles.Float, CultureInfo.InvariantCulture, out double value), $"'{cell}' in '{lines[r]}'");
                values.Add(value);
            }
        }

        return values;
    }

    private static string[] Cells(string row) => [.. row.Trim().Trim('|').Split('|').Select(c => c.Trim())];
}
