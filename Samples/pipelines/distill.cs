#!/usr/bin/env dotnet
// The distillation pipeline of distill.recipe.json, written with the fluent API:
// tokenize -> score -> plan -> build -> distil -> evaluate.
//
//   dotnet run Samples/pipelines/distill.cs -- <teacher-dir> <out-dir> [corpus.jsonl] [steps]
//
// The teacher folder needs a tokenizer (tokenizer.json or tokenizer.model) beside its weights. The last documents of the
// corpus are held out for the evaluation. Ctrl-C stops at a checkpoint; the same command resumes the distillation.
#:project ../../Training/ModelSurgery.Training.csproj
#:property UsesTorchBackend=true
#:property PublishAot=false

using System.Diagnostics;
using System.Globalization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Recipes;

if (args.Length < 2)
{
    Console.Error.WriteLine("usage: dotnet run Samples/pipelines/distill.cs -- <teacher-dir> <out-dir> [corpus.jsonl] [steps]");
    return 2;
}

string teacher = Path.GetFullPath(args[0]);
string output = Path.GetFullPath(args[1]);
string corpus = Path.GetFullPath(args.Length > 2 ? args[2] : Path.Combine("Samples", "Data", "brown.jsonl"));
long steps = args.Length > 3 ? long.Parse(args[3], CultureInfo.InvariantCulture) : 200;
using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    cancel.Cancel();
};
var clock = Stopwatch.StartNew();
Directory.CreateDirectory(output);
string tokens = Path.Combine(output, "corpus.tokens");
string studentDirectory = Path.Combine(output, "student");
string distillationDirectory = Path.Combine(output, "distillation");
// Forward KL at temperature 1 mixed half and half with cross-entropy, 128-token windows, learning rate 1e-3 decaying to 1e-4.
var distillation = new DistillationOptions { Steps = steps, EvalEvery = 50, EvalBatches = 8, CheckpointEvery = 100 };
// A run stopped by Ctrl-C (or killed) left its last checkpoint with the training state: the same command resumes it.
bool resume = File.Exists(Path.Combine(distillationDirectory, "checkpoints", "last", Trainer.StateFileName));
LlamaConfig config = LlamaConfig.Load(Path.Combine(teacher, "config.json"));

// 1. Data: the last documents are held out for the final evaluation and never trained on; the rest is tokenized in the
//    teacher's vocabulary, documents separated by its eos token, 10% of the windows kept for validation.
//    A document repeated in the corpus is held out with all its copies.
string[] documents = [.. File.ReadLines(corpus).Where(l => !string.IsNullOrWhiteSpace(l))];
string[] distinct = [.. documents.Distinct(StringComparer.Ordinal)];
int heldOutCount = Math.Max(1, Math.Min(20, distinct.Length / 5));
var heldOutDocuments = distinct[^heldOutCount..].ToHashSet(StringComparer.Ordinal);
string trainText = Path.Combine(output, "train.jsonl");
string heldout = Path.Combine(output, "heldout.jsonl");
File.WriteAllLines(trainText, documents.Where(d => !heldOutDocuments.Contains(d)));
File.WriteAllLines(heldout, heldOutDocuments);
int separator = config.EosTokenIds.Count > 0 ? config.EosTokenIds[0] : config.BosTokenId ?? 0;

try
{
    // The held-out documents evaluate student and teacher at the end (bits per byte, perplexity).
    var evaluation = new EvaluationSuite { Text = [heldout], MaxLength = 128 };
    StudentPipeline pipeline;
    if (resume)
    {
        // 2-3. The student and the token file are already there: continue the distillation where it stopped.
        Console.WriteLine($"resuming the distillation in {distillationDirectory}");
        pipeline = StudentPipeline.ForStudent(studentDirectory).DistilledFrom(teacher).RunWith(new CheckpointTrainingSettings { Resume = true });
    }
    else
    {
        TokenizeResult data = await Tokenization.TokenizeAsync(TokenizerFiles.Load(teacher), [trainText], tokens, new TokenizeOptions(config.VocabSize, separator), cancellationToken: cancel.Token);
        new TokenFileInfo { Tokens = data.Tokens, Documents = data.Documents, VocabSize = config.VocabSize, SeparatorId = separator, ValidationFraction = 0.1 }.Save(tokens);
        Console.WriteLine($"tokenized {data.Documents} documents into {data.Tokens} tokens, {heldOutCount} documents held out ({clock.Elapsed.TotalSeconds:F1} s)");

        // 2. Surgery: score on calibration windows, keep the top half of the layers, half the neurons, whole KV groups.
        long[] sample;
        using (TokenFile file = TokenFile.Open(tokens))
        {
            sample = file.Read(0, (int)Math.Min(file.Count, 32 * 128 * 8));
        }

        pipeline = Surgeon.ForTeacher(teacher)
            .CalibrateOn(sample, sequences: 32, length: 128)
            .ScoreWith(ScoringMetrics.Activation, ScoringMetrics.BlockInfluence)
            .Plan(plan => plan.KeepTopLayers(Math.Max(1, config.NumHiddenLayers / 2)).KeepNeuronFraction(0.5).RoundWidthsTo(8))
            .BuildStudent(studentDirectory);
    }

    // 3-4. Distil from the teacher it was cut from, then evaluate: one chain, one cancellation token.
    StudentPipelineResult result = await pipeline
        .Distill(tokens, distillation, distillationDirectory)
        .Evaluate(evaluation)
        .RunAsync(cancel.Token);
    if (result.Surgery is { } surgery)
    {
        Console.WriteLine($"built a student of {surgery.Plan.ParameterCount.Total:N0} parameters from {LlamaTensorLayout.CountParameters(config).Total:N0}");
    }

    Console.WriteLine($"distilled {steps} steps, final loss {result.Training!.FinalLoss:F3} ({clock.Elapsed.TotalSeconds:F1} s)");
    Console.WriteLine();
    Console.WriteLine(result.Report!.ToMarkdown());
    Console.WriteLine($"student: {result.Student} (total {clock.Elapsed.TotalSeconds:F1} s)");
    return 0;
}
catch (OperationCanceledException)
{
    Console.Error.WriteLine(File.Exists(Path.Combine(distillationDirectory, "checkpoints", "last", Trainer.StateFileName))
        ? $"interrupted: the last checkpoint is in {distillationDirectory}; run the same command again to resume."
        : "interrupted before the distillation saved a checkpoint; run the same command again to start over.");
    return 130;
}
