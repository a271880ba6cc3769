using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Quickstart;
using ModelSurgery.Tests.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Samples;

public sealed class QuickstartTests
{
    private static readonly byte[] PngMagic = [0x89, (byte)'P', (byte)'N', (byte)'G'];

    [Test]
    public async Task Fast_run_writes_the_report_and_charts_and_inheritance_beats_random_init_then_reuses_the_cached_teacher()
    {
        using var directory = new TempDirectory();
        int threads = torch.get_num_threads();
        QuickstartResult first;
        QuickstartResult second;
        var log = new StringWriter();
        try
        {
            // One LibTorch thread: the tiny models gain nothing from more, and a busy machine loses a lot.
            var options = new QuickstartOptions { Fast = true, OutputDir = directory.Path, Threads = 1 };
            first = await QuickstartPipeline.RunAsync(options, log);
            second = await QuickstartPipeline.RunAsync(options, log);
        }
        finally
        {
            torch.set_num_threads(threads);
        }

        Assert.That(first.TeacherFromCache, Is.False, log.ToString());
        Assert.That(second.TeacherFromCache, Is.True, "the second run reuses the teacher trained by the first");
        Assert.That(File.Exists(Path.Combine(directory.Path, "teacher", QuickstartPipeline.TeacherManifestFileName)));

        // Cross-entropy curves and the distillation objective are charted apart (they are not on one scale).
        Assert.That(first.Charts.Select(Path.GetFileName), Is.EquivalentTo(new[]
        {
            "scores-heads.png", "scores-layers.png", "loss-curves.png", "distillation-objective.png", "validation-curves.png", "comparison-brown.png", "comparison-heldout.png",
        }));
        foreach (string png in first.Charts)
        {
            Assert.That(File.ReadAllBytes(png).Take(4), Is.EqualTo(PngMagic), png);
        }

        string report = File.ReadAllText(first.ReportPath);
        Assert.That(File.Exists(Path.Combine(directory.Path, "report.json")));
        Assert.That(File.Exists(Path.Combine(directory.Path, "plan.json")));
        Assert.That(File.Exists(Path.Combine(directory.Path, "student-inherited", "config.json")));
        Assert.That(File.Exists(Path.Combine(directory.Path, "student-random", "config.json")));

        // Every model folder carries the compressed tokenizer the models were trained with, with its special tokens.
        string dataTokenizer = Directory.GetFiles(Path.Combine(directory.Path, "data", "tokenizer"))
            .Single(f => f.EndsWith(".tiktoken", StringComparison.Ordinal) || Path.GetFileName(f) == "tokenizer.json");
        int[] expected = [.. TokenizerFiles.Load(dataTokenizer).Encode("The jury said that the election was conducted.")];
        // The students as cut and as initialised, and as trained by the pipeline.
        string[] trained = [Path.Combine("runs", QuickstartPipeline.InheritedName, "checkpoints", "final"), Path.Combine("runs", QuickstartPipeline.RandomName, "checkpoints", "final")];
        foreach (string folder in new[] { "teacher", "student-inherited", "student-random" }.Concat(trained))
        {
            string path = Path.Combine(directory.Path, folder);
            Assert.That(TokenizerFiles.Load(path).Encode("The jury said that the election was conducted."), Is.EqualTo(expected), folder);
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(path, "tokenizer_config.json")))!;
            Assert.That((string?)config["eos_token"], Is.EqualTo("<|endoftext|>"), folder);
        }

        Assert.That(first.Models.Select(m => m.Name), Is.EqualTo(new[] { QuickstartPipeline.TeacherName, QuickstartPipeline.InheritedName, QuickstartPipeline.RandomName }));
        foreach (QuickstartModelResult model in first.Models)
        {
            Assert.That(report, Does.Contain("| " + model.Name + " |"));
            Assert.That(new[] { model.BrownBitsPerByte, model.HeldoutBitsPerByte, model.BrownPerplexity, model.HeldoutPerplexity, model.ValidationLoss },
                Has.All.Matches<double>(v => double.IsFinite(v) && v > 0), model.Name);
            Assert.That(model.Sample, Is.Not.Empty, model.Name);
        }

        QuickstartModelResult teacher = first[QuickstartPipeline.TeacherName];
        QuickstartModelResult inherited = first[QuickstartPipeline.InheritedName];
        QuickstartModelResult random = first[QuickstartPipeline.RandomName];
        Assert.Multiple(() =>
        {
            // The student is cut to about a quarter of the teacher's non-embedding parameters; both students share one shape.
            double share = (double)inherited.NonEmbeddingParameters / teacher.NonEmbeddingParameters;
            Assert.That(share, Is.InRange(0.1, 0.35));
            Assert.That(random.Parameters, Is.EqualTo(inherited.Parameters));

            // Bits per byte: the teacher beats the random student, and so does the student that inherited its weights.
            Assert.That(teacher.BrownBitsPerByte, Is.LessThan(random.BrownBitsPerByte));
            Assert.That(teacher.HeldoutBitsPerByte, Is.LessThan(random.HeldoutBitsPerByte));
            Assert.That(inherited.BrownBitsPerByte, Is.LessThan(random.BrownBitsPerByte));
            Assert.That(inherited.HeldoutBitsPerByte, Is.LessThan(random.HeldoutBitsPerByte));

            // The cached teacher is the same model: it scores exactly as it did when it was trained.
            Assert.That(second[QuickstartPipeline.TeacherName].BrownBitsPerByte, Is.EqualTo(teacher.BrownBitsPerByte).Within(1e-9));
            Assert.That(second[QuickstartPipeline.TeacherName].ValidationLoss, Is.EqualTo(teacher.ValidationLoss).Within(1e-9));
        });
    }

    [Test]
    public void Options_parse_the_documented_flags()
    {
        QuickstartOptions options = QuickstartOptions.Parse(["--fast", "--fresh", "--out", "o", "--teacher", "t", "--data", "d", "--threads", "3"])!;
        Assert.That(options, Is.EqualTo(new QuickstartOptions { Fast = true, Fresh = true, OutputDir = "o", TeacherDir = "t", DataDir = "d", Threads = 3 }));
        Assert.That(options.Sizes, Is.EqualTo(QuickstartSizes.Fast));
        Assert.That(new QuickstartOptions { OutputDir = "o" }.ResolvedTeacherDir, Is.EqualTo(Path.Combine("o", "teacher")));
        Assert.That(new QuickstartOptions().ResolvedOutputDir, Is.EqualTo("artifacts/quickstart"));
        Assert.That(new QuickstartOptions { Fast = true }.ResolvedOutputDir, Is.EqualTo("artifacts/quickstart-fast"), "fast runs keep away from the full run's cached teacher");
        Assert.That(QuickstartOptions.Parse(["--help"]), Is.Null);
        Assert.That(() => QuickstartOptions.Parse(["--bogus"]), Throws.ArgumentException.With.Message.Contains("--bogus"));
        Assert.That(() => QuickstartOptions.Parse(["--threads", "x"]), Throws.ArgumentException.With.Message.EqualTo("Option '--threads' needs a positive whole number, not 'x'."), "the message the user reads names the flag and nothing of the code");
        Assert.That(() => QuickstartOptions.Parse(["--out"]), Throws.ArgumentException.With.Message.Contains("--out"));
        Assert.That(() => QuickstartOptions.Parse(["--threads", "0"]), Throws.ArgumentException.With.Message.Contains("--threads"));
    }
}
