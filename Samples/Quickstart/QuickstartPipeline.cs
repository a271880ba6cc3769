using System.Diagnostics;
using System.Globalization;
using System.Text;
using TorchSharp;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Generation;
using ModelSurgery.Inference.IO;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Samples;
using ModelSurgery.Surgery;
using ModelSurgery.Surgery.Building;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Surgery.Scoring.Reports;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Distillation;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Quickstart;

/// <summary>One model's row of the quickstart's results.</summary>
/// <param name="Name">teacher, inherited or random.</param>
/// <param name="Parameters">All parameters.</param>
/// <param name="NonEmbeddingParameters">Parameters outside the embedding and head.</param>
/// <param name="BrownBitsPerByte">Bits per byte on held-out Brown documents.</param>
/// <param name="BrownPerplexity">Token perplexity on held-out Brown documents.</param>
/// <param name="HeldoutBitsPerByte">Bits per byte on heldout.jsonl (other sources than Brown).</param>
/// <param name="HeldoutPerplexity">Token perplexity on heldout.jsonl.</param>
/// <param name="ValidationLoss">Cross-entropy on the held-out Brown windows at the end of training.</param>
/// <param name="Sample">Text generated from the sample prompt.</param>
public sealed record QuickstartModelResult(
    string Name, long Parameters, long NonEmbeddingParameters, double BrownBitsPerByte, double BrownPerplexity,
    double HeldoutBitsPerByte, double HeldoutPerplexity, double ValidationLoss, string Sample);

/// <summary>What a quickstart run produced.</summary>
/// <param name="OutputDir">The output folder.</param>
/// <param name="Models">Teacher, inherited student, random student.</param>
/// <param name="TeacherFromCache">Whether the teacher was loaded from the cache instead of trained.</param>
/// <param name="ReportPath">The Markdown comparison table.</param>
/// <param name="Charts">Every PNG written.</param>
/// <param name="Elapsed">Wall time of the run.</param>
public sealed record QuickstartResult(
    string OutputDir, IReadOnlyList<QuickstartModelResult> Models, bool TeacherFromCache, string ReportPath, IReadOnlyList<string> Charts, TimeSpan Elapsed)
{
    /// <summary>The row of <paramref name="name"/>.</summary>
    public QuickstartModelResult this[string name] => Models.First(m => m.Name == name);
}

/// <summary>
/// The quickstart: compress GPT-2's vocabulary to Brown, train (or load) a small teacher, score it, cut a student a quarter
/// of its size, distil it and compare it with a randomly initialised student of the same shape.
/// </summary>
public static class QuickstartPipeline
{
    /// <summary>Name of the teacher's model row.</summary>
    public const string TeacherName = "teacher";

    /// <summary>Name of the inherited (and distilled) student's row.</summary>
    public const string InheritedName = "inherited";

    /// <summary>Name of the randomly initialised student's row.</summary>
    public const string RandomName = "random";

    /// <summary>File in the teacher folder that says what the cached teacher was trained with.</summary>
    public const string TeacherManifestFileName = TeacherCache.ManifestFileName;

    private const string BrownTask = "brown_heldout";
    private const string HeldoutTask = "heldout_jsonl";
    private const string SamplePrompt = "The jury said that";
    private const ulong Seed = 1234;

    /// <summary>Runs every step, printing headers, timings and the final table to <paramref name="output"/>.</summary>
    /// <exception cref="FileNotFoundException">brown.jsonl or heldout.jsonl is missing from the data folder.</exception>
    public static async Task<QuickstartResult> RunAsync(QuickstartOptions options, TextWriter output, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(output);
        var total = Stopwatch.StartNew();
        QuickstartSizes sizes = options.Sizes;
        if (options.Threads is int threads)
        {
            torch.set_num_threads(threads);
        }

        string outDir = Path.GetFullPath(options.ResolvedOutputDir);
        string dataOut = Path.Combine(outDir, "data");
        Directory.CreateDirectory(dataOut);
        var log = new StepLog(output);
        output.WriteLine($"ModelSurgery quickstart ({(options.Fast ? "fast" : "full")} sizes) -> {outDir}");

        // 1. Data --------------------------------------------------------------------------------------------------
        log.Step("1. Data: Brown Corpus, GPT-2 tokenizer, vocabulary compression");
        DataSet data = await PrepareDataAsync(options, sizes, dataOut, log, cancellationToken).ConfigureAwait(false);
        using PreparedCorpus corpus = data.Corpus;

        // 2. Teacher -----------------------------------------------------------------------------------------------
        log.Step("2. Teacher: a small Llama trained from scratch on Brown");
        LlamaConfig teacherConfig = corpus.ModelConfig(sizes.TeacherLayers, sizes.TeacherHidden, sizes.TeacherHeads, sizes.TeacherKvHeads, sizes.TeacherFfn);
        string teacherDir = Path.GetFullPath(options.ResolvedTeacherDir);
        TrainingOptions teacherTraining = TrainingFor(sizes, sizes.TeacherTokens, sizes.BatchSize, learningRate: 3e-3, Path.Combine(outDir, "runs", TeacherName));
        (IReadOnlyList<StepRecord> teacherHistory, IReadOnlyList<EvalRecord> teacherEvaluations, bool fromCache) = await EnsureTeacherAsync(
            options, teacherConfig, teacherTraining, data, teacherDir, log, cancellationToken).ConfigureAwait(false);

        // 3. Surgery -----------------------------------------------------------------------------------------------
        log.Step("3. Surgery: score the teacher, plan a quarter-size student, build it from the teacher's files");
        var calibration = CalibrationData.FromTokenStream(data.Corpus.TrainSample, sizes.CalibrationSequences, sizes.SeqLen, seed: 7);
        Surgeon surgeon = Surgeon.ForTeacher(teacherDir)
            .CalibrateOn(calibration)
            .ScoreWith(new ScoringOptions { Metrics = [ScoringMetrics.Activation, ScoringMetrics.BlockInfluence], BatchSize = 8 });
        IReadOnlyList<ImportanceScores> scored = await surgeon.ScoreAsync(cancellationToken).ConfigureAwait(false);
        ImportanceScores blockInfluence = scored[1];

        // Widths by activation (it scores no layers), layers by block influence: the one score set the plan is made from.
        ImportanceScores scores = ImportanceScores.Combine(scored);
        scores.Save(Path.Combine(outDir, "scores.json"));
        string heatMap = Path.Combine(outDir, "scores-heads.png");
        scores.DrawHeadHeatMap(heatMap);
        string layerCurves = Path.Combine(outDir, "scores-layers.png");
        scores.DrawLayerCurves(layerCurves);
        log.Info($"scored {calibration.SequenceCount} x {calibration.SequenceLength} calibration tokens (activation, block influence)");
        log.Info($"block influence per layer: {string.Join(" ", blockInfluence.Layers!.Select(v => v.ToString("F3", CultureInfo.InvariantCulture)))}");

        var shape = new StudentShape(sizes.StudentLayers, sizes.StudentHidden, sizes.StudentFfn, sizes.StudentHeads, sizes.StudentKvHeads, teacherConfig.VocabSize);
        surgeon = surgeon.UseScores([.. scored])
            .Plan(builder => builder.WithDescription("quickstart: layers by block influence, widths by activation").WithShape(shape, LayerSelection.TopScores));
        SurgeryPlan plan = await surgeon.PlanAsync(cancellationToken).ConfigureAwait(false);
        string planPath = Path.Combine(outDir, "plan.json");
        plan.Save(planPath);
        ParameterCount teacherCount = LlamaTensorLayout.CountParameters(teacherConfig);
        ParameterCount studentCount = plan.ParameterCount;
        log.Info($"teacher L{teacherConfig.NumHiddenLayers} D{teacherConfig.HiddenSize} H{teacherConfig.NumAttentionHeads}/KV{teacherConfig.NumKeyValueHeads} FFN{teacherConfig.IntermediateSize}: {Count(teacherCount.NonEmbedding)} non-embedding parameters");
        log.Info($"student {shape}: {Count(studentCount.NonEmbedding)} non-embedding parameters ({(double)studentCount.NonEmbedding / teacherCount.NonEmbedding:P0} of the teacher)");
        log.Info($"kept teacher layers {string.Join(", ", plan.Layers.Select(l => l.TeacherLayer))} (position prior would keep {string.Join(", ", PlanBuilder.PositionPriorLayers(teacherConfig.NumHiddenLayers, sizes.StudentLayers))})");
        string inheritedDir = Path.Combine(outDir, "student-inherited");
        StudentBuildResult built = (await surgeon.UsePlan(plan).BuildAsync(inheritedDir, cancellationToken).ConfigureAwait(false)).Student;
        log.Info($"built {inheritedDir} ({built.BytesRead / 1024} KiB read, {built.BytesWritten / 1024} KiB written); heat map {Path.GetFileName(heatMap)}");
        log.Done();

        // 4. Train -------------------------------------------------------------------------------------------------
        // Both students through the library's pipeline, on the token file PreparedCorpus wrote: its description records
        // where the held-out Brown documents start, so the runs train and validate on the windows the teacher did.
        log.Step($"4. Train both students on {Count(sizes.StudentTokens)} tokens: inherited + distilled vs random init + cross-entropy");
        string tokensPath = data.Corpus.Tokens.Path;
        IReadOnlyList<string> evaluationText = [data.EvalBrownPath, data.EvalHeldoutPath];
        var suite = new EvaluationSuite { Text = evaluationText, MaxLength = sizes.SeqLen, BatchSize = 8, IncludeTeacher = true };
        ModelFolderTokenizer.CopyInto(teacherDir, inheritedDir, plan.Student);
        DistillationOptions distillation = StudentStage(new DistillationOptions { KdLoss = DistillationDivergence.ForwardKl, Temperature = 1.0, Alpha = 0.5 }, sizes);
        (StudentPipelineResult inheritedRun, double inheritedSeconds) = await RunStudentAsync(
            StudentPipeline.ForStudent(inheritedDir).DistilledFrom(teacherDir).Distill(tokensPath, distillation, Path.Combine(outDir, "runs", InheritedName)).Evaluate(suite),
            distillation, log, InheritedName, cancellationToken).ConfigureAwait(false);

        // The control: the student's shape with random weights, saved as a checkpoint for the pipeline to train.
        string randomDir = Path.Combine(outDir, "student-random");
        using (var initial = new LlamaForCausalLM(plan.Student))
        {
            initial.InitializeWeights((long)Seed);
            await ModelCheckpoint.SaveAsync(initial, randomDir, cancellationToken: cancellationToken).ConfigureAwait(false);
        }

        ModelFolderTokenizer.CopyInto(teacherDir, randomDir, plan.Student);
        TrainingStageOptions training = StudentStage(new TrainingStageOptions(), sizes);
        (StudentPipelineResult randomRun, double randomSeconds) = await RunStudentAsync(
            StudentPipeline.ForStudent(randomDir).Train(tokensPath, training, Path.Combine(outDir, "runs", RandomName)).Evaluate(suite with { IncludeTeacher = false }),
            training, log, RandomName, cancellationToken).ConfigureAwait(false);
        TrainingResult inheritedTraining = inheritedRun.Training!.Runs[0];
        TrainingResult randomTraining = randomRun.Training!.Runs[0];

        // Curves over tokens seen. The inherited student's training loss is the distillation objective (0.5 CE + 0.5 KL),
        // which is not a cross-entropy: it gets a chart of its own, and the cross-entropy charts compare like with like.
        long studentTokensPerStep = (long)sizes.StudentBatchSize * sizes.SeqLen;
        string lossCurves = Path.Combine(outDir, "loss-curves.png");
        Charts.Save(LossCurves(teacherHistory, randomTraining.History, teacherTraining.TokensPerStep, studentTokensPerStep), lossCurves);
        string objectiveCurve = Path.Combine(outDir, "distillation-objective.png");
        Charts.Save(ObjectiveCurve(inheritedTraining.History, studentTokensPerStep), objectiveCurve);
        string validationCurves = Path.Combine(outDir, "validation-curves.png");
        var validation = new List<LineSeries>();
        if (teacherEvaluations.Count > 0)
        {
            validation.Add(Curve("teacher", teacherEvaluations.Select(e => (e.Step, e.ValidationLoss)), teacherTraining.TokensPerStep));
        }

        validation.Add(Curve("inherited student", inheritedTraining.Evaluations.Select(e => (e.Step, e.ValidationLoss)), studentTokensPerStep));
        validation.Add(Curve("random student", randomTraining.Evaluations.Select(e => (e.Step, e.ValidationLoss)), studentTokensPerStep));
        Charts.Lines(validationCurves, "Validation cross-entropy on held-out Brown", "tokens", "loss", validation);
        log.Info($"loss curves {Path.GetFileName(lossCurves)}, {Path.GetFileName(objectiveCurve)}, {Path.GetFileName(validationCurves)}");
        log.Done();

        // 5. Evaluate ----------------------------------------------------------------------------------------------
        // The pipelines evaluated the teacher and each trained student (the tasks are named after the files, the prefix
        // is the models' BOS, the separator); the text samples are inference, generated here from the saved checkpoints.
        log.Step("5. Evaluate: bits per byte and perplexity on held-out Brown and on heldout.jsonl");
        if (inheritedRun.Evaluations.Count != 2 || randomRun.Evaluations.Count != 1)
        {
            throw new InvalidOperationException($"{teacherDir}: the teacher folder holds no tokenizer, so the pipeline did not evaluate it.");
        }

        var evaluations = new List<ModelEvaluation>
        {
            inheritedRun.Evaluations[0] with { ModelName = TeacherName },
            inheritedRun.Evaluations[1] with { ModelName = InheritedName },
            randomRun.Evaluations[0] with { ModelName = RandomName },
        };
        log.Info($"evaluated with the training runs: {inheritedSeconds:F1} s (teacher and inherited), {randomSeconds:F1} s (random), training included");
        var rows = new List<QuickstartModelResult>();
        foreach ((ModelEvaluation evaluation, string directory, double validationLoss) in new[]
        {
            (evaluations[0], teacherDir, teacherEvaluations.Count == 0 ? double.NaN : teacherEvaluations[^1].ValidationLoss),
            (evaluations[1], inheritedRun.Student, LastValidation(inheritedTraining)),
            (evaluations[2], randomRun.Student, LastValidation(randomTraining)),
        })
        {
            using LlamaForCausalLM model = ModelCheckpoint.Load(directory);
            model.eval();
            string sample = await GenerateAsync(model, data.Tokenizer, sizes.SampleTokens, cancellationToken).ConfigureAwait(false);
            ParameterCount count = LlamaTensorLayout.CountParameters(model.Config);
            rows.Add(new QuickstartModelResult(
                evaluation.ModelName, count.Total, count.NonEmbedding,
                evaluation[BrownTask]!.Metrics[MetricNames.BitsPerByte].Value, evaluation[BrownTask]!.Metrics[MetricNames.TokenPerplexity].Value,
                evaluation[HeldoutTask]!.Metrics[MetricNames.BitsPerByte].Value, evaluation[HeldoutTask]!.Metrics[MetricNames.TokenPerplexity].Value,
                validationLoss, sample));
            log.Info($"{evaluation.ModelName,-9} brown {rows[^1].BrownBitsPerByte:F3} bpb, heldout {rows[^1].HeldoutBitsPerByte:F3} bpb");
        }

        var report = new EvaluationReport(evaluations, TeacherName);
        string reportPath = Path.Combine(outDir, "report.md");
        string summary = Summary(rows, data, sizes, fromCache);
        AtomicFile.WriteAllText(reportPath, summary + "\n## Evaluation (EvaluationReport)\n\n" + report.ToMarkdown());
        report.WriteJson(Path.Combine(outDir, "report.json"));
        string brownChart = Path.Combine(outDir, "comparison-brown.png");
        report.WriteBarChart(brownChart, BrownTask, MetricNames.BitsPerByte);
        string heldoutChart = Path.Combine(outDir, "comparison-heldout.png");
        report.WriteBarChart(heldoutChart, HeldoutTask, MetricNames.BitsPerByte);
        log.Done();

        output.WriteLine();
        output.WriteLine(summary);
        output.WriteLine("Samples (prompt: \"" + SamplePrompt + "\"):");
        foreach (QuickstartModelResult row in rows)
        {
            output.WriteLine($"  {row.Name,-9} {SamplePrompt}{row.Sample.ReplaceLineEndings(" ")}");
        }

        output.WriteLine();
        output.WriteLine($"Wrote {reportPath}, charts and checkpoints under {outDir}");
        output.WriteLine($"Total {total.Elapsed.TotalSeconds:F1} s{(fromCache ? " (teacher from cache; --fresh retrains it)" : string.Empty)}");
        return new QuickstartResult(outDir, rows, fromCache, reportPath, [heatMap, layerCurves, lossCurves, objectiveCurve, validationCurves, brownChart, heldoutChart], total.Elapsed);
    }

    private sealed record DataSet(PreparedCorpus Corpus, string EvalBrownPath, string EvalHeldoutPath)
    {
        public ModelTokenizer Tokenizer => Corpus.Tokenizer;

        public VocabularyMap Map => Corpus.Map;

        public int SeparatorId => Corpus.SeparatorId;
    }

    private static async Task<DataSet> PrepareDataAsync(QuickstartOptions options, QuickstartSizes sizes, string dataOut, StepLog log, CancellationToken cancellationToken)
    {
        string dataDir = options.ResolvedDataDir;
        string brown = Path.Combine(dataDir, "brown.jsonl");
        string heldout = Path.Combine(dataDir, "heldout.jsonl");
        foreach (string input in new[] { brown, heldout })
        {
            if (!File.Exists(input))
            {
                throw new FileNotFoundException($"{input}: sample text not found; pass --data with the folder holding brown.jsonl and heldout.jsonl.", input);
            }
        }

        // Every tenth Brown document is held out: the trainer validates on it and the evaluation reads it as text.
        var split = CorpusSplit.Create(brown, dataOut, holdOutEvery: 10, maxDocuments: sizes.BrownDocuments);
        // An evaluation suite names a text task after its file.
        string evalBrown = Path.Combine(dataOut, BrownTask + ".jsonl");
        string evalHeldout = Path.Combine(dataOut, HeldoutTask + ".jsonl");
        CorpusSplit.WriteFirstDocuments(split.HeldOutPath, evalBrown, sizes.EvalBrownDocuments);
        CorpusSplit.WriteFirstDocuments(heldout, evalHeldout, sizes.EvalHeldoutDocuments);
        log.Info($"{split.TrainDocuments} Brown documents for training, {split.HeldOutDocuments} held out; evaluating {sizes.EvalBrownDocuments} of them and {sizes.EvalHeldoutDocuments} heldout.jsonl documents");

        VocabularyStatistics statistics = await PreparedCorpus.CountTokensAsync(split, cancellationToken: cancellationToken).ConfigureAwait(false);
        statistics.Save(Path.Combine(dataOut, "gpt2-brown-stats.json"));
        log.Info($"GPT-2 tokens in Brown (train): {Count(statistics.TotalTokens)} ({statistics.DistinctTokensSeen} distinct of {statistics.VocabSize}); {statistics.SizeForCoverage(0.98)} tokens cover 98%");

        var preparation = new CorpusPreparationOptions { VocabSize = sizes.VocabSize, SeqLen = sizes.SeqLen, SampleTokens = sizes.CalibrationSequences * sizes.SeqLen * 8 };
        PreparedCorpus corpus = await PreparedCorpus.PrepareAsync(split, statistics, preparation, dataOut, cancellationToken).ConfigureAwait(false);
        statistics.SaveCoverageChart(Path.Combine(dataOut, "vocabulary-coverage.png"), corpus.Map.NewVocabSize, corpus.Compression.Selection.Coverage);
        log.Info($"vocabulary {corpus.Map.OldVocabSize} -> {corpus.Map.NewVocabSize} tokens, covering {corpus.Compression.Selection.Coverage:P2} of Brown's tokens ({corpus.Compression.TokenizerPath})");
        log.Info($"{Count(corpus.Tokens.Count)} tokens with the compressed tokenizer: {corpus.TrainWindows.Count} training and {corpus.ValidationWindows.Count} validation windows of {sizes.SeqLen}");
        log.Done();
        return new DataSet(corpus, evalBrown, evalHeldout);
    }

    private static double LastValidation(TrainingResult run) => run.Evaluations.Count == 0 ? double.NaN : run.Evaluations[^1].ValidationLoss;

    private static async Task<(IReadOnlyList<StepRecord> History, IReadOnlyList<EvalRecord> Evaluations, bool FromCache)> EnsureTeacherAsync(
        QuickstartOptions options, LlamaConfig config, TrainingOptions training, DataSet data, string teacherDir, StepLog log, CancellationToken cancellationToken)
    {
        // The cache is valid only for the same architecture, vocabulary and training budget. The teacher stays on the
        // in-memory trainer (TeacherCache), unlike the students: its fingerprint is of these TrainingOptions, so moving it
        // to the pipeline's stage options would invalidate every cached teacher for no change in what is trained.
        log.Info($"{Count(LlamaTensorLayout.CountParameters(config).Total)} parameters, {Count(training.Tokens ?? 0)} tokens in {training.TotalSteps()} steps of {training.BatchSize} x {training.SeqLen} (unless cached)");
        CachedTeacher teacher = await TeacherCache.EnsureAsync(
            teacherDir, config, training, data.Corpus.TrainingData(), [data.Map.ToJson()], options.Fresh,
            TrainingProgressLog(log, TeacherName, training.TotalSteps()), tokenizer: data.Corpus.Compression.TokenizerPath, cancellationToken: cancellationToken).ConfigureAwait(false);
        log.Info(teacher.FromCache
            ? $"using the cached teacher in {teacherDir} (trained in {teacher.TrainSeconds:F0} s; --fresh retrains it)"
            : $"trained in {teacher.TrainSeconds:F1} s, final validation loss {teacher.FinalValidationLoss:F3}; saved to {teacherDir}");
        log.Done();
        return (teacher.History, teacher.Evaluations, teacher.FromCache);
    }

    private static async Task<(StudentPipelineResult Result, double Seconds)> RunStudentAsync(
        StudentPipeline pipeline, TrainingStageOptions stage, StepLog log, string name, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        StudentPipelineResult result = await pipeline.ReportTo(TrainingProgressLog(log, name, stage.TotalSteps())).RunAsync(cancellationToken).ConfigureAwait(false);
        TrainingResult run = result.Training!.Runs[0];
        string best = run.BestValidationLoss is double b ? $", best validation loss {b:F3}" : string.Empty;
        log.Info($"{name}: {run.Steps} steps, final loss {run.FinalLoss:F3}{best}; trained and evaluated in {watch.Elapsed.TotalSeconds:F1} s ({result.Student})");
        return (result, watch.Elapsed.TotalSeconds);
    }

    // The students' schedule: the teacher's shape of schedule (TrainingFor) on the student budget, checkpointing only at the end.
    private static T StudentStage<T>(T stage, QuickstartSizes sizes)
        where T : TrainingStageOptions => stage with
    {
        LearningRate = 1e-3,
        MinLearningRate = 1e-3 / 10,
        WarmupFraction = 0.05,
        BatchSize = sizes.StudentBatchSize,
        SeqLen = sizes.SeqLen,
        Tokens = sizes.StudentTokens,
        EvalEvery = EvalEvery(sizes, sizes.StudentTokens, sizes.StudentBatchSize),
        EvalBatches = 4,
        Seed = Seed,
        CheckpointEvery = 0,
        // On the CPU like the teacher (TrainingFor): the models are tiny, and the table is the CPU's.
        Device = "cpu",
    };

    private static SynchronousProgress<TrainingProgress> TrainingProgressLog(StepLog log, string name, long total)
    {
        long every = Math.Max(1, total / 8);
        return new SynchronousProgress<TrainingProgress>(p =>
        {
            if (p.Completed % every == 0 || p.Completed == total)
            {
                string validation = p.ValidationLoss is double v ? $", validation {v:F3}" : string.Empty;
                log.Info($"{name} step {p.Completed}/{p.Total}: loss {p.Loss:F3}{validation}, {p.TokensPerSecond:F0} tokens/s");
            }
        });
    }

    private static TrainingOptions TrainingFor(QuickstartSizes sizes, long tokens, int batchSize, double learningRate, string outputDir) => new()
    {
        LearningRate = learningRate,
        MinLearningRate = learningRate / 10,
        WarmupFraction = 0.05,
        BatchSize = batchSize,
        SeqLen = sizes.SeqLen,
        Tokens = tokens,
        EvalEvery = EvalEvery(sizes, tokens, batchSize),
        EvalBatches = 4,
        Seed = Seed,
        OutputDir = outputDir,
        CheckpointEvery = int.MaxValue,
    };

    // Four validation passes per run.
    private static int EvalEvery(QuickstartSizes sizes, long tokens, int batchSize) => (int)Math.Max(1, tokens / ((long)batchSize * sizes.SeqLen) / 4);

    private static async Task<string> GenerateAsync(LlamaForCausalLM model, ModelTokenizer tokenizer, int maxNewTokens, CancellationToken cancellationToken)
    {
        int[] prompt = [.. tokenizer.Encode(SamplePrompt)];
        var generated = new List<int>();
        var generation = new GenerationOptions { MaxNewTokens = maxNewTokens, Temperature = 0.8, TopK = 40, Seed = 7 };
        await foreach (int id in TextGenerator.GenerateAsync(model, prompt, generation, cancellationToken).ConfigureAwait(false))
        {
            generated.Add(id);
        }

        return tokenizer.Decode(generated);
    }

    private static string Summary(IReadOnlyList<QuickstartModelResult> rows, DataSet data, QuickstartSizes sizes, bool fromCache)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"## Quickstart results (vocabulary {data.Map.NewVocabSize}, context {sizes.SeqLen}; students trained on {Count(sizes.StudentTokens)} tokens each; teacher {(fromCache ? "cached" : "trained")} on {Count(sizes.TeacherTokens)})");
        text.AppendLine();
        text.AppendLine("| Model | Parameters | Non-embedding | Brown held-out bpb | Brown ppl | heldout.jsonl bpb | heldout.jsonl ppl | Validation loss |");
        text.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (QuickstartModelResult r in rows)
        {
            text.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.Name} | {Count(r.Parameters)} | {Count(r.NonEmbeddingParameters)} | {r.BrownBitsPerByte:F3} | {r.BrownPerplexity:F1} | {r.HeldoutBitsPerByte:F3} | {r.HeldoutPerplexity:F1} | {r.ValidationLoss:F3} |");
        }

        return text.ToString();
    }

    /// <summary>Training cross-entropy of the models trained with cross-entropy alone (teacher, random student).</summary>
    public static ScottPlot.Plot LossCurves(IEnumerable<StepRecord> teacher, IEnumerable<StepRecord> randomStudent, long teacherTokensPerStep, long studentTokensPerStep) =>
        Charts.LinesPlot("Training cross-entropy on Brown", "tokens", "cross-entropy (nats/token)",
        [
            Curve("teacher", teacher.Select(s => (s.Step, s.Loss)), teacherTokensPerStep),
            Curve("random student", randomStudent.Select(s => (s.Step, s.Loss)), studentTokensPerStep),
        ]);

    /// <summary>The inherited student's training objective, apart: it mixes cross-entropy with a KL term.</summary>
    public static ScottPlot.Plot ObjectiveCurve(IEnumerable<StepRecord> inherited, long studentTokensPerStep) =>
        Charts.LinesPlot("Inherited student: distillation objective on Brown", "tokens", "0.5 cross-entropy + 0.5 KL(teacher || student)",
        [
            Curve("inherited student (distillation objective)", inherited.Select(s => (s.Step, s.Loss)), studentTokensPerStep),
        ]);

    private static LineSeries Curve(string label, IEnumerable<(long Step, double Loss)> points, long tokensPerStep)
    {
        (long Step, double Loss)[] all = [.. points];
        return new(label, [.. all.Select(p => (double)(p.Step * tokensPerStep))], [.. all.Select(p => p.Loss)]);
    }

    private static string Count(long n) => n switch
    {
        >= 1_000_000 => (n / 1e6).ToString("F2", CultureInfo.InvariantCulture) + "M",
        >= 1_000 => (n / 1e3).ToString("F1", CultureInfo.InvariantCulture) + "K",
        _ => n.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>Step headers with their wall time.</summary>
    private sealed class StepLog(TextWriter output)
    {
        private readonly Stopwatch _step = new();

        public void Step(string title)
        {
            output.WriteLine();
            output.WriteLine($"== {title}");
            _step.Restart();
        }

        public void Info(string line) => output.WriteLine($"   [{_step.Elapsed.TotalSeconds,6:F1} s] {line}");

        public void Done() => output.WriteLine($"   done in {_step.Elapsed.TotalSeconds:F1} s");
    }
}
