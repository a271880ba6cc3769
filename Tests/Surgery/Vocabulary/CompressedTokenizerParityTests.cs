using System.IO.Compression;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Tests.Support;
using HfTokenizer = Tokenizers.DotNet.Tokenizer;

namespace ModelSurgery.Tests.Vocabulary;

/// <summary>
/// Compressed tokenizer.json files checked against Hugging Face's Rust tokenizers (through Tokenizers.DotNet) on real
/// tokenizers: counted on the Brown sample, compared on the held-out sample. Where every token the full file produces
/// for a document is kept, the compressed file must produce the same tokens under their new ids; elsewhere it must use
/// kept ids only and decode to the same text.
/// </summary>
public sealed class CompressedTokenizerParityTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("vocab-parity").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static string DataDirectory => Path.Combine(DotnetCli.FindRepositoryRoot(Path.Combine("Samples", "Data", "brown.jsonl")), "Samples", "Data");

    private static IEnumerable<string> Documents(string file) =>
        File.ReadLines(Path.Combine(DataDirectory, file)).Where(l => l.Length > 0).Select(line =>
        {
            using var json = JsonDocument.Parse(line);
            return json.RootElement.GetProperty("text").GetString()!;
        });

    /// <summary>The family's full tokenizer as a folder (the committed fixture unpacked), or <c>gpt2</c> itself.</summary>
    private string Source(string family)
    {
        if (family == "gpt2")
        {
            return family;
        }

        string fixture = Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "Tokenizers", family);
        string folder = Path.Combine(_dir, "full");
        Directory.CreateDirectory(folder);
        using (FileStream input = File.OpenRead(Path.Combine(fixture, "tokenizer.json.gz")))
        using (var gzip = new GZipStream(input, CompressionMode.Decompress))
        using (FileStream output = File.Create(Path.Combine(folder, "tokenizer.json")))
        {
            gzip.CopyTo(output);
        }

        File.Copy(Path.Combine(fixture, "tokenizer_config.json"), Path.Combine(folder, "tokenizer_config.json"));
        return folder;
    }

    /// <summary>The text a vocabulary token stands for, when that text is one the tokenizer could see whole; else null.</summary>
    private static string? TextOf(HuggingFaceTokenizerJson tokenizer, string token)
    {
        if (tokenizer.IsByteLevel)
        {
            byte[]? bytes = ByteLevelAlphabet.Decode(token);
            try
            {
                return bytes is null ? null : new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
            }
            catch (DecoderFallbackException)
            {
                return null; // part of a character
            }
        }

        // SentencePiece style: the normalizer prepends '▁' and turns spaces into '▁', so only '▁'-led pieces are whole texts.
        return token.Length > 1 && token[0] == '\u2581' && !HuggingFaceTokenizerJson.IsByteFallbackToken(token)
            ? token[1..].Replace('\u2581', ' ')
            : null;
    }

    private static uint[] WithoutSpecials(uint[] ids, HashSet<uint> specials) => [.. ids.Where(id => !specials.Contains(id))];

    [TestCase("gpt-oss", 8000)]
    [TestCase("qwen3", 8000)]
    [TestCase("mistral-7b", 8000)]
    [TestCase("gpt2", 8000)]
    public async Task Compressed_file_tokenizes_held_out_text_as_the_full_file_wherever_its_tokens_are_kept(string family, int keep)
    {
        string source = Source(family);
        string fullPath = Path.Combine(_dir, "full-tokenizer.json");
        HuggingFaceTokenizerJson full = family == "gpt2"
            ? HuggingFaceTokenizerJson.FromTiktoken(TiktokenVocabulary.LoadGpt2())
            : HuggingFaceTokenizerJson.Load(Path.Combine(source, "tokenizer.json"));
        full.Save(fullPath);
        using var reference = new HfTokenizer(fullPath);

        long[] counts = new long[full.IdCount];
        foreach (string document in Documents("brown.jsonl"))
        {
            foreach (uint id in reference.Encode(document))
            {
                counts[id]++;
            }
        }

        string outDir = Path.Combine(_dir, "compressed");
        CompressionResult result = await VocabularyCompressor.CompressAsync(source, new VocabularyStatistics { Tokenizer = family, Counts = counts },
            CompressionTarget.Keep(keep), outDir);
        Assert.That(result.TokenizerPath, Is.EqualTo(Path.Combine(outDir, "tokenizer.json")));
        Assert.That(File.Exists(Path.Combine(outDir, "tokenizer_config.json")), Is.True);
        VocabularyMap map = result.Map;
        Assert.That(map.NewVocabSize, Is.EqualTo(keep));
        HuggingFaceTokenizerJson written = HuggingFaceTokenizerJson.Load(result.TokenizerPath);
        Assert.That(written.IgnoreMerges, Is.EqualTo(full.IgnoreMerges), "model.ignore_merges survives");
        using var compressed = new HfTokenizer(result.TokenizerPath);

        // (i) Every kept token whose text the full file encodes as that one token still encodes as it.
        var specials = new HashSet<uint>(full.AddedTokens.Where(t => t.Special).Select(t => (uint)t.Id));
        var newSpecials = new HashSet<uint>(specials.Select(id => (uint)map.NewId((int)id)!.Value));
        int keptVocabulary = 0, selfEncoding = 0;
        foreach (int oldId in map.KeptOldIds)
        {
            string token = full.TokensById[oldId];
            if (!full.Vocabulary.TryGetValue(token, out int vocabId) || vocabId != oldId)
            {
                continue;
            }

            keptVocabulary++;
            if (TextOf(full, token) is not { } text || WithoutSpecials(reference.Encode(text), specials) is not [var only] || only != oldId)
            {
                continue;
            }

            selfEncoding++;
            Assert.That(WithoutSpecials(compressed.Encode(text), newSpecials), Is.EqualTo(new[] { (uint)map.NewId(oldId)!.Value }), $"kept token {token}");
        }

        // (ii) Texts whose full tokens are all kept: the same tokens. (iii) The rest: kept ids that decode the same.
        // A few thousand tokens rarely cover a whole 600-character document, so the sentences of each are checked too.
        int documents = 0, allKept = 0, wholeDocuments = 0, wholeAllKept = 0;
        string[] heldOut = [.. Documents("heldout.jsonl")];
        var sentences = heldOut.SelectMany(d => Regex.Split(d, @"(?<=[.!?])\s+|\n+")).Where(s => s.Length > 0);
        foreach (string document in heldOut.Concat(sentences))
        {
            documents++;
            uint[] fullIds = reference.Encode(document), newIds = compressed.Encode(document);
            Assert.That(newIds, Has.All.LessThan((uint)map.NewVocabSize));
            bool whole = documents <= heldOut.Length;
            wholeDocuments += whole ? 1 : 0;
            if (fullIds.All(id => map.NewId((int)id) is not null))
            {
                allKept++;
                wholeAllKept += whole ? 1 : 0;
                Assert.That(newIds, Is.EqualTo(fullIds.Select(id => (uint)map.NewId((int)id)!.Value).ToArray()), $"document {documents}");
            }
            else
            {
                string expected = reference.Decode(fullIds);
                Assert.That(compressed.Decode(newIds), Is.EqualTo(expected), $"document {documents}");
                if (expected == document)
                {
                    Assert.That(compressed.Decode(newIds), Is.EqualTo(document));
                }
            }
        }

        TestContext.Out.WriteLine($"{family}: keep {keep}; kept tokens encoding to themselves {selfEncoding}/{keptVocabulary}; held-out texts fully kept and identical {allKept}/{documents}, of them whole documents {wholeAllKept}/{wholeDocuments}");
        Assert.That(allKept, Is.GreaterThan(0), "no held-out text is fully kept: the equality check would be empty");
        Assert.That(selfEncoding, Is.GreaterThan(keptVocabulary / 2), "too few kept tokens checked on their own text");
    }
}
