using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Schema;
using System.Text.RegularExpressions;
using System.Text.Json.Serialization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Building;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Training.Export;

namespace ModelSurgery.Training.Recipes;

/// <summary>
/// A declarative distillation pipeline read from JSON: teacher, data, optional vocabulary compression, scoring, plan,
/// build, distillation and evaluation. Relative paths are relative to the recipe file. Run it with <see cref="RecipeRunner"/>.
/// Its <c>scoring</c>, <c>plan</c>, <c>build</c>, <c>distillation</c> and <c>evaluation</c> sections are the library's
/// own options records (<see cref="ScoringOptions"/>, <see cref="PlanTargets"/>, <see cref="StudentBuildOptions"/>,
/// <see cref="DistillationOptions"/>, <see cref="EvaluationSuite"/>) with their keys in snake_case, so a recipe, the
/// command line and code (<see cref="Surgery.Surgeon"/>, <see cref="StudentPipeline"/>) share one set of names, defaults and checks.
/// </summary>
public sealed record DistillationRecipe
{
    /// <summary>Teacher checkpoint folder (<c>teacher</c>).</summary>
    public required string Teacher { get; init; }

    /// <summary>Corpus and tokenization (<c>data</c>).</summary>
    public required RecipeData Data { get; init; }

    /// <summary>Optional vocabulary compression of the teacher to the corpus (<c>vocabulary</c>).</summary>
    public RecipeVocabulary? Vocabulary { get; init; }

    /// <summary>Importance scoring (<c>scoring</c>).</summary>
    public ScoringOptions Scoring { get; init; } = new();

    /// <summary>Student shape targets (<c>plan</c>).</summary>
    public required PlanTargets Plan { get; init; }

    /// <summary>How the student checkpoint is written (<c>build</c>); its <c>tokenizer</c> defaults to the one the data was tokenized with.</summary>
    public StudentBuildOptions Build { get; init; } = new();

    /// <summary>Distillation hyper-parameters (<c>distillation</c>).</summary>
    public required DistillationOptions Distillation { get; init; }

    /// <summary>Evaluation tasks (<c>evaluation</c>); null skips evaluation. Paths are relative to the recipe.</summary>
    public EvaluationSuite? Evaluation { get; init; }

    /// <summary>A job for a distributed engine that runs the distillation at scale (<c>export_job</c>); null writes none.</summary>
    public RecipeExportJob? ExportJob { get; init; }

    /// <summary>The JSON schema the file declares for editors (<c>$schema</c>); not used by the runner.</summary>
    [JsonPropertyName("$schema")]
    public string? Schema { get; init; }

    /// <summary>The folder relative paths are resolved against (the recipe file's folder once loaded).</summary>
    [JsonIgnore]
    public string BaseDirectory { get; init; } = ".";

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new OptionNames.JsonConverter() },
        TypeInfoResolver = new System.Text.Json.Serialization.Metadata.DefaultJsonTypeInfoResolver(),
    };

    /// <summary>
    /// Reads and validates a recipe file, JSON or YAML (by extension), after applying command-line overrides such as
    /// <c>distillation.steps=200</c> (see <see cref="RecipeFile.Apply"/>).
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is malformed, an override is malformed, or a field is invalid; the message names the file and the field.</exception>
    public static DistillationRecipe Load(string path, IEnumerable<string>? overrides = null)
    {
        string fullPath = Path.GetFullPath(path);
        JsonObject root = RecipeFile.Read(fullPath, overrides);
        return FromNode(root, Path.GetDirectoryName(fullPath)!, fullPath);
    }

    /// <summary>Parses and validates recipe JSON; relative paths resolve against <paramref name="baseDirectory"/>.</summary>
    /// <exception cref="InvalidDataException">The JSON is malformed or a field is invalid; the message names <paramref name="source"/> and the field.</exception>
    public static DistillationRecipe Parse(string json, string baseDirectory, string source = "recipe.json")
    {
        ArgumentNullException.ThrowIfNull(json);
        return FromNode(RecipeFile.ParseJson(json, source), baseDirectory, source);
    }

    /// <summary>
    /// The JSON schema of recipe files, generated from the records a recipe is made of (editors use it for completion
    /// and checking: point a recipe's <c>$schema</c> at it). Choices list their names (<see cref="OptionNames"/>).
    /// </summary>
    public static string JsonSchema()
    {
        var exporter = new JsonSchemaExporterOptions
        {
            TreatNullObliviousAsNonNullable = true,
            TransformSchemaNode = (context, schema) =>
            {
                Type type = Nullable.GetUnderlyingType(context.TypeInfo.Type) ?? context.TypeInfo.Type;
                if (!type.IsEnum)
                {
                    return schema;
                }

                // The enum converter is opaque to the exporter (it writes 'true'): list the names it reads.
                return new JsonObject { ["type"] = "string", ["enum"] = new JsonArray([.. OptionNames.Names(type).Select(n => (JsonNode)n)]) };
            },
        };
        JsonNode schema = JsonOptions.GetJsonSchemaAsNode(typeof(DistillationRecipe), exporter);
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema";
        schema["title"] = "ModelSurgery distillation recipe";
        return schema.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    private static DistillationRecipe FromNode(JsonObject root, string baseDirectory, string source)
    {
        DistillationRecipe? recipe;
        try
        {
            recipe = root.Deserialize<DistillationRecipe>(JsonOptions);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{source}: {Describe(ex)}", ex);
        }

        recipe = (recipe ?? throw new InvalidDataException($"{source}: empty recipe.")) with { BaseDirectory = Path.GetFullPath(baseDirectory) };
        IReadOnlyList<string> errors = recipe.Validate();
        if (errors.Count > 0)
        {
            throw new InvalidDataException($"{source}: {string.Join("; ", errors)}");
        }

        return recipe;
    }

    /// <summary>
    /// A JSON error in the recipe's terms: the key or field and what is wrong with it, without System.Text.Json's .NET
    /// type names (which mean nothing to someone editing a recipe).
    /// </summary>
    private static string Describe(JsonException ex)
    {
        string at = (ex.Path ?? string.Empty).TrimStart('$').TrimStart('.');
        Match unknown = Regex.Match(ex.Message, "The JSON property '([^']+)' could not be mapped");
        if (unknown.Success)
        {
            string key = unknown.Groups[1].Value;
            string full = at.Length == 0 || at == key ? key : at.EndsWith("." + key, StringComparison.Ordinal) ? at : $"{at}.{key}";
            return $"unknown key '{full}'; check its spelling against the recipe keys in Samples/pipelines/README.md (or recipe.schema.json).";
        }

        Match converted = Regex.Match(ex.Message, @"could not be converted to ([\w.`\[\],]+)");
        if (converted.Success)
        {
            // Nullable and generic names carry the element type inside (System.Nullable`1[[System.Int32, ...]]).
            string type = converted.Groups[1].Value;
            string expected =
                type.Contains("List", StringComparison.Ordinal) || type.Contains("[]", StringComparison.Ordinal) ? "a list"
                : type.Contains("Int32", StringComparison.Ordinal) || type.Contains("Int64", StringComparison.Ordinal) || type.Contains("UInt", StringComparison.Ordinal) ? "a whole number"
                : type.Contains("Double", StringComparison.Ordinal) || type.Contains("Single", StringComparison.Ordinal) ? "a number"
                : type.Contains("Boolean", StringComparison.Ordinal) ? "true or false"
                : type.Contains("String", StringComparison.Ordinal) ? "a string"
                : "a section of keys (see Samples/pipelines/README.md)";
            return $"'{at}' should be {expected}.";
        }

        // The choice converter's messages (OptionNames) and syntax errors carry no .NET names; drop the position suffix.
        string message = ex.Message;
        int cut = message.IndexOf(" Path: ", StringComparison.Ordinal);
        message = cut > 0 ? message[..cut] : message;
        return at.Length > 0 ? $"'{at}': {message}" : message;
    }

    /// <summary>The recipe as JSON (paths as written).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>A JSON fragment of one section, used to fingerprint a step's inputs.</summary>
    internal static string SectionJson<T>(T section) => JsonSerializer.Serialize(section, JsonOptions);

    /// <summary>Resolves a recipe path against <see cref="BaseDirectory"/>.</summary>
    public string Resolve(string path) => Path.GetFullPath(Path.Combine(BaseDirectory, path));

    /// <summary>Every problem of the recipe, each naming its JSON field; empty when it is valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        void Check(bool ok, string field, string problem)
        {
            if (!ok)
            {
                errors.Add($"{field}: {problem}");
            }
        }

        Check(!string.IsNullOrWhiteSpace(Teacher), "teacher", "give the teacher checkpoint folder");
        if (Data is null)
        {
            errors.Add("data: missing");
        }
        else
        {
            Check(Data.Corpus is { Count: > 0 }, "data.corpus", "give at least one corpus file");
            Check(!string.IsNullOrWhiteSpace(Data.Field), "data.field", "give the JSONL text field");
            Check(Data.ValidationFraction is >= 0 and < 1, "data.validation_fraction", $"must be in [0, 1), got {Format(Data.ValidationFraction)}");
            Check(Data.SeparatorId is null or >= 0, "data.separator_id", "must not be negative");
        }

        if (Vocabulary is not null)
        {
            Check(Vocabulary.Keep is null != Vocabulary.Coverage is null, "vocabulary", "give exactly one of keep or coverage");
            Check(Vocabulary.Keep is null or >= 1, "vocabulary.keep", $"must be at least 1, got {Vocabulary.Keep}");
            Check(Vocabulary.Coverage is null or (> 0 and <= 1), "vocabulary.coverage", $"must be in (0, 1], got {Format(Vocabulary.Coverage ?? 0)}");
            Check(Vocabulary.PadToMultiple >= 1, "vocabulary.pad_to_multiple", "must be at least 1");
        }

        if (Scoring is not null)
        {
            errors.AddRange(Scoring.Validate(key => "scoring." + key));
        }

        if (Plan is null)
        {
            errors.Add("plan: missing");
        }
        else
        {
            errors.AddRange(Plan.Validate(PlanFieldName));
        }

        if (Build is not null)
        {
            Check(Build.PadVocabToMultiple >= 1, "build.pad_vocab_to_multiple", "must be at least 1");
            Check(Build.MaxShardBytes >= 1, "build.max_shard_bytes", "must be positive");
            Check(Build.ChunkBytes >= 1, "build.chunk_bytes", "must be positive");
            Check(Build.MemoryLimitBytes is null or >= 1, "build.memory_limit_bytes", "must be positive");
        }

        if (Distillation is null)
        {
            errors.Add("distillation: missing");
        }
        else
        {
            errors.AddRange(Distillation.Validate(key => "distillation." + key));
        }

        if (Evaluation is not null)
        {
            errors.AddRange(Evaluation.Validate(key => key.Length == 0 ? "evaluation" : "evaluation." + key));
        }

        if (ExportJob is not null)
        {
            Check(DistributedEngines.Names.Contains(ExportJob.Engine), "export_job.engine", $"unknown engine '{ExportJob.Engine}'; known engines: {string.Join(", ", DistributedEngines.Names)}");
            Check(ExportJob.Nodes >= 1, "export_job.nodes", "must be at least 1");
            Check(ExportJob.GpusPerNode >= 1, "export_job.gpus_per_node", "must be at least 1");
            Check(ExportJob.GlobalBatch is null or >= 1, "export_job.global_batch", "must be at least 1");
            Check(ExportJob.MicroBatch is null or >= 1, "export_job.micro_batch", "must be at least 1");
            Check(ExportJob.Steps is null || ExportJob.Tokens is null, "export_job", "give steps or tokens, not both");
            Check(ExportJob.Steps is null or >= 1, "export_job.steps", "must be at least 1");
            Check(ExportJob.Tokens is null or >= 1, "export_job.tokens", "must be at least 1");
            Check(Enum.IsDefined(ExportJob.Precision), "export_job.precision", $"must be one of {string.Join(", ", OptionNames.Names<TrainingPrecision>())}");
            Check(ExportJob.Student is RecipeExportJob.BuiltStudent or RecipeExportJob.DistilledStudent, "export_job.student", $"must be {RecipeExportJob.BuiltStudent} or {RecipeExportJob.DistilledStudent}, got '{ExportJob.Student}'");
        }

        return errors;
    }

    /// <summary>The recipe field of a <see cref="PlanTargets.Keys"/> key: <c>plan.</c> and the key (the section's fields are named as the keys).</summary>
    internal static string PlanFieldName(string key) => "plan." + key;

    private static string Format(double value) => value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>The <c>data</c> section: a corpus tokenized into a token file.</summary>
public sealed record RecipeData
{
    /// <summary>Tokenizer file, folder or name (e.g. <c>gpt2</c>); null uses the teacher folder's. With vocabulary compression the compressed tokenizer is used for the token file.</summary>
    public string? Tokenizer { get; init; }

    /// <summary>Corpus files, folders or globs (JSONL or plain text).</summary>
    public IReadOnlyList<string> Corpus { get; init; } = [];

    /// <summary>JSONL field holding the text.</summary>
    public string Field { get; init; } = "text";

    /// <summary>Share of windows held out for validation during distillation.</summary>
    public double ValidationFraction { get; init; } = 0.1;

    /// <summary>Document separator id; null takes the model's first eos id (else bos).</summary>
    public int? SeparatorId { get; init; }
}

/// <summary>The <c>vocabulary</c> section: compress the teacher's vocabulary to the corpus before surgery.</summary>
public sealed record RecipeVocabulary
{
    /// <summary>Keep this many tokens.</summary>
    public int? Keep { get; init; }

    /// <summary>Keep the fewest tokens covering this share of the corpus.</summary>
    public double? Coverage { get; init; }

    /// <summary>Pad the compressed vocabulary to a multiple of this.</summary>
    public int PadToMultiple { get; init; } = 1;

    internal CompressionTarget Target => Keep is int n ? CompressionTarget.Keep(n) : CompressionTarget.Cover(Coverage!.Value);
}

/// <summary>
/// The <c>export_job</c> section: a job for a distributed engine (see <see cref="JobExporter"/>) that distils the student
/// on many GPUs with the distillation section's settings, written into the step's folder (<c>job/</c>).
/// </summary>
public sealed record RecipeExportJob
{
    /// <summary>The <see cref="Student"/> value that exports the student as built (the job does the distillation).</summary>
    internal const string BuiltStudent = "build";

    /// <summary>The <see cref="Student"/> value that exports the locally distilled student (the job continues it).</summary>
    internal const string DistilledStudent = "distillation";

    /// <summary>The engine (<c>hf-accelerate</c>).</summary>
    public string Engine { get; init; } = "hf-accelerate";

    /// <summary>Which student: <c>build</c> (as built, before the local distillation) or <c>distillation</c> (after it).</summary>
    public string Student { get; init; } = BuiltStudent;

    /// <summary>Nodes.</summary>
    public int Nodes { get; init; } = 1;

    /// <summary>GPUs per node.</summary>
    public int GpusPerNode { get; init; } = 8;

    /// <summary>Windows per optimizer step over all GPUs; null keeps the distillation section's batch size.</summary>
    public int? GlobalBatch { get; init; }

    /// <summary>Windows per GPU per forward pass; null lets the exporter choose.</summary>
    public int? MicroBatch { get; init; }

    /// <summary>Optimizer steps of the job; null keeps the distillation section's (unless <see cref="Tokens"/> is given).</summary>
    public long? Steps { get; init; }

    /// <summary>Training tokens of the job, the usual way to size a run at scale; null uses the steps.</summary>
    public long? Tokens { get; init; }

    /// <summary>Compute precision on the GPUs: <c>bf16</c> (float32 master weights) or <c>fp32</c>.</summary>
    public TrainingPrecision Precision { get; init; } = TrainingPrecision.Bf16;
}
