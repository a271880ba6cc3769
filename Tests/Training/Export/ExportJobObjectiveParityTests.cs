using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using ModelSurgery.Training;
using ModelSurgery.Training.Distillation;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Training.Export;

/// <summary>
/// The job's objective.py against the C# it mirrors, on the same numbers: every divergence with a compressed, padded
/// student vocabulary, the learning-rate schedule and the weight-decay rule. It needs a Python with PyTorch
/// (MODELSURGERY_PYTHON, python3 or /usr/bin/python3) and is ignored where there is none; the rest of the export tests
/// need no Python. An own check, not part of the suite (the suite needs nothing beyond the NuGet restore): run it with
/// <c>dotnet test --filter "FullyQualifiedName~ExportJobObjectiveParityTests"</c> where Python and PyTorch are installed.
/// </summary>
[Explicit("needs a Python with PyTorch")]
public sealed class ExportJobObjectiveParityTests
{
    private static readonly long[] Kept = [1, 3, 4, 7];

    [TestCase(DistillationDivergence.ForwardKl)]
    [TestCase(DistillationDivergence.ReverseKl)]
    [TestCase(DistillationDivergence.JensenShannon)]
    public void Objective_py_computes_the_local_distillation_loss(DistillationDivergence divergence)
    {
        string python = PythonWithTorch() ?? IgnoreWithoutPython();
        using var scope = torch.NewDisposeScope();
        var random = new Random(5);
        float[] Values(int n) => [.. Enumerable.Range(0, n).Select(_ => (float)((random.NextDouble() * 6) - 3))];
        // Student vocabulary: the 4 kept ids padded to 6; teacher vocabulary: 8.
        float[] student = Values(2 * 3 * 6);
        float[] teacher = Values(2 * 3 * 8);
        long[] labels = [0, 3, 2, 1, 1, 5];
        var loss = new DistillationLoss(divergence, temperature: 2, alpha: 0.7, keptTeacherIds: Kept);
        double expected = loss.Compute(torch.tensor(student, [2, 3, 6]), torch.tensor(teacher, [2, 3, 8]), torch.tensor(labels, [2, 3])).to(ScalarType.Float64).item<double>();

        var input = new JsonObject
        {
            ["student"] = new JsonArray([.. student.Select(v => (JsonNode)v)]),
            ["teacher"] = new JsonArray([.. teacher.Select(v => (JsonNode)v)]),
            ["labels"] = new JsonArray([.. labels.Select(v => (JsonNode)v)]),
            ["kept"] = new JsonArray([.. Kept.Select(v => (JsonNode)v)]),
            ["divergence"] = divergence switch { DistillationDivergence.ForwardKl => "forward_kl", DistillationDivergence.ReverseKl => "reverse_kl", _ => "jsd" },
        };
        const string Script = """
            import json, sys, torch
            sys.path.insert(0, sys.argv[1])
            from objective import distillation_loss
            d = json.load(sys.stdin)
            s = torch.tensor(d["student"]).reshape(2, 3, 6)
            t = torch.tensor(d["teacher"]).reshape(2, 3, 8)
            y = torch.tensor(d["labels"]).reshape(2, 3)
            print(float(distillation_loss(s, t, y, torch.tensor(d["kept"]), d["divergence"], 2.0, 0.7)))
            """;
        double actual = double.Parse(RunPython(python, Script, input.ToJsonString()), CultureInfo.InvariantCulture);
        Assert.That(actual, Is.EqualTo(expected).Within(1e-5));
    }

    [Test]
    public void Objective_py_has_the_local_schedule_and_decay_rule()
    {
        string python = PythonWithTorch() ?? IgnoreWithoutPython();
        var schedule = LearningRateSchedule.For(new TrainingOptions { LearningRate = 3e-4, MinLearningRate = 3e-5, WarmupFraction = 0.1, Steps = 50 }, 50);
        string[] names = ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_proj.bias", "model.norm.weight", "lm_head.weight", "model.layers.1.mlp.down_proj.weight"];
        const string Script = """
            import json, sys
            sys.path.insert(0, sys.argv[1])
            from objective import learning_rate_at
            import ast
            source = open(sys.argv[1] + "/train.py").read()
            tree = ast.parse(source)
            fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "is_decayed")
            scope = {}
            exec(compile(ast.Module(body=[fn], type_ignores=[]), "train.py", "exec"), scope)
            d = json.load(sys.stdin)
            print(json.dumps({"lr": [learning_rate_at(s, 3e-4, 3e-5, 50, d["warmup"]) for s in range(50)], "decayed": [scope["is_decayed"](n) for n in d["names"]]}))
            """;
        var input = new JsonObject { ["warmup"] = schedule.WarmupSteps, ["names"] = new JsonArray([.. names.Select(n => (JsonNode)n)]) };
        JsonNode result = JsonNode.Parse(RunPython(python, Script, input.ToJsonString()))!;
        double[] lr = [.. result["lr"]!.AsArray().Select(v => v!.GetValue<double>())];
        Assert.That(lr, Is.EqualTo(Enumerable.Range(0, 50).Select(s => schedule.At(s))).Within(1e-15));
        bool[] decayed = [.. result["decayed"]!.AsArray().Select(v => v!.GetValue<bool>())];
        Assert.That(decayed, Is.EqualTo(names.Select(n => !WeightDecayGroups.IsExcluded(n))));
    }

    [Test]
    public async Task Corpus_py_serves_the_windows_of_the_token_file()
    {
        string python = PythonWithTorch() ?? IgnoreWithoutPython();
        string dir = Directory.CreateTempSubdirectory("export-job-corpus").FullName;
        try
        {
            string model = Path.Combine(dir, "model");
            using (await ModelSurgery.Tests.Vocabulary.TinyTokenizedModel.SaveAsync(model))
            {
            }

            string tokens = ModelSurgery.Tests.Cli.TrainCliSupport.WriteTokens(dir, vocab: 1001, validationFraction: 0.2);
            var options = new ModelSurgery.Training.Export.JobExportOptions
            {
                StudentDirectory = model,
                TokensPath = tokens,
                OutputDirectory = Path.Combine(dir, "job"),
                Training = new TrainingOptions { BatchSize = 2, SeqLen = 16, Steps = 10, Seed = 9 },
                Nodes = 1,
                GpusPerNode = 2,
            };
            ModelSurgery.Training.Export.ExportedJob job = await ModelSurgery.Training.Export.JobExporter.ExportAsync(options);
            const string Script = """
                import json, os, sys
                import numpy as np
                job = sys.stdin.read().strip()
                sys.path.insert(0, job)
                from corpus import TokenWindows, open_corpus
                tokens, corpus = open_corpus(job, "data/corpus.json")
                train = TokenWindows(tokens, np.load(os.path.join(job, corpus["train_windows"])), corpus["seq_len"], seed=9)
                train.set_epoch(1)
                items = [train[i] for i in range(len(train))]
                print(json.dumps({"order": [int(w) for w in train.order], "inputs": [x["input_ids"].tolist() for x in items], "labels": [x["labels"].tolist() for x in items]}))
                """;
            JsonNode result = JsonNode.Parse(RunPython(python, Script, job.Directory))!;
            long[] order = [.. result["order"]!.AsArray().Select(v => v!.GetValue<long>())];
            using ModelSurgery.Training.Data.TokenFile file = ModelSurgery.Training.Data.TokenFile.Open(tokens);
            var split = ModelSurgery.Training.Data.DatasetSplit.ByChunk(ModelSurgery.Training.Data.TokenWindows.Count(file.Count, 16), 0.2, ModelSurgery.Training.Data.TokenFileInfo.DefaultSplitSeed);
            Assert.That(order.Order(), Is.EqualTo(split.Train), "an epoch is a permutation of the local training windows");
            Assert.That(order, Is.Not.EqualTo(split.Train), "shuffled");
            for (int i = 0; i < order.Length; i++)
            {
                long[] window = file.Read(order[i] * 16, 17);
                Assert.That(result["inputs"]![i]!.AsArray().Select(v => v!.GetValue<long>()), Is.EqualTo(window[..16]), $"inputs of item {i}");
                Assert.That(result["labels"]![i]!.AsArray().Select(v => v!.GetValue<long>()), Is.EqualTo(window[1..]), $"labels of item {i}");
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static string IgnoreWithoutPython()
    {
        Assert.Ignore("No Python with PyTorch here (set MODELSURGERY_PYTHON); objective.py is compared with the C# loss where one is.");
        return string.Empty;
    }

    private static string? PythonWithTorch()
    {
        foreach (string candidate in new[] { Environment.GetEnvironmentVariable("MODELSURGERY_PYTHON"), "python3", "/usr/bin/python3" }.OfType<string>())
        {
            try
            {
                using var process = Process.Start(new ProcessStartInfo(candidate, ["-c", "import torch"]) { RedirectStandardError = true, RedirectStandardOutput = true })!;
                process.WaitForExit(60_000);
                if (process.HasExited && process.ExitCode == 0)
                {
                    return candidate;
                }
            }
            catch (System.ComponentModel.Win32Exception)
            {
                // Not installed under that name.
            }
        }

        return null;
    }

    private static string RunPython(string python, string script, string stdin)
    {
        string scripts = Path.GetDirectoryName(SourceFile("Training", "Export", "HfAccelerate", "objective.py"))!;
        using var process = Process.Start(new ProcessStartInfo(python, ["-c", script, scripts])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        process.StandardInput.Write(stdin);
        process.StandardInput.Close();
        string output = process.StandardOutput.ReadToEnd();
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.That(process.ExitCode, Is.Zero, error);
        return output.Trim();
    }

    private static string SourceFile(params string[] parts)
    {
        var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "ModelSurgery.sln")))
        {
            dir = dir.Parent;
        }

        return Path.Combine([dir?.FullName ?? throw new AssertionException("repository root not found"), .. parts]);
    }
}
