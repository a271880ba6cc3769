using System.Text.Json;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Tests.Training;
using ModelSurgery.Training.Data;

namespace ModelSurgery.Tests.Cli;

/// <summary>Tiny checkpoints, token files and the options of the training tests (the command-line runner is <c>CliRunner</c> in the end-to-end tests).</summary>
internal static class TrainCliSupport
{
    public const int Vocab = 64;

    public static LlamaConfig Config(int vocab = Vocab, int layers = 2) => new()
    {
        VocabSize = vocab,
        HiddenSize = 32,
        IntermediateSize = 64,
        NumHiddenLayers = layers,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        MaxPositionEmbeddings = 64,
        EosTokenIds = [vocab - 1],
    };

    /// <summary>Writes a randomly initialised model as a checkpoint folder.</summary>
    public static async Task<string> SaveModelAsync(string directory, long seed, int vocab = Vocab, int layers = 2)
    {
        using var model = new LlamaForCausalLM(Config(vocab, layers));
        model.InitializeWeights(seed);
        await ModelCheckpoint.SaveAsync(model, directory);
        return directory;
    }

    /// <summary>A learnable token file (see <see cref="TrainingTestData.WritePatternFile"/>) with its description.</summary>
    public static string WriteTokens(string directory, int vocab = Vocab, double validationFraction = 0.1)
    {
        string path = TrainingTestData.WritePatternFile(directory, vocab, documents: 60, documentLength: 40);
        using (TokenFile file = TokenFile.Open(path))
        {
            new TokenFileInfo { Tokens = file.Count, Documents = 60, VocabSize = vocab, SeparatorId = vocab - 1, ValidationFraction = validationFraction }.Save(path);
        }

        return path;
    }

    /// <summary>Options every training test uses: small batches, a high learning rate, CPU.</summary>
    public static string[] FastOptions(int steps, int evalEvery = 10) =>
        ["--steps", steps.ToString(System.Globalization.CultureInfo.InvariantCulture), "--lr", "1e-2", "--min-lr", "1e-3", "--batch-size", "4", "--seq-len", "16", "--eval-every", evalEvery.ToString(System.Globalization.CultureInfo.InvariantCulture), "--eval-batches", "2", "--device", "cpu"];

    /// <summary>The training losses in a metrics.jsonl, in step order.</summary>
    public static double[] Losses(string metricsPath) =>
        [.. File.ReadAllLines(metricsPath)
            .Select(line => JsonDocument.Parse(line).RootElement)
            .Where(e => e.TryGetProperty("loss", out _))
            .Select(e => e.GetProperty("loss").GetDouble())];
}
