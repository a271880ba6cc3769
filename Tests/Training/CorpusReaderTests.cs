using System.IO.Compression;
using System.Text;
using ModelSurgery.Inference.IO;
using ModelSurgery.Training.Data;

namespace ModelSurgery.Tests.Training;

/// <summary>The one corpus reader behind token counting and tokenization, on every input form it accepts.</summary>
public sealed class CorpusReaderTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("corpus-reader").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text, bool gzip = false)
    {
        string path = Path.Combine(_dir, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        if (gzip)
        {
            using FileStream file = File.Create(path);
            using var compressed = new GZipStream(file, CompressionLevel.Fastest);
            compressed.Write(bytes);
        }
        else
        {
            File.WriteAllBytes(path, bytes);
        }

        return path;
    }

    private static List<string> Read(string path, int? chunkChars = null) =>
        [.. CorpusReader.ReadDocumentsAsync(CorpusReader.ExpandPaths([path]), "body", chunkChars).ToBlockingEnumerable()];

    private const string Jsonl = "{\"body\":\"first doc\"}\n\n{\"body\":\"second doc\",\"n\":1}\n";

    [Test]
    public void Plain_text_is_one_document_or_paragraph_chunks()
    {
        const string text = "one two\n\nthree four\nfive\n";
        string path = Write("a.txt", text);
        Assert.That(Read(path), Is.EqualTo(new[] { text }));
        Assert.That(Read(path, chunkChars: 4), Is.EqualTo(new[] { "one two\n\n", "three four\nfive\n" }));
    }

    [Test]
    public void Gzipped_text_reads_as_the_text()
    {
        const string text = "caf\u00e9 and na\u00efve\nsecond line\n";
        Assert.That(Read(Write("a.txt.gz", text, gzip: true)), Is.EqualTo(new[] { text }));
    }

    [Test]
    public void Jsonl_and_gzipped_jsonl_give_one_document_per_record()
    {
        Assert.That(Read(Write("a.jsonl", Jsonl)), Is.EqualTo(new[] { "first doc", "second doc" }));
        Assert.That(Read(Write("b.jsonl.gz", Jsonl, gzip: true)), Is.EqualTo(new[] { "first doc", "second doc" }));
    }

    [Test]
    public void A_folder_contributes_its_corpus_files_in_order_and_skips_others()
    {
        string folder = Path.Combine(_dir, "corpus");
        Write(Path.Combine("corpus", "b", "c.jsonl.gz"), Jsonl, gzip: true);
        Write(Path.Combine("corpus", "a.txt"), "plain");
        Write(Path.Combine("corpus", "notes.bin"), "\0\u0001");
        Assert.That(CorpusReader.ExpandPaths([folder]).Select(f => Path.GetRelativePath(folder, f)),
            Is.EqualTo(new[] { "a.txt", Path.Combine("b", "c.jsonl.gz") }));
        Assert.That(Read(folder), Is.EqualTo(new[] { "plain", "first doc", "second doc" }));
    }

    [Test]
    public void Binary_invalid_utf8_and_broken_gzip_are_errors_naming_the_file()
    {
        string binary = Path.Combine(_dir, "image.txt");
        File.WriteAllBytes(binary, [0x50, 0x4e, 0x47, 0x00, 0x0d, 0x0a]);
        string latin1 = Path.Combine(_dir, "latin1.txt");
        File.WriteAllBytes(latin1, [0x63, 0x61, 0x66, 0xe9, 0x0a]);
        string badGzip = Write("broken.jsonl.gz", Jsonl);
        Assert.Multiple(() =>
        {
            Assert.That(() => Read(binary), Throws.TypeOf<InvalidDataException>().With.Message.Contains("image.txt").And.Message.Contains("binary"));
            Assert.That(() => Read(latin1, chunkChars: 10), Throws.TypeOf<InvalidDataException>().With.Message.Contains("latin1.txt").And.Message.Contains("UTF-8"));
            Assert.That(() => Read(badGzip), Throws.TypeOf<InvalidDataException>().With.Message.Contains("broken.jsonl.gz").And.Message.Contains("gzip"));
        });
    }

    [Test]
    public async Task Tokenization_reads_gzipped_jsonl_as_records()
    {
        var words = new ModelSurgery.Tests.Evaluation.WordTokenizer("[UNK]", "first", "second", "doc", "</s>");
        string input = Write("docs.jsonl.gz", Jsonl, gzip: true);

        TokenizeResult result = await Tokenization.TokenizeAsync(words, [input], Path.Combine(_dir, "out.bin"), new TokenizeOptions(5, 4, JsonField: "body"));

        using TokenFile file = TokenFile.Open(result.OutputPath);
        Assert.That(result.Documents, Is.EqualTo(2));
        Assert.That(file.Read(0, (int)file.Count), Is.EqualTo(new long[] { 1, 3, 4, 2, 3 }));
    }
}
