using ModelSurgery.Inference.Modeling;
using ModelSurgery.Tests.Cli;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Recipes;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Training;

public sealed class LlamaRecipeTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("llama-recipe").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static LlamaForCausalLM NewModel(long seed, int vocab = TrainCliSupport.Vocab)
    {
        var model = new LlamaForCausalLM(TrainCliSupport.Config(vocab, layers: 3));
        model.InitializeWeights(seed);
        return model;
    }

    [Test]
    public void Hidden_states_are_the_outputs_of_each_layer_in_turn()
    {
        using var wrapped = new LlamaHiddenStates(NewModel(11));
        LlamaForCausalLM llama = wrapped.Llama;
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        Tensor ids = torch.tensor(new long[] { 3, 9, 27, 17, 51, 25, 11, 33 }, [2, 4]); // [B, T]
        (Tensor logits, IReadOnlyList<Tensor> hidden) = wrapped.ForwardWithHiddenStates(ids);

        // Run the layers one at a time, each computing its own rotary tables from position 0.
        Tensor expected = llama.Embed(ids); // [B, T, D]
        Assert.That(hidden, Has.Count.EqualTo(3));
        for (int i = 0; i < llama.Layers.Count; i++)
        {
            expected = llama.Layers[i].forward(expected); // [B, T, D]
            Assert.That(hidden[i].allclose(expected, rtol: 0, atol: 1e-6), $"layer {i}");
        }

        Assert.That(logits.allclose(llama.forward(ids), rtol: 0, atol: 1e-5), "the logits are the model's");
        Assert.That(wrapped.forward(ids).allclose(logits, rtol: 0, atol: 1e-5));
    }

    [Test]
    public async Task The_checkpointer_saves_a_checkpoint_that_reloads_with_identical_logits_and_copies_tokenizer_files()
    {
        string source = Path.Combine(_dir, "source");
        Directory.CreateDirectory(source);
        File.WriteAllText(Path.Combine(source, "tokenizer.json"), "{\"model\":{}}");
        File.WriteAllText(Path.Combine(source, "vocab_map.json"), "{}");
        File.WriteAllText(Path.Combine(source, "notes.txt"), "not copied");
        using var wrapped = new LlamaHiddenStates(NewModel(13));
        string target = Path.Combine(_dir, "saved");
        Directory.CreateDirectory(target);
        await new SafetensorsModelCheckpointer(companionSource: source).SaveAsync(wrapped, target, CancellationToken.None);

        using LlamaForCausalLM reloaded = ModelCheckpoint.Load(target, new ModelLoadOptions { Device = "cpu" });
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        Tensor ids = torch.tensor(new long[] { 1, 2, 3, 60, 5 }, [1, 5]); // [1, T]
        Assert.Multiple(() =>
        {
            Assert.That(reloaded.forward(ids).allclose(wrapped.forward(ids), rtol: 0, atol: 0), "bit-identical logits");
            Assert.That(File.ReadAllText(Path.Combine(target, "tokenizer.json")), Is.EqualTo("{\"model\":{}}"));
            Assert.That(File.Exists(Path.Combine(target, "vocab_map.json")));
            Assert.That(File.Exists(Path.Combine(target, "notes.txt")), Is.False);
            Assert.That(Directory.GetFiles(target, "*.tmp"), Is.Empty);
        });
        Assert.Throws<ArgumentException>(() => SafetensorsModelCheckpointer.Unwrap(new TinyCausalLm(8, 4, 1)));
    }

    [Test]
    public void Open_data_uses_the_split_recorded_next_to_the_token_file_unless_overridden()
    {
        string path = TrainCliSupport.WriteTokens(_dir, validationFraction: 0.25);
        using TokenFile file = TokenFile.Open(path);
        long windows = TokenWindows.Count(file.Count, 16);
        TrainingData recorded = CheckpointTraining.OpenData(file, 16);
        TrainingData overridden = CheckpointTraining.OpenData(file, 16, new CheckpointTrainingSettings { ValidationFraction = 0 });
        Assert.Multiple(() =>
        {
            Assert.That(recorded.ValidationWindows, Has.Count.EqualTo((int)Math.Round(0.25 * windows)));
            Assert.That(recorded.ValidationWindows, Is.EqualTo(DatasetSplit.ByChunk(windows, 0.25, TokenFileInfo.DefaultSplitSeed).Validation));
            Assert.That(overridden.ValidationWindows, Is.Empty);
            Assert.That(overridden.TrainWindows, Has.Count.EqualTo((int)windows));
        });
    }

    [Test]
    public void Open_data_splits_at_the_recorded_validation_start_and_names_a_start_beyond_the_file()
    {
        string path = TrainCliSupport.WriteTokens(_dir, validationFraction: 0);
        using TokenFile file = TokenFile.Open(path);
        long start = file.Count / 2;
        new TokenFileInfo { Tokens = file.Count, VocabSize = TrainCliSupport.Vocab, SeparatorId = TrainCliSupport.Vocab - 1, ValidationStartToken = start }.Save(path);
        TrainingData data = CheckpointTraining.OpenData(file, 16);
        DatasetSplit expected = DatasetSplit.AtToken(file.Count, start, 16);
        Assert.Multiple(() =>
        {
            Assert.That((data.TrainWindows, data.ValidationWindows), Is.EqualTo((expected.Train, expected.Validation)));
            Assert.That(data.TrainWindows.Max() * 16 + 17, Is.LessThanOrEqualTo(start), "no training window reaches the held-out part");
            Assert.That(data.ValidationWindows.Min() * 16, Is.GreaterThanOrEqualTo(start));
            Assert.That(CheckpointTraining.OpenData(file, 16, new CheckpointTrainingSettings { ValidationFraction = 0 }).ValidationWindows, Is.Empty, "a fraction given overrides the recorded split");
        });

        // A description that belongs to a longer file, or a start that leaves no training window.
        new TokenFileInfo { Tokens = file.Count * 2, VocabSize = TrainCliSupport.Vocab, SeparatorId = TrainCliSupport.Vocab - 1, ValidationStartToken = file.Count + 1 }.Save(path);
        Assert.That(() => CheckpointTraining.OpenData(file, 16), Throws.ArgumentException.With.Message.Contains(path).And.Message.Contains("val_start_token"));
        new TokenFileInfo { Tokens = file.Count, VocabSize = TrainCliSupport.Vocab, SeparatorId = TrainCliSupport.Vocab - 1, ValidationStartToken = 10 }.Save(path);
        Assert.That(() => CheckpointTraining.OpenData(file, 16), Throws.ArgumentException.With.Message.Contains(path).And.Message.Contains("no training window"));

        // Both splits at once: refused, naming the description and both fields.
        new TokenFileInfo { Tokens = file.Count, VocabSize = TrainCliSupport.Vocab, SeparatorId = TrainCliSupport.Vocab - 1, ValidationStartToken = start, ValidationFraction = 0.1 }.Save(path);
        Assert.That(() => CheckpointTraining.OpenData(file, 16), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains(TokenFileInfo.PathFor(path)).And.Message.Contains("val_start_token").And.Message.Contains("val_fraction"));
    }
}
