using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Training;

namespace ModelSurgery.Tests.Training;

/// <summary>
/// The training disk estimate, part by part, against hand counts on a model small enough to count by hand, and its
/// check against an assumed free-disk figure: refused one byte below, passed at it.
/// </summary>
public sealed class TrainingDiskTests
{
    // 1 layer, hidden 4, FFN 6, 2 query heads sharing 1 KV head, vocab 10, untied: 212 parameters (see TrainingMemoryTests).
    private const string TinyJson = """
        {"model_type": "llama", "vocab_size": 10, "hidden_size": 4, "intermediate_size": 6, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64, "torch_dtype": "float32"}
        """;

    private const long P = 212;

    private string _dir = null!;

    private static LlamaConfig Tiny() => LlamaConfig.Parse(TinyJson);

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("training-disk").FullName;

    [TearDown]
    public void TearDown()
    {
        MemoryPreflight.FreeDiskOverride = null;
        Directory.Delete(_dir, recursive: true);
    }

    private TrainingOptions Options(TrainingPrecision precision = TrainingPrecision.Fp32) =>
        new() { BatchSize = 2, SeqLen = 8, Precision = precision, OutputDir = Path.Combine(_dir, "run") };

    [Test]
    public void Fp32_parts_match_a_hand_count()
    {
        TrainingDiskEstimate e = TrainingDisk.Estimate(Tiny(), Options(), companionBytes: 100);

        Assert.That(LlamaTensorLayout.CountParameters(Tiny()).Total, Is.EqualTo(P));
        Assert.That(e.Weights, Is.EqualTo(P * 4), "float32 weights");
        Assert.That(e.TrainingState, Is.EqualTo(3 * P * 4), "float32 weights and two float32 AdamW moments");
        Assert.That(e.Companions, Is.EqualTo(100));
        Assert.That(e.ModelCheckpoints, Is.EqualTo(1), "last only: no validation, so no best");
        Assert.That(e.TrainingStates, Is.EqualTo(1));
        Assert.That(e.Temporary, Is.EqualTo(3 * P * 4), "the state is the largest file rewritten");
        Assert.That(e.Total, Is.EqualTo(((P * 4) + 100) + (3 * P * 4) + (3 * P * 4)), "last (weights, tokenizer, state) and the temporary state, which outweighs the final checkpoint");
    }

    [Test]
    public void Bf16_stores_half_the_weights_but_a_float32_state()
    {
        TrainingDiskEstimate e = TrainingDisk.Estimate(Tiny(), Options(TrainingPrecision.Bf16));

        Assert.That(e.Weights, Is.EqualTo(P * 2));
        Assert.That(e.TrainingState, Is.EqualTo(3 * P * 4), "the masters and moments stay float32");
    }

    [Test]
    public void A_save_dtype_overrides_the_compute_dtype()
    {
        TrainingDiskEstimate e = TrainingDisk.Estimate(Tiny(), Options(), new ModelSaveOptions { DType = SafetensorsDType.BF16 });

        Assert.That(e.Weights, Is.EqualTo(P * 2));
    }

    [Test]
    public void Validation_and_rounds_multiply_the_kept_checkpoints()
    {
        TrainingDiskEstimate single = TrainingDisk.Estimate(Tiny(), Options(), validation: true);
        TrainingDiskEstimate rounds = TrainingDisk.Estimate(Tiny(), Options(), validation: true, rounds: 3);

        Assert.That(single.ModelCheckpoints, Is.EqualTo(2), "last and best");
        Assert.That(rounds.ModelCheckpoints, Is.EqualTo(6), "last and best of every round");
        Assert.That(rounds.TrainingStates, Is.EqualTo(3));
        Assert.That(rounds.Total - single.Total, Is.EqualTo((4 * P * 4) + (2 * 3 * P * 4)), "two more rounds of two checkpoints and a state");
    }

    [Test]
    public void Hidden_state_projections_are_saved_in_the_training_state()
    {
        LlamaConfig wider = LlamaConfig.Parse(TinyJson.Replace("\"hidden_size\": 4", "\"hidden_size\": 8", StringComparison.Ordinal));

        Assert.That(TrainingDisk.HiddenProjectionParameters(Tiny(), wider), Is.EqualTo(1 * 4 * 8), "one 4 x 8 matrix for the one student layer");
        Assert.That(TrainingDisk.HiddenProjectionParameters(Tiny(), Tiny()), Is.Zero, "equal widths need no projection");
        TrainingDiskEstimate e = TrainingDisk.Estimate(Tiny(), Options(), objectiveParameters: 32);
        Assert.That(e.TrainingState, Is.EqualTo(3 * (P + 32) * 4));
        Assert.That(e.Weights, Is.EqualTo(P * 4), "the checkpoint itself holds the model only");
    }

    [Test]
    public void Files_already_in_the_checkpoint_folders_count_as_replaced()
    {
        TrainingOptions options = Options();
        long fresh = TrainingDisk.Estimate(Tiny(), options).Total;
        Directory.CreateDirectory(Path.Combine(options.OutputDir, "checkpoints", "last"));
        File.WriteAllBytes(Path.Combine(options.OutputDir, "checkpoints", "last", Trainer.StateFileName), new byte[1000]);
        File.WriteAllBytes(Path.Combine(options.OutputDir, "metrics.jsonl"), new byte[500]);

        TrainingDiskEstimate resumed = TrainingDisk.Estimate(Tiny(), options);

        Assert.That(resumed.Replaced, Is.EqualTo(1000), "only checkpoint files are rewritten; metrics are appended to");
        Assert.That(resumed.Total, Is.EqualTo(fresh - 1000));
    }

    [Test]
    public void The_check_refuses_one_byte_below_the_estimate_and_passes_at_it()
    {
        string model = Path.Combine(_dir, "model");
        Directory.CreateDirectory(model);
        File.WriteAllText(Path.Combine(model, "tokenizer.json"), "{}");
        TrainingOptions options = Options();
        long needed = TrainingDisk.Estimate(Tiny(), options, companionBytes: 2).Total;

        MemoryPreflight.FreeDiskOverride = needed - 1;
        IOException refused = Assert.Throws<IOException>(() => TrainingDisk.EnsureFits(model, Tiny(), options))!;
        Assert.That(refused.Message, Does.Contain(options.OutputDir).And.Contain("--out").And.Contain(ByteSize.Format(needed)).And.Contain(ByteSize.Format(needed - 1)));
        Assert.That(refused.Message, Does.Contain("--precision bf16"), "names what lowers it");

        MemoryPreflight.FreeDiskOverride = needed;
        Assert.DoesNotThrow(() => TrainingDisk.EnsureFits(model, Tiny(), options));
    }
}
