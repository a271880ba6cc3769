using System.Globalization;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Inspection;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Surgery.Building;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Surgery.Scoring;
using ModelSurgery.Surgery.Scoring.Metrics;
using ModelSurgery.Tests.Modeling;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Building;

public sealed class StudentBuilderTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("builder").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    /// <summary>A teacher with large, varied weights (and non-trivial norms) so that any misplaced row or column shows.</summary>
    private async Task<(LlamaForCausalLM Model, string Dir)> SaveTeacherAsync(LlamaConfig config, long seed)
    {
        LlamaForCausalLM model = TinyModels.Create(config, seed);
        using (no_grad())
        {
            var generator = new TorchSharp.torch.Generator((ulong)seed);
            foreach (var (name, parameter) in model.named_parameters())
            {
                bool norm = name.EndsWith("norm.weight", StringComparison.Ordinal);
                Tensor values = randn(parameter.shape, generator: generator);
                parameter.copy_(norm ? values.mul(0.2).add(1.0) : values.mul(0.3));
            }
        }

        string dir = Path.Combine(_dir, "teacher-" + seed);
        await ModelCheckpoint.SaveAsync(model, dir);
        return (model, dir);
    }

    private static Tensor Logits(LlamaForCausalLM model, long[] ids)
    {
        using (no_grad())
        {
            return model.forward(tensor(ids).unsqueeze(0)).squeeze(0); // [T, V]
        }
    }

    [TestCase("llama", false)]
    [TestCase("llama", true)]
    [TestCase("qwen2", true)]
    public async Task Keep_everything_plan_reproduces_the_teacher_logits_exactly(string modelType, bool tied)
    {
        LlamaConfig config = TinyModels.Config(modelType, heads: 4, kvHeads: 2, tied: tied, layers: 3);
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed: 3);
        using var _ = teacher;
        string studentDir = Path.Combine(_dir, "student");

        StudentBuildResult result = await StudentBuilder.BuildAsync(teacherDir, PlanBuilder.Identity(config), studentDir);

        using LlamaForCausalLM student = ModelCheckpoint.Load(studentDir, new ModelLoadOptions { Device = "cpu" });
        long[] ids = TinyModels.RandomIds(17, config.VocabSize, seed: 5);
        using var scope = NewDisposeScope();
        Assert.That(TinyModels.AreEqual(Logits(student, ids), Logits(teacher, ids)), Is.True);
        Assert.That(result.Parameters, Is.EqualTo(LlamaTensorLayout.CountParameters(config)));
        Assert.That(ModelInspector.Inspect(studentDir).Problems, Is.Empty);
    }

    /// <summary>
    /// Property: for random valid plans, the student's logits equal those of the teacher with every removed unit masked:
    /// removed layers and heads contribute nothing (o_proj/down_proj zeroed), removed neurons are silenced, removed hidden
    /// channels are zero in the residual stream (embedding columns, o_proj/down_proj rows zeroed) with the norms rescaled by
    /// sqrt(kept/total) because RMSNorm averages over the channels present; logits are compared on the kept tokens.
    /// </summary>
    [TestCase(1, false, "llama")]
    [TestCase(2, true, "llama")]
    [TestCase(3, false, "qwen2")]
    [TestCase(4, true, "llama")]
    [TestCase(5, false, "llama")]
    public async Task Random_plans_give_the_masked_teacher_logits(int seed, bool tied, string modelType)
    {
        LlamaConfig config = TinyModels.Config(modelType, heads: 8, kvHeads: 2, tied: tied, layers: 4) with { RmsNormEps = 1e-9, BosTokenId = 1, EosTokenIds = [2] };
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed);
        using var _ = teacher;
        var random = new Random(seed);
        var shape = new StudentShape(
            NumHiddenLayers: random.Next(1, 4),
            HiddenSize: random.Next(8, 32),
            IntermediateSize: random.Next(8, 64),
            NumAttentionHeads: random.Next(1, 3) * 2,
            NumKeyValueHeads: 2,
            VocabSize: random.Next(20, 50));
        SurgeryPlan plan = PlanBuilder.Random(config, shape, seed);
        string studentDir = Path.Combine(_dir, "student");

        await StudentBuilder.BuildAsync(teacherDir, plan, studentDir);
        using LlamaForCausalLM student = ModelCheckpoint.Load(studentDir, new ModelLoadOptions { Device = "cpu" });
        using LlamaForCausalLM masked = MaskedTeacher(teacher, plan);

        int[] kept = [.. plan.KeptTokens!];
        long[] teacherIds = [.. TinyModels.RandomIds(13, kept.Length, seed).Select(i => (long)kept[i])];
        long[] studentIds = [.. teacherIds.Select(t => (long)Array.IndexOf(kept, (int)t))];
        using var scope = NewDisposeScope();
        Tensor expected = Logits(masked, teacherIds).index_select(1, tensor(kept.Select(k => (long)k).ToArray())); // [T, kept]
        Tensor actual = Logits(student, studentIds); // [T, kept]
        Assert.That(actual.shape, Is.EqualTo(expected.shape));
        Assert.That(TinyModels.MaxAbsDiff(actual, expected), Is.LessThan(1e-4), plan.Summary());

        // The comparison is sharp: the unmasked teacher gives different logits.
        Tensor unmasked = Logits(teacher, teacherIds).index_select(1, tensor(kept.Select(k => (long)k).ToArray()));
        Assert.That(TinyModels.MaxAbsDiff(unmasked, expected), Is.GreaterThan(1e-2));
    }

    private static LlamaForCausalLM MaskedTeacher(LlamaForCausalLM teacher, SurgeryPlan plan)
    {
        LlamaConfig config = teacher.Config;
        var masked = new LlamaForCausalLM(config);
        var state = teacher.ToStateDict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        int hd = config.HeadDim;
        var keptChannels = plan.HiddenChannels.ToHashSet();
        long[] removedChannels = [.. Enumerable.Range(0, config.HiddenSize).Where(c => !keptChannels.Contains(c)).Select(c => (long)c)];
        double normScale = Math.Sqrt((double)plan.HiddenChannels.Count / config.HiddenSize);
        using (no_grad())
        {
            void ZeroRows(string name, long[] rows)
            {
                if (rows.Length > 0)
                {
                    state[name].index_fill_(0, tensor(rows), 0);
                }
            }

            void ZeroColumns(string name, long[] columns)
            {
                if (columns.Length > 0)
                {
                    state[name].index_fill_(1, tensor(columns), 0);
                }
            }

            ZeroColumns(LlamaTensorLayout.EmbedTokens, removedChannels);
            state[LlamaTensorLayout.FinalNorm].mul_(normScale);
            var keptLayers = plan.Layers.ToDictionary(l => l.TeacherLayer);
            for (int layer = 0; layer < config.NumHiddenLayers; layer++)
            {
                string p = LlamaTensorLayout.LayerPrefix(layer);
                state[p + "input_layernorm.weight"].mul_(normScale);
                state[p + "post_attention_layernorm.weight"].mul_(normScale);
                keptLayers.TryGetValue(layer, out LayerPlan? kept);
                var keptHeads = kept?.QueryHeads.ToHashSet() ?? [];
                var keptNeurons = kept?.Neurons.ToHashSet() ?? [];
                long[] removedHeadColumns = [.. Enumerable.Range(0, config.NumAttentionHeads).Where(h => !keptHeads.Contains(h)).SelectMany(h => Enumerable.Range(h * hd, hd)).Select(c => (long)c)];
                long[] removedNeurons = [.. Enumerable.Range(0, config.IntermediateSize).Where(n => !keptNeurons.Contains(n)).Select(n => (long)n)];
                ZeroColumns(p + "self_attn.o_proj.weight", removedHeadColumns);
                ZeroRows(p + "self_attn.o_proj.weight", removedChannels);
                ZeroColumns(p + "mlp.down_proj.weight", removedNeurons);
                ZeroRows(p + "mlp.down_proj.weight", removedChannels);
            }
        }

        masked.LoadStateDict(state);
        masked.eval();
        foreach (Tensor t in state.Values)
        {
            t.Dispose();
        }

        return masked;
    }

    [Test]
    public async Task A_plan_for_another_teacher_is_refused_naming_the_field()
    {
        LlamaConfig config = TinyModels.Config(layers: 2);
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed: 1);
        teacher.Dispose();
        SurgeryPlan plan = PlanBuilder.Identity(config with { IntermediateSize = 128 });

        var ex = Assert.ThrowsAsync<InvalidDataException>(() => StudentBuilder.BuildAsync(teacherDir, plan, Path.Combine(_dir, "student")));
        Assert.That(ex!.Message, Does.Contain("intermediate_size"));
        Assert.That(Directory.Exists(Path.Combine(_dir, "student")), Is.False);
    }

    [Test]
    public async Task A_missing_teacher_tensor_is_named_before_anything_is_written()
    {
        LlamaConfig config = TinyModels.Config(layers: 2);
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed: 1);
        using (teacher)
        {
            // Rewrite the teacher without one tensor.
            var tensors = teacher.ToStateDict().Where(kv => kv.Key != "model.layers.1.mlp.up_proj.weight").Select(kv => (kv.Key, kv.Value)).ToList();
            await CheckpointWriter.WriteAsync(teacherDir, tensors);
        }

        var ex = Assert.ThrowsAsync<InvalidDataException>(() => StudentBuilder.BuildAsync(teacherDir, PlanBuilder.Identity(config), Path.Combine(_dir, "student")));
        Assert.That(ex!.Message, Does.Contain("model.layers.1.mlp.up_proj.weight"));
        Assert.That(Directory.Exists(Path.Combine(_dir, "student")), Is.False);
    }

    [Test]
    public async Task Memory_estimate_over_the_limit_is_refused_unless_overridden()
    {
        LlamaConfig config = TinyModels.Config(layers: 2);
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed: 1);
        teacher.Dispose();
        var options = new StudentBuildOptions { MemoryLimitBytes = 1000 };

        var ex = Assert.ThrowsAsync<InvalidOperationException>(() => StudentBuilder.BuildAsync(teacherDir, PlanBuilder.Identity(config), Path.Combine(_dir, "refused"), options));
        Assert.That(ex!.Message, Does.Contain("available"));
        Assert.That(Directory.Exists(Path.Combine(_dir, "refused")), Is.False);

        StudentBuildResult built = await StudentBuilder.BuildAsync(teacherDir, PlanBuilder.Identity(config), Path.Combine(_dir, "forced"), options with { IgnoreMemoryEstimate = true });
        Assert.That(File.Exists(Path.Combine(built.Directory, "model.safetensors")), Is.True);
    }

    [Test]
    public async Task Memory_estimate_counts_the_direct_write_buffer()
    {
        LlamaConfig config = TinyModels.Config(layers: 2);
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed: 1);
        teacher.Dispose();
        SurgeryPlan plan = PlanBuilder.Identity(config);
        // One read worker whatever the storage: the estimate then holds two chunk buffers, the one read and the one written.
        var pageCache = new StudentBuildOptions { DirectWrite = false, ReadWorkers = 1 };
        long heldByWriter = new CheckpointWriterOptions { DirectWrite = true }.HeldBufferBytes;
        long withoutWriter = PlanEstimate.For(plan, "float32", "float32", 2 * pageCache.ChunkBytes).PeakBytes;
        Assert.That(heldByWriter, Is.GreaterThan(0));
        Assert.That(new CheckpointWriterOptions { DirectWrite = false }.HeldBufferBytes, Is.Zero);

        // A limit between the two estimates: the page-cache build fits, the direct-writing one does not.
        long limit = withoutWriter + (heldByWriter / 2);
        StudentBuildResult built = await StudentBuilder.BuildAsync(teacherDir, plan, Path.Combine(_dir, "page-cache"), pageCache with { MemoryLimitBytes = limit });
        Assert.That(File.Exists(Path.Combine(built.Directory, "model.safetensors")), Is.True);
        var ex = Assert.ThrowsAsync<InvalidOperationException>(() => StudentBuilder.BuildAsync(teacherDir, plan, Path.Combine(_dir, "direct"), pageCache with { DirectWrite = true, MemoryLimitBytes = limit }));
        Assert.That(ex!.Message, Does.Contain(string.Create(CultureInfo.InvariantCulture, $"{withoutWriter + heldByWriter:N0} bytes")));
    }

    [Test]
    public async Task Memory_estimate_counts_a_chunk_buffer_per_read_worker()
    {
        LlamaConfig config = TinyModels.Config(layers: 2);
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed: 1);
        teacher.Dispose();
        SurgeryPlan plan = PlanBuilder.Identity(config);
        var options = new StudentBuildOptions { DirectWrite = false, ChunkBytes = 1L << 30 };
        long Estimate(int chunks) => PlanEstimate.For(plan, "float32", "float32", chunks * options.ChunkBytes).PeakBytes;

        // Three workers hold three chunks besides the one written; one worker fits under a limit below that.
        long limit = Estimate(3);
        StudentBuildResult built = await StudentBuilder.BuildAsync(teacherDir, plan, Path.Combine(_dir, "one"), options with { ReadWorkers = 1, MemoryLimitBytes = limit });
        Assert.That(File.Exists(Path.Combine(built.Directory, "model.safetensors")), Is.True);
        var ex = Assert.ThrowsAsync<InvalidOperationException>(() => StudentBuilder.BuildAsync(teacherDir, plan, Path.Combine(_dir, "three"), options with { ReadWorkers = 3, MemoryLimitBytes = limit }));
        Assert.That(ex!.Message, Does.Contain(string.Create(CultureInfo.InvariantCulture, $"{Estimate(4):N0} bytes")));

        // Without reading ahead one chunk is in flight, whatever the workers.
        built = await StudentBuilder.BuildAsync(teacherDir, plan, Path.Combine(_dir, "sequential"), options with { ReadAhead = false, ReadWorkers = 3, MemoryLimitBytes = Estimate(1) });
        Assert.That(File.Exists(Path.Combine(built.Directory, "model.safetensors")), Is.True);
    }

    [Test]
    public async Task Without_a_worker_count_the_build_reads_as_the_teachers_storage_allows()
    {
        LlamaConfig config = TinyModels.Config(layers: 2);
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed: 1);
        teacher.Dispose();
        StudentBuildResult built = await StudentBuilder.BuildAsync(teacherDir, PlanBuilder.Identity(config), Path.Combine(_dir, "student"));
        bool? rotational = ModelSurgery.Inference.IO.StorageDevice.IsRotational(Path.Combine(teacherDir, CheckpointReader.SingleFileName));
        Assert.That(built.ReadWorkers, Is.EqualTo(rotational == true ? 1 : StudentBuilder.DefaultReadWorkers), $"rotational: {rotational?.ToString() ?? "unknown"}");
    }

    [TestCase(0)]
    [TestCase(-2)]
    public void Read_workers_below_one_are_refused_naming_the_option(int workers)
    {
        var ex = Assert.ThrowsAsync<ArgumentException>(async () =>
        {
            LlamaConfig config = TinyModels.Config(layers: 2);
            var (teacher, teacherDir) = await SaveTeacherAsync(config, seed: 1);
            teacher.Dispose();
            await StudentBuilder.BuildAsync(teacherDir, PlanBuilder.Identity(config), Path.Combine(_dir, "student"), new StudentBuildOptions { ReadWorkers = workers });
        });
        Assert.That(ex!.Message, Does.Contain("read_workers").And.Contain(workers.ToString(CultureInfo.InvariantCulture)));
        Assert.That(Directory.Exists(Path.Combine(_dir, "student")), Is.False);
    }

    [Test]
    public async Task Cancellation_leaves_no_checkpoint_under_a_final_name()
    {
        LlamaConfig config = TinyModels.Config(layers: 3);
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed: 1);
        teacher.Dispose();
        string studentDir = Path.Combine(_dir, "student");
        using var cancellation = new CancellationTokenSource();
        var progress = new SynchronousProgress<StudentBuildProgress>(p =>
        {
            if (p.TensorsWritten == 5)
            {
                cancellation.Cancel();
            }
        });

        Assert.CatchAsync<OperationCanceledException>(() => StudentBuilder.BuildAsync(teacherDir, PlanBuilder.Identity(config), studentDir, progress: progress, cancellationToken: cancellation.Token));
        Assert.That(Directory.Exists(studentDir) ? Directory.GetFiles(studentDir) : [], Is.Empty);
    }

    [Test]
    public async Task Reads_only_kept_rows_and_copies_the_teacher_tokenizer_when_the_vocabulary_is_kept()
    {
        LlamaConfig config = TinyModels.Config(heads: 8, kvHeads: 2, layers: 4);
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed: 7);
        teacher.Dispose();
        await File.WriteAllTextAsync(Path.Combine(teacherDir, "tokenizer.json"), "{}");
        SurgeryPlan plan = PlanBuilder.For(config, ImportanceScorer.ToImportanceScores("random", "test", RandomMetric.Generate(config, seed: 1))).KeepLayers([0, 3]).KeepWholeKvGroups(1).Build();

        StudentBuildResult result = await StudentBuilder.BuildAsync(teacherDir, plan, Path.Combine(_dir, "student"));

        long teacherBytes = LlamaTensorLayout.CountParameters(config).Total * 4;
        Assert.That(result.BytesRead, Is.LessThan(teacherBytes));
        Assert.That(result.BytesWritten, Is.EqualTo(plan.ParameterCount.Total * 4));
        Assert.That(result.Config.NumHiddenLayers, Is.EqualTo(2));
        Assert.That(result.Config.NumAttentionHeads, Is.EqualTo(4));
        Assert.That(result.Config.NumKeyValueHeads, Is.EqualTo(1));
        Assert.That(File.ReadAllText(Path.Combine(result.Directory, "tokenizer.json")), Is.EqualTo("{}"));
    }

    /// <summary>
    /// Reading ahead changes only when chunks are read, and direct writing only how they reach storage, never what is
    /// written: a pipelined build with direct writes equals a sequential one through the page cache byte for byte in every
    /// file, with chunks small enough to split every tensor, several shards and a padded vocabulary.
    /// </summary>
    [TestCase(1, 1)]
    [TestCase(2, 3)]
    public async Task Reading_ahead_writes_the_same_bytes_as_a_sequential_build(int seed, int readWorkers)
    {
        LlamaConfig config = TinyModels.Config(heads: 8, kvHeads: 2, layers: 4);
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed);
        teacher.Dispose();
        var random = new Random(seed);
        var shape = new StudentShape(3, random.Next(8, 32), random.Next(8, 64), 4, 2, random.Next(20, 50));
        SurgeryPlan plan = PlanBuilder.Random(config, shape, seed);
        var options = new StudentBuildOptions { ChunkBytes = 100, MaxShardBytes = 4_000, PadVocabToMultiple = 64, DType = SafetensorsDType.BF16 };
        var reports = new List<StudentBuildProgress>();

        // Through the page cache and one chunk at a time, against direct writes (the default) and reading ahead.
        StudentBuildResult sequential = await StudentBuilder.BuildAsync(teacherDir, plan, Path.Combine(_dir, "sequential"), options with { ReadAhead = false, DirectWrite = false });
        StudentBuildResult pipelined = await StudentBuilder.BuildAsync(teacherDir, plan, Path.Combine(_dir, "pipelined"), options with { ReadWorkers = readWorkers }, new SynchronousProgress<StudentBuildProgress>(reports.Add));

        string[] files = [.. Directory.GetFiles(sequential.Directory).Select(Path.GetFileName).Order(StringComparer.Ordinal)!];
        Assert.That(files.Count(f => f.EndsWith(".safetensors", StringComparison.Ordinal)), Is.GreaterThan(1), "several shards");
        Assert.That(Directory.GetFiles(pipelined.Directory).Select(Path.GetFileName).Order(StringComparer.Ordinal), Is.EqualTo(files));
        foreach (string file in files)
        {
            Assert.That(File.ReadAllBytes(Path.Combine(pipelined.Directory, file)), Is.EqualTo(File.ReadAllBytes(Path.Combine(sequential.Directory, file))), file);
        }

        Assert.That((pipelined.BytesRead, pipelined.BytesWritten), Is.EqualTo((sequential.BytesRead, sequential.BytesWritten)));
        Assert.That((pipelined.ReadWorkers, sequential.ReadWorkers), Is.EqualTo((readWorkers, 1)), "workers used, and one without reading ahead");
        Assert.That(reports.Select(r => r.TensorsWritten), Is.EqualTo(Enumerable.Range(1, reports[0].TensorCount)), "one report per tensor, in order");
    }

    /// <summary>
    /// A teacher split over several shards builds the same student, byte for byte, as the same teacher in one file, pipelined
    /// on one or several read workers or not, with the kept dtype (kept elements gathered straight into the write buffers) and chunks that split tensors.
    /// </summary>
    [Test]
    public async Task A_sharded_teacher_builds_the_same_bytes_as_one_file_pipelined_or_not()
    {
        LlamaConfig config = TinyModels.Config(heads: 8, kvHeads: 2, layers: 4);
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed: 3);
        string shardedDir = Path.Combine(_dir, "teacher-sharded");
        using (teacher)
        {
            await CheckpointWriter.WriteAsync(shardedDir, [.. teacher.ToStateDict().Select(kv => (kv.Key, kv.Value))], new CheckpointWriterOptions { MaxShardBytes = 6_000 });
        }

        File.Copy(Path.Combine(teacherDir, "config.json"), Path.Combine(shardedDir, "config.json"));
        using (var sharded = CheckpointReader.Open(shardedDir))
        {
            Assert.That(sharded.Shards, Has.Count.GreaterThan(2), "several teacher shards");
        }

        SurgeryPlan plan = PlanBuilder.Random(config, new StudentShape(3, 24, 40, 4, 2, config.VocabSize), seed: 3);
        var options = new StudentBuildOptions { ChunkBytes = 200 };

        StudentBuildResult single = await StudentBuilder.BuildAsync(teacherDir, plan, Path.Combine(_dir, "from-single"), options with { ReadAhead = false });
        StudentBuildResult sequential = await StudentBuilder.BuildAsync(shardedDir, plan, Path.Combine(_dir, "from-sharded-sequential"), options with { ReadAhead = false });
        var others = new List<StudentBuildResult> { sequential };
        foreach (int workers in new[] { 1, 2, 5 })
        {
            // Several workers read chunks of different shards at once; the writer still takes them in order.
            others.Add(await StudentBuilder.BuildAsync(shardedDir, plan, Path.Combine(_dir, $"from-sharded-{workers}-workers"), options with { ReadWorkers = workers }));
        }

        foreach (StudentBuildResult other in others)
        {
            Assert.That(File.ReadAllBytes(Path.Combine(other.Directory, CheckpointReader.SingleFileName)), Is.EqualTo(File.ReadAllBytes(Path.Combine(single.Directory, CheckpointReader.SingleFileName))), other.Directory);
            Assert.That(other.BytesRead, Is.EqualTo(single.BytesRead));
        }
    }

    [TestCase(1)]
    [TestCase(3)]
    public async Task A_damaged_teacher_tensor_stops_a_pipelined_build_naming_it(int readWorkers)
    {
        LlamaConfig config = TinyModels.Config(layers: 2);
        var (teacher, teacherDir) = await SaveTeacherAsync(config, seed: 1);
        using (teacher)
        {
            // Rewrite the teacher with one NaN late in a tensor that several chunks are read ahead of.
            var tensors = teacher.ToStateDict().Select(kv => (kv.Key, kv.Value)).ToList();
            Tensor damaged = tensors.Single(t => t.Key == "model.layers.1.mlp.up_proj.weight").Value;
            using (no_grad())
            {
                damaged[damaged.shape[0] - 1, 2] = tensor(float.NaN);
            }

            await CheckpointWriter.WriteAsync(teacherDir, tensors);
        }

        var ex = Assert.ThrowsAsync<InvalidDataException>(() => StudentBuilder.BuildAsync(teacherDir, PlanBuilder.Identity(config), Path.Combine(_dir, "student"), new StudentBuildOptions { ChunkBytes = 64, ReadWorkers = readWorkers }));
        Assert.That(ex!.Message, Does.Contain("model.layers.1.mlp.up_proj.weight").And.Contain("NaN"));
        Assert.That(Directory.Exists(Path.Combine(_dir, "student")) ? Directory.GetFiles(Path.Combine(_dir, "student")) : [], Is.Empty);
    }
}
