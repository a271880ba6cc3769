using System.Text;
using ModelSurgery.Inference.Checkpoints;

namespace ModelSurgery.Tests.Checkpoints;

/// <summary>Every header rule, each broken by a hand-made file; messages must name the file, the tensor and the rule.</summary>
public sealed class SafetensorsValidationTests
{
    private TempDirectory _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDirectory();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private static IEnumerable<TestCaseData> MalformedHeaders()
    {
        // header, data bytes, expected fragments (besides the path)
        static TestCaseData Case(string name, string header, int data, params string[] fragments) =>
            new TestCaseData(header, data, fragments).SetName(name);

        yield return Case("Header_not_an_object", "[1, 2]", 0, "must be a JSON object starting with '{'");
        yield return Case("Header_with_leading_space", " {}", 0, "must be a JSON object starting with '{'");
        yield return Case("Header_not_json", "{\"w\": ", 0, "not valid JSON");
        yield return Case("Entry_not_an_object", "{\"w\": 3}", 0, "tensor 'w'", "must be a JSON object");
        yield return Case("Missing_dtype", "{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "tensor 'w'", "missing field 'dtype'");
        yield return Case("Missing_shape", "{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, "tensor 'w'", "missing field 'shape'");
        yield return Case("Missing_offsets", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, "tensor 'w'", "missing field 'data_offsets'");
        yield return Case("Dtype_not_string", "{\"w\": {\"dtype\": 5, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "tensor 'w'", "'dtype' must be a string");
        yield return Case("Unknown_dtype", "{\"w\": {\"dtype\": \"F7\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "unsupported dtype F7 in tensor 'w'");
        yield return Case("Lowercase_dtype", "{\"w\": {\"dtype\": \"f32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "unsupported dtype f32 in tensor 'w'");
        yield return Case("Shape_not_array", "{\"w\": {\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}}", 4, "tensor 'w'", "'shape' must be an array");
        yield return Case("Shape_fraction", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4, "tensor 'w'", "dimension 0 must be an integer");
        yield return Case("Shape_string", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1, \"2\"], \"data_offsets\": [0, 8]}}", 8, "tensor 'w'", "dimension 1 must be an integer");
        yield return Case("Shape_negative", "{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4, "tensor 'w'", "dimension 0 is negative");
        yield return Case("Offsets_not_pair", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4, "tensor 'w'", "two non-negative integers");
        yield return Case("Offsets_not_array", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": \"0-4\"}}", 4, "tensor 'w'", "two non-negative integers");
        yield return Case("Offset_negative", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4, "tensor 'w'", "begin must be a non-negative integer");
        yield return Case("Offset_fraction", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4.0]}}", 4, "tensor 'w'", "end must be a non-negative integer");
        yield return Case("Offset_too_large", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 18446744073709551616]}}", 4, "tensor 'w'", "end must be a non-negative integer");
        yield return Case("End_before_begin", "{\"w\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 0]}}", 4, "tensor 'w'", "end 0 is before begin 4");
        yield return Case("Element_count_overflow", "{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}}", 4, "tensor 'w'", "overflows");
        yield return Case("Byte_size_overflow", "{\"w\": {\"dtype\": \"F64\", \"shape\": [2305843009213693952], \"data_offsets\": [0, 4]}}", 4, "tensor 'w'", "overflows");
        yield return Case("Byte_size_mismatch", "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 4, "tensor 'w'", "span 4 bytes", "needs 8 bytes");
        yield return Case("First_tensor_not_at_zero", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8, "tensor 'w'", "leaves a gap", "must start at data offset 0");
        yield return Case("Gap_between_tensors",
            "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}",
            12, "tensor 'b'", "leaves a gap", "'a' ends at 4");
        yield return Case("Overlapping_tensors",
            "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
            8, "tensor 'b'", "overlaps", "'a' ends at 8");
        yield return Case("Trailing_bytes", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 6, "'w'", "trailing bytes");
        yield return Case("Truncated_data", "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 5, "'w'", "truncated");
        yield return Case("Data_without_tensors", "{}", 4, "trailing bytes");
        yield return Case("Duplicate_tensor",
            "{\"w\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}, \"w\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}",
            2, "tensor 'w'", "more than once");
        yield return Case("Metadata_not_object", "{\"__metadata__\": [\"pt\"]}", 0, "'__metadata__' must be a JSON object");
        yield return Case("Metadata_value_not_string", "{\"__metadata__\": {\"format\": \"pt\", \"epoch\": 3}}", 0, "'__metadata__' value of key 'epoch' must be a string");
    }

    [TestCaseSource(nameof(MalformedHeaders))]
    public void Malformed_header_is_rejected_naming_file_tensor_and_rule(string header, int dataBytes, string[] fragments)
    {
        string path = RawSafetensors.Write(_dir.File("bad.safetensors"), header, new byte[dataBytes]);

        var ex = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path).Dispose());

        Assert.That(ex!.Message, Does.Contain(path));
        foreach (string fragment in fragments)
        {
            Assert.That(ex.Message, Does.Contain(fragment));
        }
    }

    [Test]
    public void Empty_file_is_rejected()
    {
        string path = _dir.File("empty.safetensors");
        File.WriteAllBytes(path, []);

        var ex = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("empty"));
    }

    [Test]
    public void File_shorter_than_length_prefix_is_rejected()
    {
        string path = _dir.File("short.safetensors");
        File.WriteAllBytes(path, [1, 0, 0, 0, 0]);

        var ex = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("5 bytes, shorter than the 8-byte header length prefix"));
    }

    [Test]
    public void Header_length_past_end_of_file_is_rejected()
    {
        string path = RawSafetensors.Write(_dir.File("past.safetensors"), "{}", headerLength: 64);

        var ex = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("header length 64 points past the end of the file (10 bytes)"));
    }

    [Test]
    public void Header_length_over_the_cap_is_rejected_before_reading_it()
    {
        string path = RawSafetensors.Write(_dir.File("huge.safetensors"), "{}", headerLength: 100_000_001);

        var ex = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("header length 100000001 exceeds the limit of 100000000 bytes"));
    }

    [Test]
    public void Header_length_near_ulong_max_is_rejected()
    {
        string path = RawSafetensors.Write(_dir.File("max.safetensors"), "{}", headerLength: ulong.MaxValue);

        var ex = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.That(ex!.Message, Does.Contain("exceeds the limit"));
    }

    [Test]
    public void Header_that_is_not_utf8_is_rejected()
    {
        byte[] header = [.. Encoding.ASCII.GetBytes("{\"w\u0000"), 0xC3, 0x28, .. Encoding.ASCII.GetBytes("\": 1}")];
        string path = RawSafetensors.WriteBytes(_dir.File("latin.safetensors"), header);

        var ex = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("not valid UTF-8"));
    }

    [Test]
    public void Valid_file_keeps_metadata_ignores_unknown_fields_and_allows_padding()
    {
        string header = "{\"__metadata__\": {\"format\": \"pt\", \"note\": \"é\"}, "
            + "\"b\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [4, 6], \"extra\": true}, "
            + "\"e\": {\"dtype\": \"F32\", \"shape\": [0, 3], \"data_offsets\": [4, 4]}, "
            + "\"a\": {\"dtype\": \"I16\", \"shape\": [2], \"data_offsets\": [0, 4]}}   ";
        string path = RawSafetensors.Write(_dir.File("ok.safetensors"), header, [1, 0, 2, 0, 7, 9]);

        using var file = SafetensorsFile.Open(path);

        Assert.That(file.Metadata, Is.EquivalentTo(new Dictionary<string, string> { ["format"] = "pt", ["note"] = "é" }));
        Assert.That(string.Join(",", file.TensorNames), Is.EqualTo("a,e,b")); // data order; the empty tensor sorts before the one after it
        Assert.That(file.TotalTensorBytes, Is.EqualTo(6));
        Assert.That(file.GetInfo("b"), Has.Property("DataBegin").EqualTo(4L).And.Property("ByteLength").EqualTo(2L));
        using var b = file.ReadTensor("b");
        Assert.That(b.data<byte>().ToArray(), Is.EqualTo((byte[])[7, 9]));
        using var e = file.ReadTensor("e");
        Assert.That(e.shape, Is.EqualTo((long[])[0, 3]));
    }

    [Test]
    public void Header_only_file_without_tensors_opens()
    {
        string path = RawSafetensors.Write(_dir.File("none.safetensors"), "{}");

        using var file = SafetensorsFile.Open(path);

        Assert.That(file.Tensors, Is.Empty);
        Assert.That(file.Metadata, Is.Empty);
    }

    [Test]
    public void Missing_tensor_names_tensor_and_file()
    {
        string path = RawSafetensors.Write(_dir.File("one.safetensors"), "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", [5]);
        using var file = SafetensorsFile.Open(path);

        var ex = Assert.Throws<KeyNotFoundException>(() => file.ReadTensor("nope"));
        Assert.That(ex!.Message, Does.Contain("'nope'").And.Contain(path));
        Assert.That(file.Contains("a"), Is.True);
        Assert.That(file.TryGetInfo("nope", out _), Is.False);
    }
}
