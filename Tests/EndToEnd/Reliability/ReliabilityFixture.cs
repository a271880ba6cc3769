using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Tests.Cli;

namespace ModelSurgery.Tests.Reliability;

/// <summary>
/// The files every reliability case starts from, made once through the tool itself: a tiny teacher with a tokenizer,
/// a corpus and its token file, scores, a plan, a built student and a finished training run. Each case works on its
/// own copy, so what one case does cannot reach another.
/// </summary>
internal static class ReliabilityFixture
{
    private static readonly SemaphoreSlim Gate = new(1, 1);
    private static string? _base;

    /// <summary>Tokenizer id of the separator used in the token file.</summary>
    public const string Separator = "96";

    /// <summary>Options of a quick CPU training run on the tiny models.</summary>
    public static readonly string[] QuickTrain = ["--steps", "2", "--batch-size", "2", "--seq-len", "16", "--eval-every", "0", "--eval-batches", "1", "--device", "cpu"];

    /// <summary>The shared base folder, made on first use.</summary>
    public static async Task<string> BaseAsync()
    {
        await Gate.WaitAsync();
        try
        {
            return _base ??= await CreateAsync();
        }
        finally
        {
            Gate.Release();
        }
    }

    /// <summary>A fresh copy of the base folder for one case.</summary>
    public static async Task<string> CopyAsync(string name)
    {
        string source = await BaseAsync();
        string target = Directory.CreateTempSubdirectory("reliability-" + name).FullName;
        foreach (string file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
        {
            string destination = Path.Combine(target, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
            File.Copy(file, destination);
        }

        return target;
    }

    /// <summary>
    /// SHA-256 of every file below <paramref name="root"/>, by relative path. The sparse stand-ins for huge checkpoints
    /// (over 64 MiB, all holes past the header) are identified by their first MiB, length and write time instead.
    /// </summary>
    public static Dictionary<string, string> Hashes(string root) =>
        Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(root, f), Hash, StringComparer.Ordinal);

    private static string Hash(string file)
    {
        var info = new FileInfo(file);
        using FileStream stream = info.OpenRead();
        if (info.Length <= 64L << 20)
        {
            return Convert.ToHexString(SHA256.HashData(stream));
        }

        byte[] head = new byte[1 << 20];
        stream.ReadExactly(head);
        return $"{Convert.ToHexString(SHA256.HashData(head))}:{info.Length}:{info.LastWriteTimeUtc.Ticks}";
    }

    /// <summary>Sets one key of a model folder's config.json.</summary>
    public static void SetConfig(string modelDir, string key, JsonNode? value)
    {
        string path = Path.Combine(modelDir, "config.json");
        var root = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        root[key] = value;
        File.WriteAllText(path, root.ToJsonString());
    }

    /// <summary>Overwrites the first element of a float32 tensor in a model folder's model.safetensors.</summary>
    public static void PoisonFirstElement(string modelDir, string tensor, float value)
    {
        string path = Path.Combine(modelDir, "model.safetensors");
        (long dataStart, JsonObject header) = ReadHeader(path);
        var entry = header[tensor]!.AsObject();
        Assert.That(entry["dtype"]!.GetValue<string>(), Is.EqualTo("F32"), "the fixture stores float32 weights");
        long begin = entry["data_offsets"]![0]!.GetValue<long>();
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Write);
        stream.Position = dataStart + begin;
        stream.Write(BitConverter.GetBytes(value));
    }

    /// <summary>Relabels a float32 tensor as int32 (same size, so the header keeps its length).</summary>
    public static void RelabelAsInt32(string modelDir, string tensor)
    {
        string path = Path.Combine(modelDir, "model.safetensors");
        byte[] bytes = File.ReadAllBytes(path);
        long headerLength = BitConverter.ToInt64(bytes, 0);
        string header = Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        int at = header.IndexOf($"\"{tensor}\"", StringComparison.Ordinal);
        int dtype = header.IndexOf("\"F32\"", at, StringComparison.Ordinal);
        Assert.That(at >= 0 && dtype > at, Is.True, header);
        header = string.Concat(header.AsSpan(0, dtype), "\"I32\"", header.AsSpan(dtype + 5));
        Encoding.UTF8.GetBytes(header).CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
    }

    /// <summary>A second name for <paramref name="existing"/> (a hard link); the case is skipped where hard links cannot be made.</summary>
    public static void HardLink(string existing, string created)
    {
        if (!OperatingSystem.IsLinux() || NativeMethods.Link(Encoding.UTF8.GetBytes(existing + "\0"), Encoding.UTF8.GetBytes(created + "\0")) != 0)
        {
            Assert.Ignore("hard links are made with libc link() on Linux only");
        }
    }

    /// <summary>Tokenizes <paramref name="text"/> with the fixture's tokenizer into the token file <paramref name="name"/>.</summary>
    public static void Tokenize(string d, string text, string name)
    {
        File.WriteAllText(Path.Combine(d, name + ".txt"), text);
        CliFixtures.RunOkAsync("tokenize", "--tokenizer", Path.Combine(d, "m"), "--in", Path.Combine(d, name + ".txt"), "--out", Path.Combine(d, name), "--separator-id", Separator).GetAwaiter().GetResult();
    }

    /// <summary>The sample distillation recipe.</summary>
    public static string SampleRecipe
    {
        get
        {
            DirectoryInfo? dir = new(TestContext.CurrentContext.TestDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "ModelSurgery.sln")))
            {
                dir = dir.Parent;
            }

            Assert.That(dir, Is.Not.Null, "the repository root above the test folder");
            return Path.Combine(dir!.FullName, "Samples", "pipelines", "distill.recipe.json");
        }
    }

    /// <summary>Rewrites model.safetensors with <paramref name="tensor"/>'s header entry written twice.</summary>
    public static void DuplicateTensor(string modelDir, string tensor)
    {
        string path = Path.Combine(modelDir, "model.safetensors");
        byte[] bytes = File.ReadAllBytes(path);
        long length = BitConverter.ToInt64(bytes, 0);
        string header = Encoding.UTF8.GetString(bytes, 8, (int)length).TrimEnd();
        JsonNode entry = JsonNode.Parse(header)![tensor]!;
        string duplicated = string.Concat(header.AsSpan(0, header.Length - 1), $",\"{tensor}\":{entry.ToJsonString()}}}");
        byte[] json = Encoding.UTF8.GetBytes(duplicated);
        int padded = (json.Length + 7) / 8 * 8;
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write);
        stream.Write(BitConverter.GetBytes((long)padded));
        stream.Write(json);
        stream.Write(Enumerable.Repeat((byte)' ', padded - json.Length).ToArray());
        stream.Write(bytes.AsSpan(8 + (int)length));
    }

    /// <summary>
    /// A checkpoint folder with the exact header of a large model and a sparse data area (nothing is written to disk
    /// beyond the header), for the memory preflight: the shapes are real, the bytes are holes.
    /// </summary>
    public static void WriteSparseCheckpoint(string modelDir, LlamaConfig config)
    {
        Directory.CreateDirectory(modelDir);
        config.Save(Path.Combine(modelDir, "config.json"));
        var header = new JsonObject();
        long offset = 0;
        foreach (TensorSpec spec in LlamaTensorLayout.Tensors(config))
        {
            long bytes = spec.ElementCount * 2;
            header[spec.Name] = new JsonObject
            {
                ["dtype"] = "BF16",
                ["shape"] = new JsonArray([.. spec.Shape.Select(s => (JsonNode)s)]),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }

        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        using var stream = new FileStream(Path.Combine(modelDir, "model.safetensors"), FileMode.CreateNew, FileAccess.Write);
        stream.Write(BitConverter.GetBytes((long)padded));
        stream.Write(json);
        stream.Write(Enumerable.Repeat((byte)' ', padded - json.Length).ToArray());
        stream.SetLength(8 + padded + offset);
    }

    /// <summary>A Llama-3-70B-shaped config (70.6 billion parameters).</summary>
    public static LlamaConfig Llama70B() => new()
    {
        VocabSize = 128256,
        HiddenSize = 8192,
        IntermediateSize = 28672,
        NumHiddenLayers = 80,
        NumAttentionHeads = 64,
        NumKeyValueHeads = 8,
        MaxPositionEmbeddings = 8192,
        RopeTheta = 500000,
        TorchDtype = "bfloat16",
        BosTokenId = 1,
    };

    private static class NativeMethods
    {
        [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "link", SetLastError = true)]
        public static extern int Link(byte[] existing, byte[] created);
    }

    private static (long DataStart, JsonObject Header) ReadHeader(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        long length = BitConverter.ToInt64(bytes, 0);
        return (8 + length, JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, (int)length))!.AsObject());
    }

    private static async Task<string> CreateAsync()
    {
        string b = Directory.CreateTempSubdirectory("reliability-base").FullName;
        await CliFixtures.CreateTinyModelAsync(b, Path.Combine(b, "m"));
        var corpus = new StringBuilder();
        for (int i = 0; i < 60; i++)
        {
            corpus.Append(CultureInfo.InvariantCulture, $"{{\"text\": \"the cat {i} sat on the mat and saw {i % 7} birds fly over the old red barn\"}}\n");
        }

        await File.WriteAllTextAsync(Path.Combine(b, "c.jsonl"), corpus.ToString());
        await File.WriteAllTextAsync(Path.Combine(b, "ids.txt"), "96 40 41 42 43 44 45 46 47");
        File.Copy(CliFixtures.Stories260KPath, Path.Combine(b, "stories.bin"));
        string P(string name) => Path.Combine(b, name);
        await CliFixtures.RunOkAsync("tokenize", "--tokenizer", P("m"), "--in", P("c.jsonl"), "--out", P("tokens.bin"), "--separator-id", Separator, "--val-fraction", "0.1");
        await CliFixtures.RunOkAsync("score", "--model", P("m"), "--tokens", P("tokens.bin"), "--metric", "l2", "--sequences", "4", "--length", "16", "--out", P("scores"), "--device", "cpu");
        await CliFixtures.RunOkAsync("plan", "--model", P("m"), "--scores", Path.Combine(b, "scores", "l2.json"), "--layers", "1", "--out", P("plan.json"));
        await CliFixtures.RunOkAsync("build", "--model", P("m"), "--plan", P("plan.json"), "--out", P("student"), "--tokenizer", Path.Combine(b, "m", "tokenizer.json"));
        await CliFixtures.RunOkAsync(["train", "--model", P("student"), "--data", P("tokens.bin"), "--out", P("run"), .. QuickTrain]);
        return b;
    }
}
