using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Tests.Cli;
using ModelSurgery.Tests.Vocabulary;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Distillation;
using ModelSurgery.Training.Export;
using ModelSurgery.Training.Recipes;
using YamlDotNet.RepresentationModel;

namespace ModelSurgery.Tests.Training.Export;

/// <summary>
/// An hf-accelerate job exported for a tiny teacher and a student with a compressed (and padded) vocabulary, read back:
/// every configuration key, launch option, import and Accelerator member against the names the pinned Accelerate has,
/// the launch line's world size, the hyper-parameters against the local options, the corpus and split against the token
/// file, the tokenizer and the vocabulary map against the student's.
/// </summary>
public sealed class ExportJobTests
{
    private string _dir = null!;
    private string _teacher = null!;
    private string _student = null!;
    private string _tokens = null!;
    private VocabularyMap _map = null!;
    private EngineSurface _surface = null!;

    // Locally: 4 windows x 4 accumulated = 16 windows per step, bf16, sized in steps.
    private static readonly TrainingOptions Local = new()
    {
        LearningRate = 2e-4,
        MinLearningRate = 2e-5,
        WarmupFraction = 0.05,
        Beta1 = 0.85,
        Beta2 = 0.95,
        Epsilon = 1e-7,
        WeightDecay = 0.05,
        GradClip = 0.7,
        BatchSize = 4,
        SeqLen = 16,
        GradAccumulation = 4,
        Steps = 100,
        EvalEvery = 10,
        EvalBatches = 2,
        CheckpointEvery = 25,
        Seed = 77,
        Precision = TrainingPrecision.Bf16,
        OutputDir = "unused",
    };

    private static readonly DistillationSettings Kd = new() { Divergence = DistillationDivergence.JensenShannon, Temperature = 2, Alpha = 0.7, TeacherDType = TorchSharp.torch.ScalarType.BFloat16 };

    [OneTimeSetUp]
    public async Task OneTimeSetUp()
    {
        _dir = Directory.CreateTempSubdirectory("export-job").FullName;
        _teacher = Path.Combine(_dir, "teacher");
        using (await TinyTokenizedModel.SaveAsync(_teacher))
        {
        }

        // The student: the teacher with its vocabulary compressed to the corpus and padded to a multiple of 64.
        string corpus = TinyTokenizedModel.WriteCorpus(_dir);
        _student = Path.Combine(_dir, "student");
        ModelCompressionResult compressed = await ModelVocabularyCompressor.CompressAsync(
            _teacher, [corpus], CompressionTarget.Keep(400), _student, new ModelCompressionOptions { PadVocabToMultiple = 64 });
        _map = compressed.Map;
        Directory.CreateDirectory(Path.Combine(_dir, "tokens"));
        _tokens = TrainCliSupport.WriteTokens(Path.Combine(_dir, "tokens"), vocab: _map.NewVocabSize, validationFraction: 0.1);
        _surface = EngineSurface.Load();
    }

    [OneTimeTearDown]
    public void OneTimeTearDown() => Directory.Delete(_dir, recursive: true);

    private JobExportOptions Options(string name, int nodes = 2, int gpus = 8) => new()
    {
        StudentDirectory = _student,
        TeacherDirectory = _teacher,
        TokensPath = _tokens,
        OutputDirectory = Path.Combine(_dir, name),
        Training = Local,
        Distillation = Kd,
        Nodes = nodes,
        GpusPerNode = gpus,
    };

    // One job most tests read; the exports are deterministic, so sharing it only saves time.
    private Task<ExportedJob>? _shared;

    private Task<ExportedJob> SharedAsync() => _shared ??= JobExporter.ExportAsync(Options("shared"));

    private static JsonObject Json(string path) => (JsonObject)JsonNode.Parse(File.ReadAllText(path))!;

    private static YamlMappingNode Yaml(string path)
    {
        var stream = new YamlStream();
        using var reader = new StreamReader(path);
        stream.Load(reader);
        return (YamlMappingNode)stream.Documents[0].RootNode;
    }

    private static string Scalar(YamlMappingNode map, string key) => ((YamlScalarNode)map.Children[new YamlScalarNode(key)]).Value!;

    [Test]
    public async Task The_job_holds_the_engine_files_the_checkpoints_and_the_corpus()
    {
        ExportedJob job = await JobExporter.ExportAsync(Options("files"));
        string[] expected =
        [
            "README.md", "accelerate_config.yaml", "job.json", "launch.sh", "slurm.sbatch", "requirements.txt", "train.py", "objective.py", "corpus.py",
            "student/config.json", "student/model.safetensors", "student/tokenizer.json", "student/vocab_map.json",
            "teacher/config.json", "teacher/model.safetensors", "teacher/tokenizer.json",
            "data/tokens.bin", "data/corpus.json", "data/train_windows.npy", "data/eval_windows.npy",
        ];
        Assert.That(expected.Where(f => !File.Exists(Path.Combine(job.Directory, f))), Is.Empty);
        Assert.That(Directory.GetDirectories(_dir).Where(d => Path.GetFileName(d).StartsWith(".files.", StringComparison.Ordinal)), Is.Empty, "no temporary folder is left");
        Assert.That(job.LinkedBytes + job.CopiedBytes, Is.EqualTo(
            Directory.GetFiles(_student).Concat(Directory.GetFiles(_teacher)).Append(_tokens).Sum(f => new FileInfo(f).Length)));
        if (!OperatingSystem.IsWindows())
        {
            Assert.That(job.LinkedBytes, Is.GreaterThan(0), "on one file system the files are hard-linked, not copied");
        }

        Assert.That(File.ReadAllBytes(Path.Combine(job.Directory, "student", "model.safetensors")), Is.EqualTo(File.ReadAllBytes(Path.Combine(_student, "model.safetensors"))));
        foreach (string script in new[] { "train.py", "objective.py", "corpus.py" })
        {
            Assert.That(File.ReadAllText(Path.Combine(job.Directory, script)), Is.EqualTo(File.ReadAllText(SourceScript(script))), $"{script} is the committed script");
        }
    }

    [Test]
    public async Task The_accelerate_config_uses_only_keys_and_values_of_the_pinned_release()
    {
        ExportedJob job = await SharedAsync();
        YamlMappingNode config = Yaml(Path.Combine(job.Directory, "accelerate_config.yaml"));
        IReadOnlySet<string> keys = _surface.Set("config_file_keys");
        Assert.That(config.Children.Keys.Select(k => ((YamlScalarNode)k).Value!).Where(k => !keys.Contains(k)), Is.Empty, "Accelerate rejects unknown top-level keys");
        var fsdp = (YamlMappingNode)config.Children[new YamlScalarNode("fsdp_config")];
        IReadOnlySet<string> fsdpKeys = _surface.Set("fsdp_config_keys");
        Assert.That(fsdp.Children.Keys.Select(k => ((YamlScalarNode)k).Value!).Where(k => !fsdpKeys.Contains(k)), Is.Empty, "launch.py ignores fsdp_config keys it has no option for");

        Assert.That(_surface.Set("compute_environments"), Does.Contain(Scalar(config, "compute_environment")));
        Assert.That(_surface.Set("distributed_types"), Does.Contain(Scalar(config, "distributed_type")));
        Assert.That(Scalar(config, "distributed_type"), Is.EqualTo("FSDP"));
        Assert.That(_surface.Set("mixed_precision"), Does.Contain(Scalar(config, "mixed_precision")));
        Assert.That(Scalar(config, "mixed_precision"), Is.EqualTo("bf16"), "the local run is bf16");
        Assert.That(Scalar(fsdp, "fsdp_version"), Is.EqualTo("2"));
        Assert.That(_surface.Set("fsdp_auto_wrap_policies"), Does.Contain(Scalar(fsdp, "fsdp_auto_wrap_policy")));
        Assert.That(_surface.Set("fsdp2_state_dict_types"), Does.Contain(Scalar(fsdp, "fsdp_state_dict_type")));
        Assert.That(Scalar(fsdp, "fsdp_cpu_ram_efficient_loading"), Is.EqualTo("false"), "the unsharded teacher must load on every rank");
        Assert.That(Scalar(config, "num_machines"), Is.EqualTo("2"));
        Assert.That(Scalar(config, "num_processes"), Is.EqualTo("16"), "Accelerate's num_processes counts all machines");
    }

    [Test]
    public async Task The_launch_line_for_2_nodes_x_8_gpus_starts_16_processes_with_the_options_accelerate_has()
    {
        ExportedJob job = await SharedAsync();
        string launch = File.ReadAllText(Path.Combine(job.Directory, "launch.sh"));
        int Default(string variable) => int.Parse(Regex.Match(launch, $@"^{variable}=""\${{{variable}:-(\d+)}}""$", RegexOptions.Multiline).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        int nodes = Default("NODES");
        int gpus = Default("GPUS_PER_NODE");
        Assert.That((nodes, gpus), Is.EqualTo((2, 8)));

        string command = launch[launch.IndexOf("exec accelerate launch", StringComparison.Ordinal)..].Replace("\\\n", " ", StringComparison.Ordinal);
        command = command[..command.IndexOf('\n', StringComparison.Ordinal)];
        string[] options = [.. Regex.Matches(command, @"(?<=\s)--\w+").Select(m => m.Value)];
        string[] launcherOptions = [.. options.TakeWhile(o => o != "--job")];
        IReadOnlySet<string> known = _surface.Set("launch_options");
        Assert.That(launcherOptions.Where(o => !known.Contains(o)), Is.Empty);
        Assert.That(launcherOptions, Is.SupersetOf(new[] { "--config_file", "--num_machines", "--num_processes", "--machine_rank", "--main_process_ip", "--main_process_port" }));
        Assert.That(command, Does.Contain("--num_machines \"$NODES\"").And.Contain("--num_processes \"$((NODES * GPUS_PER_NODE))\"").And.Contain("--machine_rank \"$NODE_RANK\""));
        Assert.That(command, Does.Contain("train.py --job job.json"));

        JsonObject batch = Json(Path.Combine(job.Directory, "job.json"))["batch"]!.AsObject();
        int world = nodes * gpus;
        Assert.That(batch["exported_world_size"]!.GetValue<int>(), Is.EqualTo(world));
        Assert.That(job.WorldSize, Is.EqualTo(16));
        int global = batch["global_windows"]!.GetValue<int>();
        int micro = batch["micro_batch"]!.GetValue<int>();
        Assert.That(global, Is.EqualTo(Local.BatchSize * Local.GradAccumulation), "the local global batch is kept");
        Assert.That(global % (micro * world), Is.Zero);
        Assert.That(batch["grad_accumulation_at_exported_world_size"]!.GetValue<int>(), Is.EqualTo(global / (micro * world)));

        string slurm = File.ReadAllText(Path.Combine(job.Directory, "slurm.sbatch"));
        Assert.That(slurm, Does.Contain("#SBATCH --nodes=2").And.Contain("#SBATCH --gpus-per-node=8").And.Contain("NODE_RANK=\"$SLURM_NODEID\" ./launch.sh"));
        AssertShellSyntax(Path.Combine(job.Directory, "launch.sh"));
        AssertShellSyntax(Path.Combine(job.Directory, "slurm.sbatch"));
    }

    [Test]
    public async Task The_scripts_use_only_names_the_pinned_accelerate_and_transformers_have()
    {
        ExportedJob job = await SharedAsync();
        foreach (string script in new[] { "train.py", "objective.py", "corpus.py" })
        {
            Assert.That(_surface.UnknownPythonNames(File.ReadAllText(Path.Combine(job.Directory, script))), Is.Empty, script);
        }

        string train = File.ReadAllText(Path.Combine(job.Directory, "train.py"));
        Assert.That(Regex.Matches(train, @"\baccelerator\.(\w+)").Select(m => m.Groups[1].Value).Distinct().ToList(), Has.Count.GreaterThan(10), "the check sees the script's Accelerator calls");
        Assert.That(train, Does.Contain("from accelerate import Accelerator").And.Contain("from transformers import AutoModelForCausalLM"));
    }

    [Test]
    public void The_name_check_fails_on_names_the_engine_does_not_have()
    {
        const string Python = """
            from accelerate import Accelerator, Acceleratr
            from accelerate.utils import set_seed, set_everything
            from transformers import AutoModelForCausalLM, AutoModelForMagic
            accelerator.save_everything(model)
            accelerator.save_model(model, final, shard_size="5GB")
            m = AutoModelForCausalLM.from_pretrained(path, torch_dtypes=torch.float32)
            logits = model(input_ids=x, use_cash=False).logit
            """;
        Assert.That(_surface.UnknownPythonNames(Python), Is.EquivalentTo(new[]
        {
            "from accelerate import Acceleratr", "from accelerate.utils import set_everything", "from transformers import AutoModelForMagic",
            "accelerator.save_everything", "accelerator.save_model(shard_size=...)", "from_pretrained(torch_dtypes=...)",
            "model(use_cash=...)", "model(...).logit",
        }));
    }

    [Test]
    public async Task Every_key_the_scripts_read_is_in_job_json_and_corpus_json()
    {
        ExportedJob job = await SharedAsync();
        JsonObject root = Json(Path.Combine(job.Directory, "job.json"));
        JsonObject corpus = Json(Path.Combine(job.Directory, "data", "corpus.json"));
        var objects = new Dictionary<string, JsonObject>
        {
            ["job"] = root,
            ["opt"] = root["optimizer"]!.AsObject(),
            ["batch"] = root["batch"]!.AsObject(),
            ["schedule"] = root["schedule"]!.AsObject(),
            ["kd"] = root["distillation"]!.AsObject(),
            ["corpus"] = corpus,
        };
        var read = new List<string>();
        foreach (string script in new[] { "train.py", "corpus.py" })
        {
            foreach (Match m in Regex.Matches(File.ReadAllText(Path.Combine(job.Directory, script)), @"\b(job|opt|batch|schedule|kd|corpus)\[""(\w+)""\]"))
            {
                read.Add($"{m.Groups[1].Value}.{m.Groups[2].Value}");
                Assert.That(objects[m.Groups[1].Value].ContainsKey(m.Groups[2].Value), $"{script} reads {m.Value}");
            }
        }

        Assert.That(read, Has.Count.GreaterThan(25), "the pattern finds the reads");
        Assert.That(read, Does.Contain("kd.vocab_map").And.Contain("opt.min_lr").And.Contain("corpus.header_bytes"));
    }

    [Test]
    public async Task The_hyperparameters_are_the_local_ones()
    {
        ExportedJob job = await SharedAsync();
        JsonObject root = Json(Path.Combine(job.Directory, "job.json"));
        JsonObject opt = root["optimizer"]!.AsObject();
        Assert.That(opt["lr"]!.GetValue<double>(), Is.EqualTo(Local.LearningRate));
        Assert.That(opt["min_lr"]!.GetValue<double>(), Is.EqualTo(Local.MinLearningRate));
        Assert.That(opt["beta1"]!.GetValue<double>(), Is.EqualTo(Local.Beta1));
        Assert.That(opt["beta2"]!.GetValue<double>(), Is.EqualTo(Local.Beta2));
        Assert.That(opt["eps"]!.GetValue<double>(), Is.EqualTo(Local.Epsilon));
        Assert.That(opt["weight_decay"]!.GetValue<double>(), Is.EqualTo(Local.WeightDecay));
        Assert.That(opt["grad_clip"]!.GetValue<double>(), Is.EqualTo(Local.GradClip));
        JsonObject schedule = root["schedule"]!.AsObject();
        Assert.That(schedule["total_steps"]!.GetValue<long>(), Is.EqualTo(Local.TotalSteps()));
        Assert.That(schedule["warmup_steps"]!.GetValue<long>(), Is.EqualTo(LearningRateSchedule.For(Local, Local.TotalSteps()).WarmupSteps));
        Assert.That(schedule["warmup_steps"]!.GetValue<long>(), Is.EqualTo(5));
        JsonObject batch = root["batch"]!.AsObject();
        Assert.That(batch["seq_len"]!.GetValue<int>(), Is.EqualTo(Local.SeqLen));
        Assert.That(batch["tokens_per_step"]!.GetValue<long>(), Is.EqualTo(Local.TokensPerStep));
        Assert.That(root["seed"]!.GetValue<ulong>(), Is.EqualTo(Local.Seed));
        Assert.That(root["precision"]!.GetValue<string>(), Is.EqualTo("bf16"));
        Assert.That(root["eval_every"]!.GetValue<int>(), Is.EqualTo(Local.EvalEvery));
        Assert.That(root["checkpoint_every"]!.GetValue<int>(), Is.EqualTo(Local.CheckpointEvery));
        Assert.That(root["max_non_finite_steps"]!.GetValue<int>(), Is.EqualTo(Local.MaxNonFiniteSteps));
        JsonObject kd = root["distillation"]!.AsObject();
        Assert.That(kd["divergence"]!.GetValue<string>(), Is.EqualTo("jsd"));
        Assert.That(kd["temperature"]!.GetValue<double>(), Is.EqualTo(Kd.Temperature));
        Assert.That(kd["alpha"]!.GetValue<double>(), Is.EqualTo(Kd.Alpha));
        Assert.That(kd["teacher_dtype"]!.GetValue<string>(), Is.EqualTo("bfloat16"));
        JsonObject local = root["local"]!.AsObject();
        Assert.That((local["batch_size"]!.GetValue<int>(), local["grad_accumulation"]!.GetValue<int>(), local["steps"]!.GetValue<long>()), Is.EqualTo((4, 4, 100L)));

        // The script's schedule and decay rule are the local ones: the same formula and names, read from the file.
        string objective = File.ReadAllText(Path.Combine(job.Directory, "objective.py"));
        Assert.That(objective, Does.Contain("return peak * (step + 1) / warmup_steps").And.Contain("progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))"));
    }

    [Test]
    public async Task The_corpus_reads_back_as_the_token_file_with_the_local_split()
    {
        ExportedJob job = await SharedAsync();
        JsonObject corpus = Json(Path.Combine(job.Directory, "data", "corpus.json"));
        string tokensPath = Path.Combine(job.Directory, corpus["tokens"]!.GetValue<string>());
        int header = corpus["header_bytes"]!.GetValue<int>();
        string dtype = corpus["dtype"]!.GetValue<string>();
        long count = corpus["count"]!.GetValue<long>();
        int width = dtype switch { "<u2" => 2, "<u4" => 4, _ => throw new AssertionException($"dtype {dtype}") };

        // Read the way numpy.memmap(dtype, offset=header_bytes, shape=(count,)) reads: little-endian, after the header.
        byte[] bytes = File.ReadAllBytes(tokensPath);
        Assert.That(bytes.LongLength, Is.EqualTo(header + (count * width)));
        using TokenFile original = TokenFile.Open(_tokens);
        Assert.That(count, Is.EqualTo(original.Count));
        long[] expected = original.Read(0, (int)original.Count);
        long[] actual = new long[count];
        for (long i = 0; i < count; i++)
        {
            actual[i] = width == 2 ? BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan((int)(header + (2 * i)))) : BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan((int)(header + (4 * i))));
        }

        Assert.That(actual, Is.EqualTo(expected));
        Assert.That(corpus["separator_id"]!.GetValue<int>(), Is.EqualTo(original.SeparatorId));

        int seqLen = corpus["seq_len"]!.GetValue<int>();
        TokenFileInfo info = TokenFileInfo.TryLoad(_tokens)!;
        DatasetSplit split = DatasetSplit.ByChunk(TokenWindows.Count(count, seqLen), info.ValidationFraction, info.SplitSeed);
        Assert.That(ReadNpy(Path.Combine(job.Directory, corpus["train_windows"]!.GetValue<string>())), Is.EqualTo(split.Train));
        long[] eval = ReadNpy(Path.Combine(job.Directory, corpus["eval_windows"]!.GetValue<string>()));
        Assert.That(eval, Is.EqualTo(split.Validation.Take(Local.EvalBatches * Local.BatchSize)), "the windows the local run validated on");
        Assert.That(eval, Has.Length.EqualTo(Local.EvalBatches * Local.BatchSize));
        Assert.That(split.Train.Intersect(eval), Is.Empty);
    }

    [Test]
    public async Task The_tokenizer_is_the_students_compressed_one_and_the_vocab_map_drives_the_distillation()
    {
        ExportedJob job = await SharedAsync();
        byte[] shipped = File.ReadAllBytes(Path.Combine(job.Directory, "student", "tokenizer.json"));
        Assert.That(shipped, Is.EqualTo(File.ReadAllBytes(Path.Combine(_student, "tokenizer.json"))));
        Assert.That(shipped, Is.Not.EqualTo(File.ReadAllBytes(Path.Combine(_teacher, "tokenizer.json"))), "not the teacher's full tokenizer");
        LlamaConfig studentConfig = LlamaConfig.Load(Path.Combine(job.Directory, "student", "config.json"));
        Assert.That(studentConfig.VocabSize, Is.EqualTo(_map.PaddedSize(64)).And.GreaterThan(_map.NewVocabSize), "a padded compressed vocabulary");

        JsonObject kd = Json(Path.Combine(job.Directory, "job.json"))["distillation"]!.AsObject();
        string mapPath = kd["vocab_map"]!.GetValue<string>();
        Assert.That(mapPath, Is.EqualTo("student/vocab_map.json"));
        JsonArray kept = Json(Path.Combine(job.Directory, mapPath))["kept_old_ids"]!.AsArray();
        Assert.That(kept.Select(k => k!.GetValue<int>()), Is.EqualTo(_map.KeptOldIds), "the key train.py reads holds the student-to-teacher ids");

        // train.py loads those ids into `kept` and hands them to both sides of the loss; objective.py restricts the
        // teacher's logits with them and drops the student's padding columns.
        string train = File.ReadAllText(Path.Combine(job.Directory, "train.py"));
        Assert.That(train, Does.Contain("kept = torch.tensor(json.load(f)[\"kept_old_ids\"]"));
        Assert.That(train, Does.Contain("teacher_ids = teacher_input_ids(inputs[\"input_ids\"], kept)"));
        Assert.That(Regex.IsMatch(train, @"distillation_loss\(\s*logits, teacher_logits, inputs\[""labels""\], kept,"), "the loss gets the kept ids");
        string objective = File.ReadAllText(Path.Combine(job.Directory, "objective.py"));
        Assert.That(objective, Does.Contain("teacher_logits = teacher_logits.index_select(-1, kept_teacher_ids)").And.Contain("student_logits[..., :columns]"));
        Assert.That(objective, Does.Contain("return input_ids if kept_teacher_ids is None else kept_teacher_ids[input_ids]"));
    }

    [Test]
    public async Task A_token_file_split_at_a_token_ships_the_windows_the_local_run_uses()
    {
        string tokens = TrainCliSupport.WriteTokens(Path.Combine(_dir, "held-out-tokens"), vocab: _map.NewVocabSize, validationFraction: 0);
        long count;
        using (TokenFile file = TokenFile.Open(tokens))
        {
            count = file.Count;
            new TokenFileInfo { Tokens = count, VocabSize = _map.NewVocabSize, SeparatorId = _map.NewVocabSize - 1, ValidationStartToken = count * 3 / 4 }.Save(tokens);
        }

        ExportedJob job = await JobExporter.ExportAsync(Options("held-out") with { TokensPath = tokens });
        JsonObject corpus = Json(Path.Combine(job.Directory, "data", "corpus.json"));
        DatasetSplit split = DatasetSplit.AtToken(count, count * 3 / 4, Local.SeqLen);
        using TokenFile reopened = TokenFile.Open(tokens);
        TrainingData local = CheckpointTraining.OpenData(reopened, Local.SeqLen);
        Assert.That(ReadNpy(Path.Combine(job.Directory, corpus["train_windows"]!.GetValue<string>())), Is.EqualTo(split.Train).And.EqualTo(local.TrainWindows));
        Assert.That(ReadNpy(Path.Combine(job.Directory, corpus["eval_windows"]!.GetValue<string>())), Is.EqualTo(local.ValidationWindows.Take(Math.Min(Local.EvalBatches, local.ValidationWindows.Count / Local.BatchSize) * Local.BatchSize)));
    }

    [Test]
    public async Task Continued_pretraining_without_a_teacher_ships_no_teacher_and_no_distillation()
    {
        ExportedJob job = await JobExporter.ExportAsync(Options("pretrain", nodes: 1, gpus: 4) with { TeacherDirectory = null, Distillation = null, Training = Local with { Precision = TrainingPrecision.Fp32 } });
        JsonObject root = Json(Path.Combine(job.Directory, "job.json"));
        Assert.That(root["distillation"], Is.Null);
        Assert.That(root["teacher"], Is.Null);
        Assert.That(Directory.Exists(Path.Combine(job.Directory, "teacher")), Is.False);
        Assert.That(Scalar(Yaml(Path.Combine(job.Directory, "accelerate_config.yaml")), "mixed_precision"), Is.EqualTo("no"));
        Assert.That(job.Notes, Has.Some.Contains("fp32"));
        Assert.That((job.WorldSize, job.MicroBatchSize, job.GradientAccumulation), Is.EqualTo((4, 4, 1)), "16 windows on 4 GPUs: 4 each, nothing accumulated");
    }

    [Test]
    public async Task A_larger_global_batch_keeps_a_token_budget()
    {
        TrainingOptions byTokens = Local with { Steps = null, Tokens = 1_000_000 };
        ExportedJob job = await JobExporter.ExportAsync(Options("budget") with { Training = byTokens, GlobalBatchWindows = 64, MicroBatchSize = 2 });
        Assert.That(job.TotalSteps, Is.EqualTo((1_000_000 + (64 * 16) - 1) / (64 * 16)));
        Assert.That((job.GlobalBatchWindows, job.MicroBatchSize, job.GradientAccumulation), Is.EqualTo((64, 2, 2)));
        Assert.That(job.Notes, Has.Some.Contains("not rescaled"));
    }

    [Test]
    public void A_missing_student_folder_is_named()
    {
        JobExportException e = Assert.ThrowsAsync<JobExportException>(() => JobExporter.ExportAsync(Options("x") with { StudentDirectory = Path.Combine(_dir, "nowhere") }))!;
        Assert.That(e.Option, Is.EqualTo("student"));
        Assert.That(e.Message, Does.StartWith("student: ").And.Contain("nowhere"));
    }

    [Test]
    public void A_teacher_with_another_vocabulary_and_no_vocab_map_is_refused()
    {
        string unmapped = Path.Combine(_dir, "unmapped-student");
        Directory.CreateDirectory(unmapped);
        foreach (string f in Directory.GetFiles(_student).Where(f => Path.GetFileName(f) != "vocab_map.json"))
        {
            File.Copy(f, Path.Combine(unmapped, Path.GetFileName(f)));
        }

        JobExportException e = Assert.ThrowsAsync<JobExportException>(() => JobExporter.ExportAsync(Options("unmapped") with { StudentDirectory = unmapped }))!;
        Assert.That(e.Option, Is.EqualTo("teacher"));
        Assert.That(e.Message, Does.Contain("vocab_map.json").And.Contain(_teacher).And.Contain("1001"));
        Assert.That(Directory.Exists(Path.Combine(_dir, "unmapped")), Is.False);
    }

    [Test]
    public async Task An_existing_output_folder_is_replaced_only_with_force()
    {
        string output = Path.Combine(_dir, "existing");
        Directory.CreateDirectory(output);
        await File.WriteAllTextAsync(Path.Combine(output, "keep.txt"), "mine");
        JobExportException e = Assert.ThrowsAsync<JobExportException>(() => JobExporter.ExportAsync(Options("existing")))!;
        Assert.That((e.Option, e.IsUsageError), Is.EqualTo(("out", true)));
        Assert.That(e.Message, Does.Contain("--force"));
        Assert.That(File.Exists(Path.Combine(output, "keep.txt")), "nothing was touched");

        await JobExporter.ExportAsync(Options("existing") with { Force = true });
        Assert.That(File.Exists(Path.Combine(output, "keep.txt")), Is.False);
        Assert.That(File.Exists(Path.Combine(output, "job.json")));
    }

    [Test]
    public void Unknown_engines_and_impossible_shapes_are_usage_errors()
    {
        JobExportException engine = Assert.Throws<JobExportException>(() => DistributedEngines.Parse("megatron"))!;
        Assert.That((engine.Option, engine.IsUsageError), Is.EqualTo(("engine", true)));
        Assert.That(engine.Message, Does.Contain("hf-accelerate"));
        Assert.That(DistributedEngines.Parse("HF-Accelerate"), Is.EqualTo(DistributedEngine.HfAccelerate));

        JobExportException shape = Assert.ThrowsAsync<JobExportException>(() => JobExporter.ExportAsync(Options("shape", nodes: 3, gpus: 8)))!;
        Assert.That(shape.Option, Is.EqualTo("global-batch"));
        Assert.That(shape.Message, Does.Contain("24 GPUs"));

        JobExportException plan = Assert.ThrowsAsync<JobExportException>(() => JobExporter.ExportAsync(Options("plan") with { Distillation = Kd with { PlanPath = "plan.json" } }))!;
        Assert.That(plan.Option, Is.EqualTo("plan"));
    }

    [Test]
    public void A_cancelled_export_leaves_nothing_behind()
    {
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.CatchAsync<OperationCanceledException>(() => JobExporter.ExportAsync(Options("cancelled"), cancellationToken: cancelled.Token));
        Assert.That(Directory.GetDirectories(_dir).Where(d => Path.GetFileName(d).Contains("cancelled", StringComparison.Ordinal)), Is.Empty);
    }

    [Test]
    public async Task The_surface_file_names_the_pinned_release_and_its_extractor()
    {
        JsonElementAssert(_surface.Root.GetProperty("accelerate").GetProperty("version").GetString(), "1.14.0");
        JsonElementAssert(_surface.Root.GetProperty("accelerate").GetProperty("tag").GetString(), "v1.14.0");
        Assert.That(_surface.Root.GetProperty("accelerate").GetProperty("commit").GetString(), Does.Match("^[0-9a-f]{40}$"));
        Assert.That(File.Exists(SourceFile("Tests", "Training", "Export", "extract_hf_accelerate_surface.py")));
        ExportedJob job = await SharedAsync();
        string[] requirements = File.ReadAllLines(Path.Combine(job.Directory, "requirements.txt"));
        Assert.That(requirements, Does.Contain("accelerate==1.14.0"), "the job pins the release it was checked against");
    }

    private static void JsonElementAssert(string? actual, string expected) => Assert.That(actual, Is.EqualTo(expected));

    private static long[] ReadNpy(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        Assert.That(bytes[0], Is.EqualTo(0x93));
        Assert.That(Encoding.ASCII.GetString(bytes, 1, 5), Is.EqualTo("NUMPY"));
        int headerLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8));
        string header = Encoding.ASCII.GetString(bytes, 10, headerLength);
        Assert.That((10 + headerLength) % 64, Is.Zero, "numpy aligns the data to 64 bytes");
        Assert.That(header, Does.Contain("'descr': '<i8'").And.Contain("'fortran_order': False"));
        long n = long.Parse(Regex.Match(header, @"'shape': \((\d+),\)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.That(bytes.LongLength, Is.EqualTo(10 + headerLength + (8 * n)));
        return [.. Enumerable.Range(0, (int)n).Select(i => BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(10 + headerLength + (8 * i))))];
    }

    private static void AssertShellSyntax(string script)
    {
        if (OperatingSystem.IsWindows() || !File.Exists("/bin/bash"))
        {
            return;
        }

        using var bash = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("/bin/bash", ["-n", script]) { RedirectStandardError = true })!;
        string error = bash.StandardError.ReadToEnd();
        bash.WaitForExit();
        Assert.That(bash.ExitCode, Is.Zero, $"{script}: {error}");
    }

    private static string SourceScript(string name) => SourceFile("Training", "Export", "HfAccelerate", name);

    private static string SourceFile(params string[] parts)
    {
        // The repository root is the first folder above the test binaries that holds ModelSurgery.sln.
        var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "ModelSurgery.sln")))
        {
            dir = dir.Parent;
        }

        return Path.Combine([dir?.FullName ?? throw new AssertionException("repository root not found"), .. parts]);
    }
}
