using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Samples;
using ModelSurgery.Surgery.Building;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Surgery.Scoring.Metrics;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training;
using ModelSurgery.Training.MultiRound;
using ModelSurgery.Training.Recipes;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Reproduction;

/// <summary>A point of a validation curve.</summary>
/// <param name="Tokens">Training tokens seen.</param>
/// <param name="ValidationLoss">Cross-entropy on the held-out Brown windows (nats per token).</param>
public sealed record CurvePoint(double Tokens, double ValidationLoss);

/// <summary>One trained and evaluated model.</summary>
/// <param name="Name">Row label, e.g. <c>inherited (taylor)</c>.</param>
/// <param name="Seed">Seed of initialisation and data order.</param>
/// <param name="Shape">Its shape, e.g. <c>L4 D96 H2/KV1 FFN192 V4096</c>.</param>
/// <param name="Parameters">All parameters.</param>
/// <param name="NonEmbeddingParameters">Parameters outside the embedding and head.</param>
/// <param name="TrainingTokens">Tokens trained on.</param>
/// <param name="ValidationLoss">Last validation cross-entropy (nats per token; comparable only within one vocabulary).</param>
/// <param name="BrownBitsPerByte">Bits per byte on the held-out Brown documents.</param>
/// <param name="HeldoutBitsPerByte">Bits per byte on heldout.jsonl (other sources).</param>
/// <param name="BrownDocuments">Per-document losses on held-out Brown (the bootstrap's unit).</param>
/// <param name="Curve">Validation loss over training tokens.</param>
/// <param name="Seconds">Wall time of training and evaluation.</param>
public sealed record ModelRun(
    string Name, int Seed, string Shape, long Parameters, long NonEmbeddingParameters, long TrainingTokens, double ValidationLoss,
    double BrownBitsPerByte, double HeldoutBitsPerByte, DocumentLosses BrownDocuments, IReadOnlyList<CurvePoint> Curve, double Seconds);

/// <summary>How the student's layers are chosen (ablation 2).</summary>
public enum LayerChoice
{
    /// <summary><see cref="PlanBuilder.KeepLayersByPositionPrior"/>: first and last kept, the middle thinned evenly.</summary>
    PositionPrior,

    /// <summary>The top layers of <see cref="PositionPriorMetric.LayerScores"/>: the first and last few, the middle dropped.</summary>
    Ends,

    /// <summary>The most influential layers by ShortGPT's Block Influence.</summary>
    BlockInfluence,

    /// <summary>The top layers of <see cref="UniformStrideMetric.LayerScores"/>: spread evenly.</summary>
    Uniform,

    /// <summary>The first N layers.</summary>
    FirstN,
}

/// <summary>Shared state of a reproduction run: data, teacher, scores, and the train-and-evaluate loop every ablation uses.</summary>
internal sealed class Lab : IDisposable
{
    /// <summary>Peak learning rate of students that start from inherited or random weights (ablations 1, 2, 5, 6).</summary>
    public const double StudentLearningRate = 2e-3;

    /// <summary>Peak learning rate of the from-scratch sweeps (ablations 3, 4) and the teacher.</summary>
    public const double ScratchLearningRate = 3e-3;

    /// <summary>Width metrics of ablation 1, in the paper's order (weakest first).</summary>
    public static readonly IReadOnlyList<string> WidthMetrics = [ScoringMetrics.L1, ScoringMetrics.L2, ScoringMetrics.Taylor, ScoringMetrics.LearnedMask];

    /// <summary>The width metric of ablations 2, 5 and 6 (a weight-only metric: nothing but the compared choice differs).</summary>
    public const string ReferenceMetric = ScoringMetrics.L2;

    private const string BrownTaskPrefix = "brown-";
    private const string HeldoutTask = "heldout_jsonl";
    private readonly Dictionary<string, ModelRun> _runs = [];
    private readonly Dictionary<string, ImportanceScores> _scores = [];
    private LlamaForCausalLM? _teacherModel;

    public Lab(ReproductionSizes sizes, string outputDir, RunLog log, CancellationToken cancellationToken)
    {
        Sizes = sizes;
        OutputDir = outputDir;
        Log = log;
        CancellationToken = cancellationToken;
    }

    public ReproductionSizes Sizes { get; }

    public string OutputDir { get; }

    public RunLog Log { get; }

    public CancellationToken CancellationToken { get; }

    public CorpusSplit Split { get; private set; } = null!;

    public VocabularyStatistics Statistics { get; private set; } = null!;

    public PreparedCorpus Corpus { get; private set; } = null!;

    public IReadOnlyList<string> EvalBrownPaths { get; private set; } = [];

    public string EvalHeldoutPath { get; private set; } = string.Empty;

    public LlamaConfig TeacherConfig { get; private set; } = null!;

    public CachedTeacher Teacher { get; private set; } = null!;

    public LlamaForCausalLM TeacherModel => _teacherModel ??= LoadTeacher();

    public StudentShape StudentShape => new(Sizes.StudentLayers, Sizes.StudentHidden, Sizes.StudentFfn, Sizes.StudentHeads, Sizes.StudentKvHeads, TeacherConfig.VocabSize);

    /// <summary>Splits Brown, counts GPT-2 tokens, compresses the vocabulary and writes the evaluation documents.</summary>
    public async Task PrepareDataAsync(string dataDir)
    {
        string brown = Path.Combine(dataDir, "brown.jsonl");
        string heldout = Path.Combine(dataDir, "heldout.jsonl");
        foreach (string input in new[] { brown, heldout })
        {
            if (!File.Exists(input))
            {
                throw new FileNotFoundException($"{input}: sample text not found; pass --data with the folder holding brown.jsonl and heldout.jsonl.", input);
            }
        }

        string dataOut = Path.Combine(OutputDir, "data");
        Split = CorpusSplit.Create(brown, dataOut, holdOutEvery: 10, maxDocuments: Sizes.BrownDocuments);
        Statistics = await PreparedCorpus.CountTokensAsync(Split, cancellationToken: CancellationToken).ConfigureAwait(false);
        Corpus = await PrepareVocabularyAsync(Sizes.VocabSize).ConfigureAwait(false);

        // Held-out Brown documents one file each: each is a bootstrap unit. heldout.jsonl in one file.
        string[] documents = [.. File.ReadLines(Split.HeldOutPath).Where(l => !string.IsNullOrWhiteSpace(l)).Take(Sizes.EvalBrownDocuments)];
        var paths = new List<string>();
        for (int d = 0; d < documents.Length; d++)
        {
            string path = Path.Combine(dataOut, "eval-brown", string.Create(CultureInfo.InvariantCulture, $"doc-{d:D2}.jsonl"));
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            Inference.IO.AtomicFile.WriteAllText(path, JsonSerializer.Serialize(new Dictionary<string, string> { ["text"] = Head(documents[d]) }) + "\n");
            paths.Add(path);
        }

        EvalBrownPaths = paths;
        EvalHeldoutPath = Path.Combine(dataOut, "eval-heldout.jsonl");
        CorpusSplit.WriteFirstDocuments(heldout, EvalHeldoutPath, Sizes.EvalHeldoutDocuments);
        Log.Info($"Brown: {Split.TrainDocuments} training documents ({Split.TrainTextBytes / 1024} KiB), {Split.HeldOutDocuments} held out; GPT-2 vocabulary -> {Corpus.Map.NewVocabSize} tokens ({Corpus.Compression.Selection.Coverage:P1} coverage), {Corpus.TrainTokens:N0} training tokens");
    }

    // The document's text up to the last space within the first EvalDocumentChars characters.
    private static string Head(string jsonLine)
    {
        using var document = JsonDocument.Parse(jsonLine);
        string text = document.RootElement.GetProperty("text").GetString() ?? string.Empty;
        if (text.Length <= ReproductionSizes.EvalDocumentChars)
        {
            return text;
        }

        int cut = text.LastIndexOf(' ', ReproductionSizes.EvalDocumentChars);
        return text[..(cut > 0 ? cut : ReproductionSizes.EvalDocumentChars)];
    }

    /// <summary>The corpus with another compressed vocabulary (ablation 3).</summary>
    public Task<PreparedCorpus> PrepareVocabularyAsync(int vocabSize) => PreparedCorpus.PrepareAsync(
        Split, Statistics,
        new CorpusPreparationOptions { VocabSize = vocabSize, SeqLen = Sizes.SeqLen, SampleTokens = Sizes.CalibrationSequences * Sizes.SeqLen * 4 },
        Path.Combine(OutputDir, "data", string.Create(CultureInfo.InvariantCulture, $"vocab-{vocabSize}")), CancellationToken);

    /// <summary>Trains the teacher, or loads it from the cache when nothing that decides it changed.</summary>
    public async Task EnsureTeacherAsync(string teacherDir, bool fresh)
    {
        TeacherConfig = Corpus.ModelConfig(Sizes.TeacherLayers, Sizes.TeacherHidden, Sizes.TeacherHeads, Sizes.TeacherKvHeads, Sizes.TeacherFfn);
        TrainingOptions training = Training("teacher", Sizes.TeacherTokens, Sizes.TeacherBatchSize, ScratchLearningRate, seed: 1234, evaluations: 4);
        ParameterCount count = LlamaTensorLayout.CountParameters(TeacherConfig);
        Log.Info($"teacher {StudentShape.Of(TeacherConfig)}: {count.Total:N0} parameters ({count.NonEmbedding:N0} non-embedding), {Sizes.TeacherTokens:N0} tokens");
        Teacher = await TeacherCache.EnsureAsync(
            teacherDir, TeacherConfig, training, Corpus.TrainingData(), [Corpus.Map.ToJson()], fresh,
            Progress("teacher", training.TotalSteps()), tokenizer: Corpus.Compression.TokenizerPath, cancellationToken: CancellationToken).ConfigureAwait(false);
        Log.Info(Teacher.FromCache
            ? $"teacher from the cache in {teacherDir} (trained in {Teacher.TrainSeconds:F0} s; --fresh retrains it), validation loss {Teacher.FinalValidationLoss:F3}"
            : $"teacher trained in {Teacher.TrainSeconds:F0} s, validation loss {Teacher.FinalValidationLoss:F3}");
    }

    /// <summary>Importance scores of the teacher by <paramref name="metric"/>; every metric the run needs is computed on the first call.</summary>
    public async Task<ImportanceScores> ScoresAsync(string metric)
    {
        if (_scores.Count == 0)
        {
            var watch = Stopwatch.StartNew();
            var calibration = CalibrationData.FromTokenStream(Corpus.TrainSample, Sizes.CalibrationSequences, Sizes.SeqLen, seed: 7);
            string[] metrics = [.. WidthMetrics, ScoringMetrics.BlockInfluence];
            IReadOnlyList<ImportanceScores> scored = await ImportanceScorer.ScoreAsync(
                Teacher.Directory, calibration,
                new ScoringOptions { Metrics = metrics, BatchSize = 8, MaskSteps = Sizes.MaskSteps, MaskTargetFraction = (double)Sizes.StudentFfn / Sizes.TeacherFfn },
                cancellationToken: CancellationToken).ConfigureAwait(false);
            for (int i = 0; i < metrics.Length; i++)
            {
                _scores[metrics[i]] = scored[i];
                scored[i].Save(Path.Combine(OutputDir, "scores", metrics[i] + ".json"));
            }

            Log.Info($"scored the teacher on {calibration.SequenceCount} x {calibration.SequenceLength} calibration tokens with {string.Join(", ", metrics)} in {watch.Elapsed.TotalSeconds:F1} s");
        }

        return _scores[metric];
    }

    /// <summary>The plan of the student: widths by <paramref name="widthMetric"/>, layers by <paramref name="layers"/>.</summary>
    public async Task<SurgeryPlan> PlanAsync(string widthMetric, LayerChoice layers)
    {
        ImportanceScores widths = await ScoresAsync(widthMetric).ConfigureAwait(false);
        int teacherLayers = TeacherConfig.NumHiddenLayers;
        int count = StudentShape.NumHiddenLayers;
        ImportanceScores scores = layers switch
        {
            LayerChoice.Ends => widths with { Layers = PositionPriorMetric.LayerScores(teacherLayers) },
            LayerChoice.BlockInfluence => widths with { Layers = (await ScoresAsync(ScoringMetrics.BlockInfluence).ConfigureAwait(false)).Layers },
            LayerChoice.Uniform => widths with { Layers = UniformStrideMetric.LayerScores(teacherLayers) },
            _ => widths,
        };
        PlanBuilder builder = PlanBuilder.For(TeacherConfig, scores)
            .WithDescription($"widths by {widthMetric}, layers by {layers}")
            .WithShape(StudentShape, layers == LayerChoice.PositionPrior ? LayerSelection.PositionPrior : LayerSelection.TopScores);
        if (layers == LayerChoice.FirstN)
        {
            builder.KeepLayers(Enumerable.Range(0, count));
        }

        return builder.Build();
    }

    /// <summary>Streams the planned student out of the teacher's checkpoint and loads it.</summary>
    public async Task<LlamaForCausalLM> BuildAsync(SurgeryPlan plan, string name)
    {
        string directory = Path.Combine(OutputDir, "students", name);
        await StudentBuilder.BuildAsync(Teacher.Directory, plan, directory, cancellationToken: CancellationToken).ConfigureAwait(false);
        return ModelCheckpoint.Load(directory);
    }

    /// <summary>Training options of one run: cosine schedule with 5% warmup, <paramref name="evaluations"/> validations spread over the run.</summary>
    public TrainingOptions Training(string name, long tokens, int batchSize, double learningRate, ulong seed, int evaluations = 4)
    {
        long steps = Math.Max(1, tokens / ((long)batchSize * Sizes.SeqLen));
        return new TrainingOptions
        {
            LearningRate = learningRate,
            MinLearningRate = learningRate / 10,
            WarmupFraction = 0.05,
            BatchSize = batchSize,
            SeqLen = Sizes.SeqLen,
            Tokens = tokens,
            EvalEvery = (int)Math.Max(1, steps / evaluations),
            EvalBatches = Math.Max(4, 32 / batchSize),
            Seed = seed,
            OutputDir = Path.Combine(OutputDir, "runs", name),
            CheckpointEvery = int.MaxValue,
        };
    }

    /// <summary>Runs <paramref name="produce"/> once per key; later calls with the same key reuse the result (ablations share runs).</summary>
    public async Task<ModelRun> OnceAsync(string key, Func<Task<ModelRun>> produce)
    {
        if (!_runs.TryGetValue(key, out ModelRun? run))
        {
            run = await produce().ConfigureAwait(false);
            _runs[key] = run;
        }

        return run;
    }

    /// <summary>Trains <paramref name="model"/> with the trainer, then evaluates it; disposes the model.</summary>
    public async Task<ModelRun> TrainAndEvaluateAsync(
        string name, int seed, LlamaForCausalLM model, TrainingOptions training, PreparedCorpus corpus, ITrainingObjective? objective = null, TrainingData? data = null)
    {
        using (model)
        {
            var watch = Stopwatch.StartNew();
            CurvePoint start = InitialPoint(model, corpus, training);
            model.train();
            TrainingResult result = await new Trainer(model, training, objective)
                .TrainAsync(data ?? corpus.TrainingData(), Progress(name, training.TotalSteps()), cancellationToken: CancellationToken).ConfigureAwait(false);
            IReadOnlyList<CurvePoint> curve = [start, .. result.Evaluations.Select(e => new CurvePoint(e.Step * training.TokensPerStep, e.ValidationLoss))];
            return await EvaluateAsync(name, seed, model, corpus, result.Steps * training.TokensPerStep, curve, watch).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The validation loss before training, on the windows the trainer validates on (the first
    /// <see cref="TrainingOptions.EvalBatches"/> batches of the validation windows, in order): the curve's point at 0 tokens.
    /// </summary>
    public static CurvePoint InitialPoint(LlamaForCausalLM model, PreparedCorpus corpus, TrainingOptions training)
    {
        long[][] batches = [.. corpus.ValidationWindows.Chunk(training.BatchSize).Where(b => b.Length == training.BatchSize).Take(training.EvalBatches)];
        double[] losses = MultiRoundTrainer.ScanBatchLosses(model, corpus.Tokens, batches, training.SeqLen);
        return new CurvePoint(0, losses.Average());
    }

    /// <summary>Evaluates a trained model: bits per byte per held-out Brown document and on heldout.jsonl.</summary>
    public async Task<ModelRun> EvaluateAsync(string name, int seed, LlamaForCausalLM model, PreparedCorpus corpus, long tokens, IReadOnlyList<CurvePoint> curve, Stopwatch watch)
    {
        model.eval();
        List<TaskSpec> tasks = [.. EvalBrownPaths.Select((p, d) => TaskSpec.Text(BrownTaskPrefix + d.ToString(CultureInfo.InvariantCulture), p)), TaskSpec.Text(HeldoutTask, EvalHeldoutPath)];
        ModelEvaluation evaluation = await Evaluator.EvaluateAsync(
            model, corpus.Tokenizer, tasks,
            new EvaluationOptions { ModelName = name, MaxLength = Sizes.SeqLen, BatchSize = 8, PrefixTokenId = corpus.SeparatorId },
            cancellationToken: CancellationToken).ConfigureAwait(false);
        BitsPerByteResult[] brown = [.. evaluation.Tasks.Where(t => t.Task.StartsWith(BrownTaskPrefix, StringComparison.Ordinal)).Select(t => t.Text!)];
        var documents = new DocumentLosses([.. brown.Select(b => b.TotalNllNats)], [.. brown.Select(b => b.Bytes)]);
        ParameterCount count = LlamaTensorLayout.CountParameters(model.Config);
        var run = new ModelRun(
            name, seed, StudentShape.Of(model.Config).ToString(), count.Total, count.NonEmbedding, tokens,
            curve.Count == 0 ? double.NaN : curve[^1].ValidationLoss, documents.BitsPerByte, evaluation[HeldoutTask]!.Text!.BitsPerByte,
            documents, curve, watch.Elapsed.TotalSeconds);
        Log.Info(string.Create(CultureInfo.InvariantCulture,
            $"{name} (seed {seed}): validation loss {run.ValidationLoss:F3}, Brown {run.BrownBitsPerByte:F3} bpb, heldout.jsonl {run.HeldoutBitsPerByte:F3} bpb ({run.Seconds:F1} s, {tokens:N0} tokens)"));
        return run;
    }

    private SynchronousProgress<TrainingProgress> Progress(string name, long total)
    {
        long every = Math.Max(1, total / 4);
        return new SynchronousProgress<TrainingProgress>(p =>
        {
            if (p.Completed % every == 0 && p.Completed != total)
            {
                Log.Detail($"{name} step {p.Completed}/{p.Total}: loss {p.Loss:F3}, {p.TokensPerSecond:F0} tokens/s");
            }
        });
    }

    private LlamaForCausalLM LoadTeacher()
    {
        LlamaForCausalLM teacher = ModelCheckpoint.Load(Teacher.Directory);
        teacher.eval();
        return teacher;
    }

    public void Dispose()
    {
        _teacherModel?.Dispose();
        Corpus?.Dispose();
    }

}

/// <summary>Progress lines stamped with the run's elapsed time.</summary>
internal sealed class RunLog(TextWriter output)
{
    private readonly Stopwatch _total = Stopwatch.StartNew();

    public TimeSpan Elapsed => _total.Elapsed;

    public void Section(string title)
    {
        output.WriteLine();
        output.WriteLine($"== [{Stamp()}] {title}");
    }

    public void Info(string line) => output.WriteLine($"   [{Stamp()}] {line}");

    public void Detail(string line) => output.WriteLine($"   [{Stamp()}]   {line}");

    private string Stamp() => _total.Elapsed.ToString(@"mm\:ss", CultureInfo.InvariantCulture);
}
