using ModelSurgery.Inference.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Checkpoints;

/// <summary>Opening checkpoints: layouts, index validation against the shards, and lookups.</summary>
public sealed class CheckpointReaderTests
{
    private const string IndexName = "model.safetensors.index.json";

    private TempDirectory _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDirectory();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    /// <summary>A one-byte U8 tensor file holding <paramref name="names"/>.</summary>
    private string Shard(string file, params string[] names)
    {
        string entries = string.Join(", ", names.Select((n, i) => $"\"{n}\": {{\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [{i}, {i + 1}]}}"));
        return RawSafetensors.Write(_dir.File(file), "{" + entries + "}", names.Select((_, i) => (byte)(i + 1)).ToArray());
    }

    private void Index(params (string Tensor, string Shard)[] map) =>
        File.WriteAllText(_dir.File(IndexName),
            "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {" + string.Join(", ", map.Select(m => $"\"{m.Tensor}\": \"{m.Shard}\"")) + "}}");

    [Test]
    public void Sharded_checkpoint_routes_reads_to_the_right_shard()
    {
        Shard("s1.safetensors", "a", "b");
        Shard("s2.safetensors", "c");
        Index(("a", "s1.safetensors"), ("b", "s1.safetensors"), ("c", "s2.safetensors"));

        using var reader = CheckpointReader.Open(_dir.Path);
        using var b = reader.ReadTensor("b");
        using var c = reader.ReadIndices("c", 0, [0, 0]);

        Assert.That(reader.TensorNames, Is.EqualTo((string[])["a", "b", "c"]));
        Assert.That(reader.Shards.Select(s => Path.GetFileName(s.Path)), Is.EqualTo((string[])["s1.safetensors", "s2.safetensors"]));
        Assert.That(reader.Shards.Select(s => s.ByteSize), Is.All.GreaterThan(8));
        Assert.That(reader.TotalTensorBytes, Is.EqualTo(3));
        Assert.That(b.data<byte>().ToArray(), Is.EqualTo((byte[])[2]));
        Assert.That(c.data<byte>().ToArray(), Is.EqualTo((byte[])[1, 1]));
        Assert.That(reader.Contains("c") && !reader.Contains("d"));
        Assert.That(reader.TryGetInfo("a", out var info) && info.DType == SafetensorsDType.U8);
    }

    [Test]
    public void Index_naming_a_tensor_its_shard_lacks_is_rejected()
    {
        Shard("s1.safetensors", "a");
        Index(("a", "s1.safetensors"), ("ghost", "s1.safetensors"));

        var ex = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(_dir.Path).Dispose());
        Assert.That(ex!.Message, Does.Contain(IndexName).And.Contain("'ghost'").And.Contain("does not hold it"));
    }

    [Test]
    public void Index_naming_the_wrong_shard_is_rejected()
    {
        Shard("s1.safetensors", "a");
        Shard("s2.safetensors", "b");
        Index(("a", "s2.safetensors"), ("b", "s2.safetensors"));

        var ex = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(_dir.Path).Dispose());
        Assert.That(ex!.Message, Does.Contain("'a'").And.Contain("maps tensor 'a' to shard 's2.safetensors'"));
    }

    [Test]
    public void Shard_tensor_missing_from_the_index_is_rejected()
    {
        Shard("s1.safetensors", "a", "extra");
        Index(("a", "s1.safetensors"));

        var ex = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(_dir.Path).Dispose());
        Assert.That(ex!.Message, Does.Contain("'extra'").And.Contain("s1.safetensors").And.Contain("missing from weight_map"));
    }

    [Test]
    public void Tensor_in_two_shards_is_rejected()
    {
        Shard("s1.safetensors", "a", "dup");
        Shard("s2.safetensors", "dup");
        Index(("a", "s1.safetensors"), ("dup", "s2.safetensors"));

        var ex = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(_dir.Path).Dispose());
        Assert.That(ex!.Message, Does.Contain("'dup'").And.Contain("appears in both").And.Contain("s1.safetensors").And.Contain("s2.safetensors"));
    }

    [Test]
    public void Missing_shard_file_is_rejected()
    {
        Shard("s1.safetensors", "a");
        Index(("a", "s1.safetensors"), ("b", "s9.safetensors"));

        var ex = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(_dir.Path).Dispose());
        Assert.That(ex!.Message, Does.Contain("'s9.safetensors' does not exist"));
    }

    [TestCase("../s1.safetensors")]
    [TestCase("sub/s1.safetensors")]
    [TestCase("")]
    public void Shard_names_outside_the_directory_are_rejected(string shard)
    {
        Shard("s1.safetensors", "a");
        Index(("a", shard));

        var ex = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(_dir.Path).Dispose());
        Assert.That(ex!.Message, Does.Contain("not a plain file name"));
    }

    [TestCase("not json", "not valid JSON")]
    [TestCase("{\"metadata\": {}}", "'weight_map'")]
    [TestCase("{\"weight_map\": {\"a\": 1}}", "entry 'a' must be a shard file name string")]
    public void Malformed_index_is_rejected(string content, string fragment)
    {
        Shard("s1.safetensors", "a");
        File.WriteAllText(_dir.File(IndexName), content);

        var ex = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(_dir.Path).Dispose());
        Assert.That(ex!.Message, Does.Contain(IndexName).And.Contain(fragment));
    }

    [Test]
    public void Invalid_shard_header_names_the_shard()
    {
        string bad = RawSafetensors.Write(_dir.File("s2.safetensors"), "{\"x\": {\"dtype\": \"Q4\", \"shape\": [1], \"data_offsets\": [0, 1]}}", [0]);
        Shard("s1.safetensors", "a");
        Index(("a", "s1.safetensors"), ("x", "s2.safetensors"));

        var ex = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(_dir.Path).Dispose());
        Assert.That(ex!.Message, Does.Contain(bad).And.Contain("unsupported dtype Q4 in tensor 'x'"));
    }

    [Test]
    public void Single_file_and_directory_with_model_safetensors_open()
    {
        string path = Shard("model.safetensors", "w");

        using var byDirectory = CheckpointReader.Open(_dir.Path);
        using var byFile = CheckpointReader.Open(path);

        Assert.That(byDirectory.TensorNames, Is.EqualTo((string[])["w"]));
        Assert.That(byFile.Shards.Single().Path, Is.EqualTo(path));
    }

    [Test]
    public void Missing_tensor_and_missing_checkpoint_are_clear_errors()
    {
        Shard("model.safetensors", "w");
        using var reader = CheckpointReader.Open(_dir.Path);

        var missing = Assert.Throws<KeyNotFoundException>(() => reader.ReadSlice("lm_head.weight", 0, 0, 1));
        Assert.That(missing!.Message, Does.Contain("'lm_head.weight'").And.Contain(_dir.Path));

        using var empty = new TempDirectory();
        var none = Assert.Throws<FileNotFoundException>(() => CheckpointReader.Open(empty.Path));
        Assert.That(none!.Message, Does.Contain(empty.Path).And.Contain("model.safetensors"));
        Assert.That(() => CheckpointReader.Open(empty.File("nowhere")), Throws.TypeOf<FileNotFoundException>());
    }

    [Test]
    public async Task Reader_opens_what_the_writer_wrote_with_bf16_slices()
    {
        using var weight = torch.randn(6, 4, generator: new torch.Generator(seed: 7)).to_type(torch.ScalarType.BFloat16); // [6, 4]
        await CheckpointWriter.WriteAsync(_dir.Path, [("w", weight)], new CheckpointWriterOptions { MaxShardBytes = 16 });

        using var reader = CheckpointReader.Open(_dir.Path);
        using var rows = reader.ReadIndices("w", 0, [5, 0]);
        using var expected = weight.index_select(0, torch.tensor(new long[] { 5, 0 }));

        Assert.That(reader.Shards, Has.Count.EqualTo(1), "one oversized tensor still makes a single file");
        Assert.That(rows.bytes.ToArray(), Is.EqualTo(expected.bytes.ToArray()));
    }
}
