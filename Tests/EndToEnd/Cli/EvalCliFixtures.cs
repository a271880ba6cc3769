using System.Globalization;
using System.Text.Json.Nodes;
using ModelSurgery.Cli;
using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Tests.Cli;

/// <summary>What one in-process run of the tool returned.</summary>
internal sealed record CliRun(int ExitCode, string Output, string Error)
{
    /// <summary>Standard error split into non-empty lines.</summary>
    public string[] ErrorLines => Error.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries);

    public override string ToString() => $"exit {ExitCode}\nstdout:\n{Output}\nstderr:\n{Error}";
}

/// <summary>Runs the tool in-process and writes the tiny models, tokenizers and data files the CLI tests share.</summary>
internal static class CliFixtures
{
    /// <summary>The tiny ASCII tokenizer's BOS id (its last id).</summary>
    public const int AsciiBos = 96;

    /// <summary>A config.json for a tiny Llama whose vocabulary is the ASCII tokenizer's.</summary>
    public const string TinyConfigJson = """
        {
          "architectures": ["LlamaForCausalLM"],
          "model_type": "llama",
          "hidden_size": 16,
          "intermediate_size": 40,
          "num_hidden_layers": 2,
          "num_attention_heads": 4,
          "num_key_value_heads": 2,
          "vocab_size": 97,
          "max_position_embeddings": 256,
          "rms_norm_eps": 1e-05,
          "rope_theta": 10000.0,
          "tie_word_embeddings": false,
          "bos_token_id": 96,
          "torch_dtype": "float32"
        }
        """;

    public static string Stories260KPath => Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "stories260K.bin");

    public static async Task<CliRun> RunAsync(params string[] args)
    {
        using var output = new StringWriter(CultureInfo.InvariantCulture);
        using var error = new StringWriter(CultureInfo.InvariantCulture);
        int code = await Program.RunAsync(args, output, error);
        return new CliRun(code, output.ToString(), error.ToString());
    }

    /// <summary>Runs the tool and fails the test with its output when the exit code is not 0.</summary>
    public static async Task<CliRun> RunOkAsync(params string[] args)
    {
        CliRun run = await RunAsync(args);
        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        return run;
    }

    /// <summary>Writes the tiny config.json into <paramref name="dir"/> and returns its path.</summary>
    public static string WriteTinyConfig(string dir)
    {
        string path = Path.Combine(dir, "tiny-config.json");
        File.WriteAllText(path, TinyConfigJson);
        return path;
    }

    /// <summary>Synthesises the tiny model (float32) with the ASCII tokenizer in <paramref name="modelDir"/>.</summary>
    public static async Task CreateTinyModelAsync(string workDir, string modelDir, int seed = 3)
    {
        string config = WriteTinyConfig(workDir);
        await RunOkAsync("synth", "--like", config, "--dtype", "f32", "--seed", seed.ToString(CultureInfo.InvariantCulture), "--out", modelDir);
        WriteAsciiTokenizer(modelDir);
    }

    /// <summary>A byte-level BPE tokenizer.json with one token per byte (ids 0..255, no merges) plus "&lt;s&gt;" (id 256).</summary>
    public static void WriteByteTokenizer(string modelDir) =>
        WriteByteLevelTokenizer(modelDir, Enumerable.Range(0, 256), bos: 256);

    /// <summary>
    /// A byte-level BPE tokenizer.json over newline and printable ASCII (ids 0..95, no merges) plus "&lt;s&gt;" (id 96):
    /// every id decodes to valid text, so streamed output can be compared with a whole decode.
    /// </summary>
    public static void WriteAsciiTokenizer(string modelDir) =>
        WriteByteLevelTokenizer(modelDir, Enumerable.Range(32, 95).Prepend(10), AsciiBos);

    private static void WriteByteLevelTokenizer(string modelDir, IEnumerable<int> bytes, int bos)
    {
        var vocab = new JsonObject();
        int id = 0;
        foreach (int b in bytes)
        {
            vocab[ByteLevelAlphabet.ToChar((byte)b).ToString()] = id++;
        }

        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(new JsonObject { ["id"] = bos, ["content"] = "<s>", ["special"] = true }),
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = new JsonArray() },
        };
        File.WriteAllText(Path.Combine(modelDir, "tokenizer.json"), root.ToJsonString());
    }
}
