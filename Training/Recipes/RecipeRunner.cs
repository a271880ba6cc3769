using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.IO;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery;
using ModelSurgery.Surgery.Building;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Distillation;

namespace ModelSurgery.Training.Recipes;

/// <summary>How a step of a recipe run ended.</summary>
public enum RecipeStepStatus
{
    /// <summary>The step ran from scratch.</summary>
    Ran,

    /// <summary>The step had finished earlier with the same inputs and was skipped.</summary>
    Skipped,

    /// <summary>The (distillation) step continued from its last checkpoint.</summary>
    Resumed,

    /// <summary>The recipe has no such section.</summary>
    NotInRecipe,
}

/// <summary>Progress of a recipe run.</summary>
/// <param name="Step">Step name (vocabulary, data, scoring, plan, build, distillation, evaluation).</param>
/// <param name="Status">What is happening.</param>
/// <param name="Completed">Units done in the step.</param>
/// <param name="Total">Units in the step (null when unknown).</param>
/// <param name="Unit">What <paramref name="Completed"/> and <paramref name="Total"/> count (steps, documents, bytes, ...).</param>
/// <param name="StepFinished">True on the step's last report (done, skipped or not in the recipe).</param>
public sealed record RecipeProgress(string Step, string Status, long Completed, long? Total, ProgressUnit Unit, bool StepFinished = false) : IProgressReport;

/// <summary>One step of a recipe run.</summary>
/// <param name="Name">Step name.</param>
/// <param name="Directory">The step's folder (<c>workDir/nn-name</c>).</param>
/// <param name="Status">Ran, skipped, resumed or not in the recipe.</param>
/// <param name="Elapsed">Wall time spent on it in this run.</param>
/// <param name="InputsHash">Fingerprint of the step's inputs.</param>
/// <param name="Outputs">Named outputs (paths and figures).</param>
public sealed record RecipeStepResult(string Name, string Directory, RecipeStepStatus Status, TimeSpan Elapsed, string InputsHash, IReadOnlyDictionary<string, string> Outputs);

/// <summary>What a recipe run produced.</summary>
/// <param name="WorkDirectory">The work folder.</param>
/// <param name="Steps">Every step, in order.</param>
/// <param name="EvaluationTable">The evaluation table (teacher and student) as Markdown, or null when the recipe has no evaluation.</param>
/// <param name="StudentCheckpoint">The distilled student's final checkpoint.</param>
public sealed record RecipeSummary(string WorkDirectory, IReadOnlyList<RecipeStepResult> Steps, string? EvaluationTable, string StudentCheckpoint)
{
    /// <summary>The step called <paramref name="name"/>.</summary>
    public RecipeStepResult this[string name] => Steps.First(s => s.Name == name);
}

/// <summary>
/// Runs a <see cref="DistillationRecipe"/> step by step with the library's APIs. Each step writes into
/// <c>workDir/nn-step/</c> and ends by writing <c>step.json</c> (inputs hash and outputs) atomically. A re-run skips
/// finished steps whose inputs are unchanged, re-runs a changed step and every step after it, and redoes an interrupted
/// step from scratch, except distillation, which resumes from its last checkpoint.
/// </summary>
public static class RecipeRunner
{
    /// <summary>The file that marks a step finished.</summary>
    public const string StepFileName = "step.json";

    /// <summary>The steps in order.</summary>
    public static readonly IReadOnlyList<string> StepNames = ["vocabulary", "data", "scoring", "plan", "build", "distillation", "evaluation", "export_job"];

    private const string StartedFileName = "started.json";

    private static readonly JsonSerializerOptions StepJson = new() { WriteIndented = true };

    /// <summary>
    /// Every file the recipe names exists before any step runs, so a missing evaluation file is reported now and not
    /// after the whole distillation.
    /// </summary>
    private static void CheckFilesBeforeTheFirstStep(DistillationRecipe recipe)
    {
        try
        {
            _ = CorpusReader.ExpandPaths(recipe.Data.Corpus.Select(recipe.Resolve));
        }
        catch (ArgumentException ex)
        {
            throw new InvalidDataException($"data.corpus: {ex.Message.Split(" (Parameter", 2)[0]}", ex);
        }

        if (recipe.Data.Tokenizer is { } tokenizer && !File.Exists(recipe.Resolve(tokenizer)) && !Directory.Exists(recipe.Resolve(tokenizer))
            && !string.Equals(tokenizer, TiktokenVocabulary.Gpt2Name, StringComparison.OrdinalIgnoreCase))
        {
            throw new InvalidDataException($"data.tokenizer: {recipe.Resolve(tokenizer)} does not exist.");
        }

        if (recipe.Evaluation is { } e)
        {
            foreach ((string key, string path) in e.Tasks.Select(t => ($"evaluation.tasks.{t.Key}", t.Value)).Concat(e.Text.Select(t => ("evaluation.text", t))))
            {
                if (!File.Exists(recipe.Resolve(path)))
                {
                    throw new InvalidDataException($"{key}: {recipe.Resolve(path)} does not exist.");
                }
            }
        }
    }

    /// <summary>Loads the recipe at <paramref name="recipePath"/> and runs it in <paramref name="workDirectory"/>.</summary>
    /// <exception cref="InvalidDataException">The recipe is invalid; the message names the field.</exception>
    public static Task<RecipeSummary> RunAsync(
        string recipePath,
        string workDirectory,
        IProgress<RecipeProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default) =>
        RunAsync(DistillationRecipe.Load(recipePath), workDirectory, progress, logger, cancellationToken);

    /// <summary>Runs a loaded recipe in <paramref name="workDirectory"/>.</summary>
    public static async Task<RecipeSummary> RunAsync(
        DistillationRecipe recipe,
        string workDirectory,
        IProgress<RecipeProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        ArgumentException.ThrowIfNullOrEmpty(workDirectory);
        logger ??= NullLogger.Instance;
        string work = Path.GetFullPath(workDirectory);
        Directory.CreateDirectory(work);
        var run = new Run(recipe, work, progress, logger, cancellationToken);

        string teacher = recipe.Resolve(recipe.Teacher);
        if (!File.Exists(Path.Combine(teacher, "config.json")))
        {
            throw new InvalidDataException($"teacher: {teacher} holds no config.json.");
        }

        CheckFilesBeforeTheFirstStep(recipe);

        // 1. Vocabulary: the compressed teacher replaces the teacher for every later step.
        string vocabularyInputs = Hash(DistillationRecipe.SectionJson(recipe.Vocabulary), DistillationRecipe.SectionJson(recipe.Data), FolderStamp(teacher), CorpusStamp(recipe));
        await run.StepAsync("vocabulary", vocabularyInputs, recipe.Vocabulary is null ? null : async dir =>
        {
            ModelCompressionResult compressed = await ModelVocabularyCompressor.CompressAsync(
                teacher, recipe.Data.Corpus.Select(recipe.Resolve), recipe.Vocabulary.Target, Path.Combine(dir, "teacher"),
                new ModelCompressionOptions { JsonlField = recipe.Data.Field, PadVocabToMultiple = recipe.Vocabulary.PadToMultiple, Tokenizer = SourceTokenizer(recipe, teacher, Path.Combine(dir, "source-tokenizer")) },
                Relay<ModelCompressionProgress>(run, "vocabulary"),
                logger, run.Token).ConfigureAwait(false);
            return new()
            {
                ["teacher"] = compressed.Build.Directory,
                ["vocab_size"] = compressed.Map.NewVocabSize.ToString(CultureInfo.InvariantCulture),
                ["coverage"] = compressed.Selection.Coverage.ToString("F4", CultureInfo.InvariantCulture),
            };
        }).ConfigureAwait(false);
        string effectiveTeacher = run.Output("vocabulary", "teacher") ?? teacher;

        // 2. Data: the corpus in the (compressed) teacher's vocabulary.
        string dataInputs = Hash(run.LastHash, DistillationRecipe.SectionJson(recipe.Data), CorpusStamp(recipe), recipe.Vocabulary is null ? FolderStamp(teacher) : string.Empty);
        await run.StepAsync("data", dataInputs, async dir =>
        {
            string tokenizerPath = recipe.Vocabulary is not null ? effectiveTeacher : SourceTokenizer(recipe, teacher, Path.Combine(dir, "tokenizer")) ?? teacher;
            ModelTokenizer tokenizer = TokenizerFiles.Load(tokenizerPath);
            LlamaConfig config = LlamaConfig.Load(Path.Combine(effectiveTeacher, "config.json"));
            int separator = recipe.Data.SeparatorId ?? (config.EosTokenIds.Count > 0 ? config.EosTokenIds[0] : config.BosTokenId)
                ?? throw new InvalidDataException($"data.separator_id: {effectiveTeacher}/config.json names no eos or bos id; give the separator id.");
            if (separator >= config.VocabSize)
            {
                throw new InvalidDataException($"data.separator_id: {separator} is outside the model's vocabulary of {config.VocabSize} ids.");
            }

            string tokens = Path.Combine(dir, "corpus.tokens");
            TokenizeResult result = await Tokenization.TokenizeAsync(
                tokenizer, recipe.Data.Corpus.Select(recipe.Resolve), tokens, new TokenizeOptions(config.VocabSize, separator, recipe.Data.Field),
                Relay<TokenizeProgress>(run, "data"), run.Token).ConfigureAwait(false);
            new TokenFileInfo
            {
                Tokens = result.Tokens,
                Documents = result.Documents,
                VocabSize = config.VocabSize,
                SeparatorId = separator,
                ValidationFraction = recipe.Data.ValidationFraction,
                Tokenizer = tokenizerPath,
            }.Save(tokens);
            return new() { ["tokens"] = tokens, ["tokenizer"] = tokenizerPath, ["token_count"] = Invariant(result.Tokens), ["documents"] = Invariant(result.Documents) };
        }).ConfigureAwait(false);
        string tokensPath = run.Output("data", "tokens")!;

        // 3. Scoring.
        Surgeon surgeon = Surgeon.ForTeacher(effectiveTeacher).LogTo(logger)
            .ReportTo(Relay<SurgeryProgress>(run, "surgery"));
        await run.StepAsync("scoring", Hash(run.LastHash, DistillationRecipe.SectionJson(recipe.Scoring)), async dir =>
        {
            long[] sample;
            using (TokenFile file = TokenFile.Open(tokensPath))
            {
                long length = Math.Min(file.Count, (long)recipe.Scoring.CalibrationSequences * recipe.Scoring.CalibrationLength * 8);
                sample = file.Read(0, (int)length);
            }

            IReadOnlyList<ImportanceScores> scores = await surgeon
                .CalibrateOn(sample, recipe.Scoring.CalibrationSequences, recipe.Scoring.CalibrationLength, recipe.Scoring.Seed)
                .ScoreWith(recipe.Scoring)
                .ScoreAsync(run.Token).ConfigureAwait(false);
            string path = Path.Combine(dir, "scores.json");
            ImportanceScores.Combine(scores).Save(path);
            return new() { ["scores"] = path };
        }).ConfigureAwait(false);

        // 4. Plan.
        await run.StepAsync("plan", Hash(run.LastHash, DistillationRecipe.SectionJson(recipe.Plan)), async dir =>
        {
            ImportanceScores scores = ImportanceScores.Load(run.Output("scoring", "scores")!);
            PlanTargets targets = recipe.Plan;
            SurgeryPlan plan;
            try
            {
                plan = await surgeon.UseScores(scores).Plan(builder => targets.ApplyTo(builder, DistillationRecipe.PlanFieldName).WithDescription("recipe")).PlanAsync(run.Token).ConfigureAwait(false);
            }
            catch (ArgumentException ex)
            {
                throw new InvalidDataException(ex.Message, ex);
            }

            string path = Path.Combine(dir, "plan.json");
            plan.Save(path);
            return new() { ["plan"] = path, ["student_parameters"] = Invariant(plan.ParameterCount.Total), ["teacher_parameters"] = Invariant(LlamaTensorLayout.CountParameters(surgeon.Teacher).Total) };
        }).ConfigureAwait(false);

        // 5. Build.
        await run.StepAsync("build", Hash(run.LastHash, DistillationRecipe.SectionJson(recipe.Build)), async dir =>
        {
            SurgeryPlan plan = SurgeryPlan.Load(run.Output("plan", "plan")!);
            string student = Path.Combine(dir, "student");
            // The student gets the tokenizer the data was tokenized with (a teacher may be saved without one).
            string? tokenizer = run.Output("data", "tokenizer");
            SurgeryResult built = await surgeon.UsePlan(plan)
                .WriteWith(recipe.Build with { Tokenizer = recipe.Build.Tokenizer is { } own ? recipe.Resolve(own) : tokenizer is not null && Directory.Exists(tokenizer) && TokenizerFiles.IsInFolder(tokenizer) ? tokenizer : null })
                .BuildAsync(student, run.Token).ConfigureAwait(false);
            return new() { ["student"] = built.Student.Directory };
        }).ConfigureAwait(false);

        // 6. Distillation: resumable, so an interrupted run continues from its last checkpoint.
        DistillationOptions d = recipe.Distillation;
        await run.StepAsync("distillation", Hash(run.LastHash, DistillationRecipe.SectionJson(d)), async (dir, resume) =>
        {
            StudentPipelineResult distilled = await StudentPipeline.ForStudent(run.Output("build", "student")!)
                .DistilledFrom(effectiveTeacher)
                .Distill(tokensPath, d with { TeacherCache = Resolved(recipe, d.TeacherCache), HiddenStatePlan = Resolved(recipe, d.HiddenStatePlan) }, dir)
                .RunWith(new CheckpointTrainingSettings { Resume = resume })
                .ReportTo(Relay<PipelineProgress>(run, "distillation"))
                .LogTo(logger)
                .RunAsync(run.Token).ConfigureAwait(false);
            return new()
            {
                ["student"] = distilled.Student,
                ["final_loss"] = distilled.Training!.FinalLoss.ToString("F4", CultureInfo.InvariantCulture),
                ["metrics"] = Path.Combine(dir, "metrics.jsonl"),
            };
        }).ConfigureAwait(false);
        string studentCheckpoint = run.Output("distillation", "student")!;

        // 7. Evaluation: the section's paths are relative to the recipe.
        EvaluationSuite? e = recipe.Evaluation;
        string evaluationInputs = Hash(run.LastHash, DistillationRecipe.SectionJson(e), e is null ? string.Empty : string.Join('\n', e.Tasks.Values.Concat(e.Text).Select(p => FileStamp(recipe.Resolve(p)))));
        await run.StepAsync("evaluation", evaluationInputs, e is null ? null : async dir =>
        {
            StudentPipelineResult evaluated = await StudentPipeline.ForStudent(studentCheckpoint)
                .DistilledFrom(effectiveTeacher)
                .Evaluate(e with { Tasks = e.Tasks.ToDictionary(t => t.Key, t => recipe.Resolve(t.Value)), Text = [.. e.Text.Select(recipe.Resolve)] })
                .ReportTo(Relay<PipelineProgress>(run, "evaluation"))
                .LogTo(logger)
                .RunAsync(run.Token).ConfigureAwait(false);
            EvaluationReport report = evaluated.Report!;
            string markdown = Path.Combine(dir, "report.md");
            string json = Path.Combine(dir, "report.json");
            report.WriteMarkdown(markdown);
            report.WriteJson(json);
            return new() { ["report"] = markdown, ["report_json"] = json };
        }).ConfigureAwait(false);

        // 8. A job for a distributed engine: the same student, teacher, tokens and settings, for many GPUs.
        RecipeExportJob? x = recipe.ExportJob;
        await run.StepAsync("export_job", Hash(run.LastHash, DistillationRecipe.SectionJson(x)), x is null ? null : async dir =>
        {
            string jobStudent = x.Student == RecipeExportJob.DistilledStudent ? studentCheckpoint : run.Output("build", "student")!;
            TrainingOptions local = d.ToTrainingOptions(dir);
            var options = new Export.JobExportOptions
            {
                Engine = Export.DistributedEngines.Parse(x.Engine),
                StudentDirectory = jobStudent,
                TeacherDirectory = effectiveTeacher,
                TokensPath = tokensPath,
                OutputDirectory = Path.Combine(dir, "job"),
                Training = local with
                {
                    // The job's own length, else the distillation's (a step count or a token budget).
                    Steps = x.Tokens is null ? x.Steps ?? local.Steps : null,
                    Tokens = x.Tokens ?? (x.Steps is null ? local.Tokens : null),
                    Precision = x.Precision,
                },
                Distillation = d.ToSettings(recipe.Resolve) with { TeacherDType = TorchSharp.torch.ScalarType.BFloat16 },
                Nodes = x.Nodes,
                GpusPerNode = x.GpusPerNode,
                GlobalBatchWindows = x.GlobalBatch,
                MicroBatchSize = x.MicroBatch,
                Force = true,
            };
            Export.ExportedJob job;
            try
            {
                job = await Export.JobExporter.ExportAsync(options, Relay<Export.JobExportProgress>(run, "export_job"), logger, run.Token).ConfigureAwait(false);
            }
            catch (Export.JobExportException ex)
            {
                throw new InvalidDataException($"export_job: {ex.Message}", ex);
            }

            return new()
            {
                ["job"] = job.Directory,
                ["world_size"] = Invariant(job.WorldSize),
                ["total_steps"] = Invariant(job.TotalSteps),
                ["launch"] = job.LaunchCommand,
            };
        }).ConfigureAwait(false);

        string? table = run.Output("evaluation", "report") is string reportPath ? File.ReadAllText(reportPath) : null;
        return new RecipeSummary(work, run.Results, table, studentCheckpoint);
    }

    /// <summary>
    /// The tokenizer named by <c>data.tokenizer</c> (else the teacher's) as a folder holding tokenizer.json or
    /// tokenizer.model: a tiktoken vocabulary (a .tiktoken file, a folder holding one, or the built-in gpt2) is written
    /// as a Hugging Face tokenizer.json into <paramref name="scratch"/>, so it travels into every checkpoint and evaluation
    /// can load it. Null when the teacher folder already holds a loadable tokenizer and none was named.
    /// </summary>
    private static string? SourceTokenizer(DistillationRecipe recipe, string teacher, string scratch)
    {
        string? spec = recipe.Data.Tokenizer;
        if (spec is null && TokenizerFiles.IsInFolder(teacher))
        {
            return null;
        }

        string resolved = spec is null ? teacher : recipe.Resolve(spec);
        TiktokenVocabulary? tiktoken = null;
        if (Directory.Exists(resolved))
        {
            if (TokenizerFiles.IsInFolder(resolved))
            {
                return resolved;
            }

            string[] files = Directory.GetFiles(resolved, "*.tiktoken");
            if (files.Length != 1)
            {
                throw new InvalidDataException($"data.tokenizer: {resolved} holds no tokenizer.json, tokenizer.model or single .tiktoken file.");
            }

            tiktoken = TiktokenVocabulary.Load(files[0]);
        }
        else if (File.Exists(resolved))
        {
            if (!resolved.EndsWith(".tiktoken", StringComparison.OrdinalIgnoreCase))
            {
                return resolved;
            }

            tiktoken = TiktokenVocabulary.Load(resolved);
        }
        else if (string.Equals(spec, "gpt2", StringComparison.OrdinalIgnoreCase))
        {
            tiktoken = TiktokenVocabulary.LoadGpt2();
        }
        else
        {
            throw new InvalidDataException($"data.tokenizer: {resolved} is neither a tokenizer file or folder nor a built-in name (gpt2).");
        }

        Directory.CreateDirectory(scratch);
        HuggingFaceTokenizerJson.FromTiktoken(tiktoken).Save(Path.Combine(scratch, "tokenizer.json"));
        return scratch;
    }

    private static string? Resolved(DistillationRecipe recipe, string? path) => path is null ? null : recipe.Resolve(path);

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);

    private static string Hash(params string[] parts) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join("\n\u0001", parts))));

    private static string FileStamp(string path)
    {
        var info = new FileInfo(path);
        return info.Exists ? $"{path}|{info.Length}|{info.LastWriteTimeUtc.Ticks}" : $"{path}|missing";
    }

    private static string FolderStamp(string directory) =>
        string.Join('\n', Directory.EnumerateFiles(directory).Order(StringComparer.Ordinal).Select(FileStamp));

    private static string CorpusStamp(DistillationRecipe recipe) =>
        string.Join('\n', CorpusReader.ExpandPaths(recipe.Data.Corpus.Select(recipe.Resolve)).Select(FileStamp));

    /// <summary>Passes a stage's reports on as the step's, with the stage's own count, total, unit and status.</summary>
    private static SynchronousProgress<T> Relay<T>(Run run, string step)
        where T : IProgressReport =>
        new(value => run.Progress?.Report(new RecipeProgress(step, value.Status ?? step, value.Completed, value.Total, value.Unit)));

    /// <summary>Marks a finished step: what went in and what came out.</summary>
    private sealed record StepRecord(string Name, string InputsHash, DateTimeOffset FinishedAt, double Seconds, Dictionary<string, string> Outputs);

    /// <summary>Remembers each step's outcome and whether a later step must run because an earlier one did.</summary>
    private sealed class Run(DistillationRecipe recipe, string work, IProgress<RecipeProgress>? progress, ILogger logger, CancellationToken token)
    {
        private readonly Dictionary<string, StepRecord> _records = [];
        private bool _rerunRest;

        public IProgress<RecipeProgress>? Progress { get; } = progress;

        public CancellationToken Token { get; } = token;

        public List<RecipeStepResult> Results { get; } = [];

        public string LastHash { get; private set; } = Hash(recipe.Teacher);

        public string? Output(string step, string key) =>
            _records.TryGetValue(step, out StepRecord? record) && record.Outputs.TryGetValue(key, out string? value) ? value : null;

        public Task StepAsync(string name, string inputsHash, Func<string, Task<Dictionary<string, string>>>? body) =>
            StepAsync(name, inputsHash, body is null ? null : (dir, _) => body(dir), resumable: false);

        public Task StepAsync(string name, string inputsHash, Func<string, bool, Task<Dictionary<string, string>>> body) =>
            StepAsync(name, inputsHash, body, resumable: true);

        private async Task StepAsync(string name, string inputsHash, Func<string, bool, Task<Dictionary<string, string>>>? body, bool resumable)
        {
            Token.ThrowIfCancellationRequested();
            int index = StepNames.ToList().IndexOf(name) + 1;
            string dir = Path.Combine(work, $"{index:D2}-{name}");
            LastHash = inputsHash;
            if (body is null)
            {
                if (Directory.Exists(dir))
                {
                    Directory.Delete(dir, recursive: true);
                    _rerunRest = true;
                }

                Results.Add(new RecipeStepResult(name, dir, RecipeStepStatus.NotInRecipe, TimeSpan.Zero, inputsHash, new Dictionary<string, string>()));
                Progress?.Report(new RecipeProgress(name, "not in the recipe", 1, 1, ProgressUnit.Steps, StepFinished: true));
                return;
            }

            string stepFile = Path.Combine(dir, StepFileName);
            if (!_rerunRest && File.Exists(stepFile))
            {
                StepRecord? done = JsonSerializer.Deserialize<StepRecord>(File.ReadAllText(stepFile), StepJson);
                if (done is not null && done.InputsHash == inputsHash)
                {
                    _records[name] = done;
                    Results.Add(new RecipeStepResult(name, dir, RecipeStepStatus.Skipped, TimeSpan.Zero, inputsHash, done.Outputs));
                    Progress?.Report(new RecipeProgress(name, "skipped (finished earlier, inputs unchanged)", 1, 1, ProgressUnit.Steps, StepFinished: true));
                    RecipeLog.Skipped(logger, name);
                    return;
                }
            }

            // A resumable step keeps its partial folder when it was started with the same inputs and nothing before it ran again.
            string startedFile = Path.Combine(dir, StartedFileName);
            bool resume = resumable && !_rerunRest && !File.Exists(stepFile) && File.Exists(startedFile) && File.ReadAllText(startedFile).Trim() == inputsHash;
            if (!resume && Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }

            _rerunRest = true;
            Directory.CreateDirectory(dir);
            AtomicFile.WriteAllText(startedFile, inputsHash);
            Progress?.Report(new RecipeProgress(name, resume ? "resuming" : "started", 0, null, ProgressUnit.Steps));
            RecipeLog.Started(logger, name, dir, resume);
            var clock = Stopwatch.StartNew();
            Dictionary<string, string> outputs = await body(dir, resume).ConfigureAwait(false);
            var record = new StepRecord(name, inputsHash, DateTimeOffset.UtcNow, clock.Elapsed.TotalSeconds, outputs);
            AtomicFile.WriteAllText(stepFile, JsonSerializer.Serialize(record, StepJson));
            _records[name] = record;
            Results.Add(new RecipeStepResult(name, dir, resume ? RecipeStepStatus.Resumed : RecipeStepStatus.Ran, clock.Elapsed, inputsHash, outputs));
            Progress?.Report(new RecipeProgress(name, string.Create(CultureInfo.InvariantCulture, $"{(resume ? "resumed, done" : "done")} in {clock.Elapsed.TotalSeconds:F1} s"), 1, 1, ProgressUnit.Steps, StepFinished: true));
        }
    }

}

/// <summary>Log messages of <see cref="RecipeRunner"/>.</summary>
internal static partial class RecipeLog
{
    [LoggerMessage(Level = LogLevel.Information, Message = "recipe step {Step}: finished earlier with the same inputs, skipped")]
    public static partial void Skipped(ILogger logger, string step);

    [LoggerMessage(Level = LogLevel.Information, Message = "recipe step {Step} in {Directory} (resume: {Resume})")]
    public static partial void Started(ILogger logger, string step, string directory, bool resume);
}
