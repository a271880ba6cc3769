using System.Text;
using ModelSurgery.Inference.Reporting;
using ModelSurgery.Tests.Evaluation;
using ModelSurgery.Training.Data;

namespace ModelSurgery.Tests.Training;

public sealed class TokenDataTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("tokens").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private string Write(int vocab, int separator, params int[][] documents)
    {
        string path = Path.Combine(_dir, $"v{vocab}.bin");
        using var writer = new TokenFileWriter(path, vocab, separator);
        foreach (int[] d in documents)
        {
            writer.AppendDocument(d);
        }

        writer.Complete();
        return path;
    }

    [Test]
    public void Small_vocabularies_round_trip_as_uint16_with_separators_between_documents()
    {
        string path = Write(1000, 999, [1, 2, 3], [4, 5]);
        using TokenFile file = TokenFile.Open(path);
        Assert.Multiple(() =>
        {
            Assert.That(file.BytesPerToken, Is.EqualTo(2));
            Assert.That(file.Count, Is.EqualTo(6));
            Assert.That(file.SeparatorId, Is.EqualTo(999));
            Assert.That(file.Read(0, 6), Is.EqualTo(new long[] { 1, 2, 3, 999, 4, 5 }));
            Assert.That(file.Read(4, 2), Is.EqualTo(new long[] { 4, 5 }));
            Assert.That(new FileInfo(path).Length, Is.EqualTo(TokenFile.HeaderSize + (6 * 2)));
            Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1), "no temp file is left behind");
        });
    }

    [Test]
    public void Large_vocabularies_round_trip_as_uint32()
    {
        string path = Write(100_000, 0, [70_000, 99_999], [65_535, 65_536]);
        using TokenFile file = TokenFile.Open(path);
        Assert.Multiple(() =>
        {
            Assert.That(file.BytesPerToken, Is.EqualTo(4));
            Assert.That(file.Read(0, 5), Is.EqualTo(new long[] { 70_000, 99_999, 0, 65_535, 65_536 }));
        });
    }

    [Test]
    public void Tokens_outside_the_vocabulary_are_rejected_and_no_file_is_left()
    {
        string path = Path.Combine(_dir, "bad.bin");
        using (var writer = new TokenFileWriter(path, 10, 9))
        {
            Assert.That(() => writer.AppendDocument([1, 10]), Throws.ArgumentException.With.Message.Contains("Token id 10"));
        }

        Assert.That(Directory.GetFiles(_dir), Is.Empty);
    }

    [Test]
    public void Corrupt_headers_are_rejected_with_the_file_name()
    {
        string good = Write(1000, 999, [1, 2, 3]);
        byte[] bytes = File.ReadAllBytes(good);

        string badMagic = Path.Combine(_dir, "magic.bin");
        byte[] m = (byte[])bytes.Clone();
        m[0] = (byte)'X';
        File.WriteAllBytes(badMagic, m);

        string badVersion = Path.Combine(_dir, "version.bin");
        byte[] v = (byte[])bytes.Clone();
        v[8] = 7;
        File.WriteAllBytes(badVersion, v);

        string truncated = Path.Combine(_dir, "truncated.bin");
        File.WriteAllBytes(truncated, bytes[..^1]);

        string tiny = Path.Combine(_dir, "tiny.bin");
        File.WriteAllBytes(tiny, bytes[..10]);

        Assert.Multiple(() =>
        {
            Assert.That(() => TokenFile.Open(badMagic), Throws.TypeOf<InvalidDataException>().With.Message.Contains("magic.bin").And.Message.Contains("MSTOKENS"));
            Assert.That(() => TokenFile.Open(badVersion), Throws.TypeOf<InvalidDataException>().With.Message.Contains("version.bin").And.Message.Contains("version 7"));
            Assert.That(() => TokenFile.Open(truncated), Throws.TypeOf<InvalidDataException>().With.Message.Contains("truncated.bin").And.Message.Contains("truncated"));
            Assert.That(() => TokenFile.Open(tiny), Throws.TypeOf<InvalidDataException>().With.Message.Contains("tiny.bin"));
        });
    }

    [Test]
    public async Task Text_files_and_jsonl_fields_are_tokenized_in_order_with_separators()
    {
        // Word vocabulary: ids are positions.
        var wordPiece = new WordTokenizer("[UNK]", "hello", "world", "foo", "bar", "</s>");
        string data = Directory.CreateDirectory(Path.Combine(_dir, "data")).FullName;
        await File.WriteAllTextAsync(Path.Combine(data, "a.txt"), "hello world");
        await File.WriteAllLinesAsync(Path.Combine(data, "b.jsonl"), ["{\"body\":\"foo bar\"}", "", "{\"body\":\"bar hello\",\"other\":1}"]);
        var reports = new List<TokenizeProgress>();

        TokenizeResult result = await Tokenization.TokenizeAsync(
            wordPiece, [Path.Combine(data, "*.txt"), data], Path.Combine(_dir, "out.bin"), new TokenizeOptions(6, 5, JsonField: "body", DocumentsPerBatch: 1),
            new SynchronousProgress<TokenizeProgress>(reports.Add));

        using TokenFile file = TokenFile.Open(result.OutputPath);
        Assert.Multiple(() =>
        {
            Assert.That(result.Files, Is.EqualTo(2), "a.txt matched by the glob and the folder is read once");
            Assert.That(result.Documents, Is.EqualTo(3));
            Assert.That(file.Read(0, (int)file.Count), Is.EqualTo(new long[] { 1, 2, 5, 3, 4, 5, 4, 1 }));
            Assert.That(reports[^1].Tokens, Is.EqualTo(8));
        });
    }

    [Test]
    public void A_jsonl_line_without_the_field_names_the_file_and_line()
    {
        var wordPiece = new WordTokenizer("[UNK]", "hello");
        string input = Path.Combine(_dir, "docs.jsonl");
        File.WriteAllLines(input, ["{\"text\":\"hello\"}", "{\"title\":\"hello\"}"]);
        Assert.That(
            async () => await Tokenization.TokenizeAsync(wordPiece, [input], Path.Combine(_dir, "out.bin"), new TokenizeOptions(2, 0)),
            Throws.TypeOf<InvalidDataException>().With.Message.Contains("line 2").And.Message.Contains("docs.jsonl").And.Message.Contains("'text'"));
    }

    [Test]
    public void Splits_are_deterministic_disjoint_and_complete()
    {
        DatasetSplit a = DatasetSplit.ByChunk(100, 0.1, 7);
        DatasetSplit b = DatasetSplit.ByChunk(100, 0.1, 7);
        DatasetSplit c = DatasetSplit.ByChunk(100, 0.1, 8);
        Assert.Multiple(() =>
        {
            Assert.That(a.Train, Is.EqualTo(b.Train));
            Assert.That(a.Validation, Is.EqualTo(b.Validation));
            Assert.That(c.Validation, Is.Not.EqualTo(a.Validation));
            Assert.That(a.Validation, Has.Count.EqualTo(10));
            Assert.That(a.Train.Concat(a.Validation).Order(), Is.EqualTo(Enumerable.Range(0, 100).Select(i => (long)i)));
            Assert.That(() => DatasetSplit.ByChunk(10, 1.0, 1), Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("--val-fraction"));
        });
    }

    [Test]
    public void A_split_at_a_token_never_lets_a_window_straddle_it()
    {
        // 41 tokens, validation from token 20, T = 4: window w covers [4w, 4w + 5).
        DatasetSplit split = DatasetSplit.AtToken(41, 20, 4);
        Assert.Multiple(() =>
        {
            Assert.That(split.Train, Is.EqualTo(new long[] { 0, 1, 2, 3 }), "window 3 ends with token 19, the last training token");
            Assert.That(split.Validation, Is.EqualTo(new long[] { 5, 6, 7, 8, 9 }), "window 4 would predict token 20 from training inputs; it is dropped");
            Assert.That(DatasetSplit.AtToken(41, 41, 4).Validation, Is.Empty);
            Assert.That(() => DatasetSplit.AtToken(10, 11, 4), Throws.InstanceOf<ArgumentOutOfRangeException>());
        });
    }

    [Test]
    public void A_description_sets_a_validation_start_inside_the_file_or_a_fraction_not_both()
    {
        string path = Write(8, 7, [1, 2, 3]);
        new TokenFileInfo { Tokens = 4, VocabSize = 8, SeparatorId = 7, ValidationStartToken = 2 }.Save(path);
        Assert.That(TokenFileInfo.TryLoad(path)!.ValidationStartToken, Is.EqualTo(2), "round trip");
        Assert.That(File.ReadAllText(TokenFileInfo.PathFor(path)), Does.Contain("\"val_start_token\": 2"));

        new TokenFileInfo { Tokens = 4, VocabSize = 8, SeparatorId = 7, ValidationStartToken = 2, ValidationFraction = 0.1 }.Save(path);
        Assert.That(() => TokenFileInfo.TryLoad(path), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains(TokenFileInfo.PathFor(path)).And.Message.Contains("val_start_token").And.Message.Contains("val_fraction"));
        foreach (long outside in new long[] { 0, 4, -1 })
        {
            new TokenFileInfo { Tokens = 4, VocabSize = 8, SeparatorId = 7, ValidationStartToken = outside }.Save(path);
            Assert.That(() => TokenFileInfo.TryLoad(path), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("val_start_token").And.Message.Contains($"got {outside}"), $"{outside}");
        }

        new TokenFileInfo { Tokens = 4, VocabSize = 8, SeparatorId = 7 }.Save(path);
        Assert.That(TokenFileInfo.TryLoad(path)!.ValidationStartToken, Is.Null);
        Assert.That(File.ReadAllText(TokenFileInfo.PathFor(path)), Does.Contain("\"val_start_token\": null"), "an older reader ignores it");
    }

    [Test]
    public void The_sampler_yields_windows_of_the_file_and_resumes_exactly()
    {
        string path = TrainingTestData.WritePatternFile(_dir, 16, 10, 30);
        using TokenFile file = TokenFile.Open(path);
        long windows = TokenWindows.Count(file.Count, 8);
        long[] all = [.. Enumerable.Range(0, (int)windows).Select(i => (long)i)];
        var sampler = new BatchSampler(file, all, 3, 8, seed: 5);
        var first = new List<long[]>();
        for (int i = 0; i < 4; i++)
        {
            using var batch = sampler.Next().Tokens;
            first.Add(batch.data<long>().ToArray());
        }

        BatchSamplerState state = sampler.State;
        var expected = new List<long[]>();
        for (int i = 0; i < 30; i++)
        {
            using var batch = sampler.Next().Tokens;
            expected.Add(batch.data<long>().ToArray());
        }

        var resumed = new BatchSampler(file, all, 3, 8, seed: 5);
        resumed.Restore(state);
        var again = new List<long[]>();
        for (int i = 0; i < 30; i++)
        {
            TrainingBatch batch = resumed.Next();
            using var tokens = batch.Tokens;
            Assert.That(tokens.shape, Is.EqualTo(new long[] { 3, 9 }));
            again.Add(tokens.data<long>().ToArray());
            Assert.That(tokens.data<long>().ToArray()[..9], Is.EqualTo(file.Read(TokenWindows.Start(batch.Windows[0], 8), 9)));
        }

        Assert.Multiple(() =>
        {
            Assert.That(again, Is.EqualTo(expected));
            Assert.That(state.Epoch, Is.EqualTo(0));
            Assert.That(resumed.State.Epoch, Is.GreaterThan(0), "the 34 batches span several epochs");
        });
    }
}
