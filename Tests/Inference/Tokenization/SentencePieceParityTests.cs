using System.Diagnostics;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Tests.Support;

namespace ModelSurgery.Tests.Tokenizers;

/// <summary>
/// <see cref="SentencePieceProcessor"/> against the real SentencePiece: goldens written by
/// Tests/Fixtures/Tokenizers/sentencepiece/generate-goldens.cjs with SentencePiece's C++ compiled to WebAssembly.
/// Ids must be identical for every document, and so must the decoded text.
/// </summary>
public sealed class SentencePieceParityTests
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    [TestCase("albert-30k-clean")]
    [TestCase("mistral-7b-derived")]
    public void Every_corpus_document_encodes_and_decodes_as_SentencePiece_does(string name) =>
        CompareCorpus(name, Model(name), Path.Combine(SentencePieceTestModels.GoldenDirectory, $"{name}.corpus.golden.bin.gz"));

    [TestCase("albert-30k-clean", "hard")]
    [TestCase("albert-30k-clean", "cjkEmoji")]
    [TestCase("mistral-7b-derived", "hard")]
    [TestCase("mistral-7b-derived", "cjkEmoji")]
    public void Hard_strings_give_SentencePiece_ids_pieces_and_decoding(string name, string set)
    {
        int byteFallbackPieces = CompareStrings(Model(name), Path.Combine(SentencePieceTestModels.GoldenDirectory, $"{name}.strings.golden.json.gz"), set);
        if (name == "mistral-7b-derived" && set == "cjkEmoji")
        {
            // The point of this set: most of it is spelled in byte pieces.
            Assert.That(byteFallbackPieces, Is.GreaterThan(2000));
        }
    }

    /// <summary>
    /// Any other model (Llama 2's tokenizer.model, which cannot be committed): set SENTENCEPIECE_EXTRA_MODEL to the file
    /// when running generate-goldens.cjs and this test; the goldens go to the models folder, not the fixtures.
    /// </summary>
    [Test]
    [Explicit("Needs SENTENCEPIECE_EXTRA_MODEL and goldens made for it by generate-goldens.cjs.")]
    public void Extra_model_encodes_and_decodes_as_SentencePiece_does()
    {
        string path = Environment.GetEnvironmentVariable("SENTENCEPIECE_EXTRA_MODEL") ?? "";
        if (!File.Exists(path))
        {
            Assert.Ignore("SENTENCEPIECE_EXTRA_MODEL does not name a .model file.");
        }

        string name = Path.GetFileNameWithoutExtension(path);
        SentencePieceModel model = SentencePieceModel.Load(path);
        CompareCorpus(name, model, Path.Combine(ModelsDirectory, $"{name}.corpus.golden.bin.gz"));
        CompareStrings(model, Path.Combine(ModelsDirectory, $"{name}.strings.golden.json.gz"), "hard", name);
        CompareStrings(model, Path.Combine(ModelsDirectory, $"{name}.strings.golden.json.gz"), "cjkEmoji", name);
    }

    /// <summary>Where <see cref="Write_models_for_goldens"/> writes models (and the goldens of an extra model go).</summary>
    private static string ModelsDirectory => Environment.GetEnvironmentVariable("SENTENCEPIECE_GOLDEN_MODELS")
        ?? Path.Combine(DotnetCli.FindRepositoryRoot("ModelSurgery.sln"), "artifacts", "sentencepiece-golden-models");

    private static void CompareCorpus(string name, SentencePieceModel model, string goldenPath)
    {
        var processor = new SentencePieceProcessor(model);
        CorpusGolden golden = CorpusGolden.Read(goldenPath);
        Assert.That(Convert.ToHexString(SHA256.HashData(model.ToBytes())), Is.EqualTo(golden.ModelSha256), $"{name}: the goldens were made from another model");
        IReadOnlyList<string> documents = SentencePieceTestModels.CorpusDocuments();
        Assert.That(documents, Has.Count.EqualTo(golden.Documents.Count), "documents in Samples/Data vs goldens");

        var failures = new List<string>();
        int idsIdentical = 0, decodedIdentical = 0;
        long bytes = 0, tokens = 0;
        using var allIds = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var allDecoded = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < documents.Count; i++)
        {
            int[] ids = processor.Encode(documents[i]);
            byte[] decoded = Encoding.UTF8.GetBytes(processor.Decode(ids));
            byte[] idBytes = IdBytes(ids);
            allIds.AppendData(Varint(ids.Length));
            allIds.AppendData(idBytes);
            allDecoded.AppendData(Varint(decoded.Length));
            allDecoded.AppendData(decoded);
            bytes += Encoding.UTF8.GetByteCount(documents[i]);
            tokens += ids.Length;
            CorpusGolden.Document expected = golden.Documents[i];
            bool idsMatch = ids.Length == expected.Count && Prefix(idBytes) == expected.IdsHash;
            bool decodedMatch = Prefix(decoded) == expected.DecodedHash;
            idsIdentical += idsMatch ? 1 : 0;
            decodedIdentical += decodedMatch ? 1 : 0;
            if ((!idsMatch || !decodedMatch) && failures.Count < 10)
            {
                string text = documents[i].Length > 120 ? documents[i][..120] + "..." : documents[i];
                failures.Add($"document {i} ({(idsMatch ? "decode" : $"ids: {ids.Length} vs {expected.Count}")}): {JsonSerializer.Serialize(text)} -> "
                    + string.Join(" ", processor.EncodeToPieces(documents[i]).Take(40)));
            }
        }

        double seconds = watch.Elapsed.TotalSeconds;
        TestContext.Out.WriteLine($"{name}: ids identical {idsIdentical}/{documents.Count}, decode identical {decodedIdentical}/{documents.Count}; "
            + $"{tokens:N0} tokens, {bytes / 1e6:F2} MB encoded and decoded in {seconds:F2} s");
        Assert.Multiple(() =>
        {
            Assert.That(failures, Is.Empty, string.Join("\n", failures));
            Assert.That(idsIdentical, Is.EqualTo(documents.Count), "documents with identical ids");
            Assert.That(decodedIdentical, Is.EqualTo(documents.Count), "documents with identical decoded text");
            Assert.That(Convert.ToHexString(allIds.GetHashAndReset()), Is.EqualTo(golden.AllIdsSha256), "SHA-256 over all ids");
            Assert.That(Convert.ToHexString(allDecoded.GetHashAndReset()), Is.EqualTo(golden.AllDecodedSha256), "SHA-256 over all decoded text");
        });
    }

    /// <summary>Compares one set of the full string goldens; returns how many byte-fallback pieces they hold.</summary>
    private static int CompareStrings(SentencePieceModel model, string goldenPath, string set, string? name = null)
    {
        var processor = new SentencePieceProcessor(model);
        using JsonDocument golden = ReadJsonGz(goldenPath);
        Assert.That(Convert.ToHexString(SHA256.HashData(model.ToBytes())), Is.EqualTo(golden.RootElement.GetProperty("sha256").GetString()).IgnoreCase,
            $"{goldenPath}: the goldens were made from another model");
        JsonElement cases = golden.RootElement.GetProperty(set);
        Assert.That(cases.GetArrayLength(), Is.GreaterThan(100));
        return CompareCases(processor, cases, name is null ? set : $"{name} {set}");
    }

    [Test]
    public void Tiny_models_give_SentencePiece_ids_pieces_and_decoding()
    {
        using JsonDocument golden = JsonDocument.Parse(File.ReadAllText(Path.Combine(SentencePieceTestModels.GoldenDirectory, "tiny-models.golden.json")));
        var byName = golden.RootElement.EnumerateArray().ToDictionary(e => e.GetProperty("model").GetString()!);
        IReadOnlyList<TinySentencePieceCase> tiny = SentencePieceTestModels.Tiny();
        Assert.That(byName.Keys, Is.EquivalentTo(tiny.Select(t => t.Name)));
        foreach (TinySentencePieceCase model in tiny)
        {
            JsonElement entry = byName[model.Name];
            Assert.That(Convert.ToHexString(SHA256.HashData(model.Model.ToBytes())), Is.EqualTo(entry.GetProperty("sha256").GetString()).IgnoreCase,
                $"{model.Name}: the goldens were made from another model; regenerate them (README.md beside them)");
            JsonElement cases = entry.GetProperty("cases");
            Assert.That(cases.EnumerateArray().Select(c => c.GetProperty("text").GetString()), Is.EqualTo(model.Texts), model.Name);
            CompareCases(new SentencePieceProcessor(model.Model), cases, model.Name);
        }
    }

    [Test]
    [Explicit("Writes the models generate-goldens.cjs reads; run it before regenerating the goldens.")]
    public void Write_models_for_goldens()
    {
        string directory = ModelsDirectory;
        Directory.CreateDirectory(directory);
        SentencePieceTestModels.MistralDerived().Save(Path.Combine(directory, "mistral-7b-derived.model"));
        foreach (TinySentencePieceCase model in SentencePieceTestModels.Tiny())
        {
            model.Model.Save(Path.Combine(directory, $"{model.Name}.model"));
            File.WriteAllText(Path.Combine(directory, $"{model.Name}.texts.json"), JsonSerializer.Serialize(model.Texts, Indented));
        }

        TestContext.Out.WriteLine($"Models written to {directory}");
    }

    internal static SentencePieceModel Model(string name) => name switch
    {
        "albert-30k-clean" => SentencePieceModel.Load(SentencePieceTestModels.AlbertPath),
        "mistral-7b-derived" => MistralDerived.Value,
        _ => throw new ArgumentException($"No model named {name}.", nameof(name)),
    };

    private static readonly Lazy<SentencePieceModel> MistralDerived = new(SentencePieceTestModels.MistralDerived);

    /// <summary>Compares every case; returns how many byte-fallback pieces the goldens hold.</summary>
    private static int CompareCases(SentencePieceProcessor processor, JsonElement cases, string? name = null)
    {
        var failures = new List<string>();
        int total = 0, bytePieces = 0;
        foreach (JsonElement c in cases.EnumerateArray())
        {
            total++;
            string text = c.GetProperty("text").GetString()!;
            int[] expectedIds = [.. c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32())];
            string[] expectedPieces = [.. c.GetProperty("pieces").EnumerateArray().Select(e => e.GetString()!)];
            string expectedDecoded = c.GetProperty("decoded").GetString()!;
            bytePieces += expectedPieces.Count(p => p.StartsWith("<0x", StringComparison.Ordinal));
            int[] ids = processor.Encode(text);
            IReadOnlyList<string> pieces = processor.EncodeToPieces(text);
            string decoded = processor.Decode(expectedIds);
            if (!ids.SequenceEqual(expectedIds) || !pieces.SequenceEqual(expectedPieces) || decoded != expectedDecoded)
            {
                failures.Add($"{name} {JsonSerializer.Serialize(text)}:\n  expected {string.Join(" ", expectedPieces)} [{string.Join(",", expectedIds)}] -> {JsonSerializer.Serialize(expectedDecoded)}"
                    + $"\n  actual   {string.Join(" ", pieces)} [{string.Join(",", ids)}] -> {JsonSerializer.Serialize(decoded)}");
            }
        }

        TestContext.Out.WriteLine($"{name}: identical {total - failures.Count}/{total}");
        Assert.That(failures, Is.Empty, string.Join("\n", failures.Take(20)));
        return bytePieces;
    }

    private static JsonDocument ReadJsonGz(string path)
    {
        using var file = File.OpenRead(path);
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        return JsonDocument.Parse(gzip);
    }

    private static byte[] IdBytes(int[] ids)
    {
        byte[] bytes = new byte[ids.Length * 4];
        for (int i = 0; i < ids.Length; i++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(i * 4), ids[i]);
        }

        return bytes;
    }

    private static uint Prefix(byte[] data) => System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(SHA256.HashData(data));

    private static byte[] Varint(int value)
    {
        var bytes = new List<byte>();
        uint v = (uint)value;
        while (v >= 0x80)
        {
            bytes.Add((byte)(v | 0x80));
            v >>= 7;
        }

        bytes.Add((byte)v);
        return [.. bytes];
    }

    /// <summary>The compact corpus goldens (format in generate-goldens.cjs).</summary>
    private sealed record CorpusGolden(string ModelSha256, IReadOnlyList<CorpusGolden.Document> Documents, string AllIdsSha256, string AllDecodedSha256)
    {
        public static CorpusGolden Read(string path)
        {
            using var file = File.OpenRead(path);
            using var gzip = new GZipStream(file, CompressionMode.Decompress);
            using var memory = new MemoryStream();
            gzip.CopyTo(memory);
            byte[] data = memory.ToArray();
            int position = 0;
            Assert.That(Encoding.ASCII.GetString(data, 0, 8), Is.EqualTo("SPMGOLD1"), path);
            position += 8;
            string modelSha = Convert.ToHexString(data, position, 32);
            position += 32;
            int count = ReadVarint(data, ref position);
            var documents = new Document[count];
            for (int i = 0; i < count; i++)
            {
                int ids = ReadVarint(data, ref position);
                uint idsHash = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(position));
                uint decodedHash = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(position + 4));
                position += 8;
                documents[i] = new Document(ids, idsHash, decodedHash);
            }

            string allIds = Convert.ToHexString(data, position, 32);
            string allDecoded = Convert.ToHexString(data, position + 32, 32);
            Assert.That(position + 64, Is.EqualTo(data.Length), $"{path}: trailing bytes");
            return new CorpusGolden(modelSha, documents, allIds, allDecoded);
        }

        private static int ReadVarint(byte[] data, ref int position)
        {
            int value = 0;
            for (int shift = 0; ; shift += 7)
            {
                byte b = data[position++];
                value |= (b & 0x7F) << shift;
                if (b < 0x80)
                {
                    return value;
                }
            }
        }

        /// <summary>One document: id count and the first 4 bytes (big-endian) of the SHA-256 of its ids and of its decoded text.</summary>
        public sealed record Document(int Count, uint IdsHash, uint DecodedHash);
    }
}
