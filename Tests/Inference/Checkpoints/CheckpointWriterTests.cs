using System.Text;
using System.Text.Json;
using ModelSurgery.Inference.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Checkpoints;

/// <summary>Sharding, the index, header layout, determinism and atomicity of <see cref="CheckpointWriter"/>.</summary>
public sealed class CheckpointWriterTests
{
    private TempDirectory _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDirectory();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    /// <summary>Five F32 [4, 4] tensors (64 bytes each) of distinct values.</summary>
    private static (string Name, torch.Tensor Tensor)[] FiveTensors() =>
        Enumerable.Range(0, 5)
            .Select(i => ($"layer.{i}.weight", torch.arange(i * 16, (i + 1) * 16, dtype: torch.float32).reshape(4, 4))) // [4, 4]
            .ToArray();

    // The same file names in both directories, each file byte for byte the same.
    private static void AssertSameFiles(TempDirectory expected, TempDirectory actual)
    {
        Assert.That(actual.FileNames(), Is.EqualTo(expected.FileNames()));
        foreach (string name in expected.FileNames())
        {
            Assert.That(File.ReadAllBytes(actual.File(name)), Is.EqualTo(File.ReadAllBytes(expected.File(name))), name);
        }
    }

    private static void DisposeAll((string Name, torch.Tensor Tensor)[] tensors)
    {
        foreach (var (_, tensor) in tensors)
        {
            tensor.Dispose();
        }
    }

    private static CheckpointTensor[] Declare((string Name, torch.Tensor Tensor)[] tensors) =>
        tensors.Select(t => new CheckpointTensor(t.Name, SafetensorsDType.F32, t.Tensor.shape)).ToArray();

    [Test]
    public async Task Single_shard_is_model_safetensors_with_golden_header_and_no_index()
    {
        using var tensor = torch.tensor(new float[] { 1, 2 });
        await CheckpointWriter.WriteAsync(_dir.Path, [("a", tensor)]);

        Assert.That(_dir.FileNames(), Is.EqualTo((string[])["model.safetensors"]));
        byte[] bytes = File.ReadAllBytes(_dir.File("model.safetensors"));
        ulong headerLength = BitConverter.ToUInt64(bytes, 0);
        string header = Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        // Golden value: the safetensors layout spelled out by hand (compact JSON, metadata first, space padding to 8).
        const string Json = "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        Assert.That(header, Is.EqualTo(Json + new string(' ', (int)headerLength - Json.Length)));
        Assert.That(headerLength % 8, Is.Zero);
        Assert.That(bytes.AsSpan(8 + (int)headerLength).ToArray(), Is.EqualTo(tensor.bytes.ToArray()));
    }

    [TestCase("a")]
    [TestCase("ab")]
    [TestCase("abcdefg")]
    [TestCase("model.layers.0.self_attn.q_proj.weight")]
    public async Task Header_is_padded_with_spaces_to_a_multiple_of_8(string name)
    {
        using var tensor = torch.zeros(3, dtype: torch.int8);
        await CheckpointWriter.WriteAsync(_dir.Path, [(name, tensor)], new CheckpointWriterOptions { Metadata = null });

        byte[] bytes = File.ReadAllBytes(_dir.File("model.safetensors"));
        int headerLength = (int)BitConverter.ToUInt64(bytes, 0);
        string header = Encoding.UTF8.GetString(bytes, 8, headerLength);
        Assert.That(headerLength % 8, Is.Zero);
        Assert.That(header.TrimEnd(' '), Does.EndWith("}").And.Not.Contain("__metadata__"));
        Assert.That(header.Length - header.TrimEnd(' ').Length, Is.LessThan(8));
        Assert.That(bytes, Has.Length.EqualTo(8 + headerLength + 3));
    }

    [Test]
    public async Task Tensors_are_split_into_shards_with_a_huggingface_index()
    {
        var tensors = FiveTensors();
        try
        {
            // 150 bytes per shard holds two 64-byte tensors: shards of 2, 2 and 1 tensors.
            var shards = await CheckpointWriter.WriteAsync(_dir.Path, tensors, new CheckpointWriterOptions { MaxShardBytes = 150 });

            string[] shardNames = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"];
            Assert.That(_dir.FileNames(), Is.EqualTo(shardNames.Append("model.safetensors.index.json").Order(StringComparer.Ordinal).ToArray()));
            Assert.That(shards.Select(s => Path.GetFileName(s.Path)), Is.EqualTo(shardNames));
            Assert.That(shards.Select(s => s.ByteSize), Is.EqualTo(shardNames.Select(n => new FileInfo(_dir.File(n)).Length)));

            using var index = JsonDocument.Parse(File.ReadAllBytes(_dir.File("model.safetensors.index.json")));
            Assert.That(index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64(), Is.EqualTo(5 * 64));
            var map = index.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString());
            Assert.That(map, Is.EquivalentTo(new Dictionary<string, string?>
            {
                ["layer.0.weight"] = shardNames[0],
                ["layer.1.weight"] = shardNames[0],
                ["layer.2.weight"] = shardNames[1],
                ["layer.3.weight"] = shardNames[1],
                ["layer.4.weight"] = shardNames[2],
            }));

            using var reader = CheckpointReader.Open(_dir.Path);
            Assert.That(reader.Shards, Has.Count.EqualTo(3));
            Assert.That(reader.TensorNames, Is.EqualTo(tensors.Select(t => t.Name)));
            Assert.That(reader.TotalTensorBytes, Is.EqualTo(5 * 64));
            Assert.That(reader.Metadata["format"], Is.EqualTo("pt"));
            Assert.That(Path.GetFileName(reader.ShardOf("layer.3.weight")), Is.EqualTo(shardNames[1]));
            foreach (var (name, tensor) in tensors)
            {
                using var read = reader.ReadTensor(name);
                Assert.That(read.bytes.ToArray(), Is.EqualTo(tensor.bytes.ToArray()), name);
            }

            using var slice = reader.ReadSlice("layer.4.weight", 1, 1, 2);
            using var expected = tensors[4].Tensor.narrow(1, 1, 2).contiguous();
            Assert.That(slice.bytes.ToArray(), Is.EqualTo(expected.bytes.ToArray()));
        }
        finally
        {
            DisposeAll(tensors);
        }
    }

    [Test]
    public async Task A_tensor_larger_than_the_shard_size_gets_a_shard_of_its_own()
    {
        using var small = torch.zeros(4, dtype: torch.int8);
        using var large = torch.zeros(100, dtype: torch.int8);
        using var tail = torch.zeros(4, dtype: torch.int8);

        var shards = await CheckpointWriter.WriteAsync(_dir.Path, [("small", small), ("large", large), ("tail", tail)], new CheckpointWriterOptions { MaxShardBytes = 10 });

        using var reader = CheckpointReader.Open(_dir.Path);
        Assert.That(shards, Has.Count.EqualTo(3));
        Assert.That(reader.TensorNames.Select(n => Path.GetFileName(reader.ShardOf(n))),
            Is.EqualTo((string[])["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]));
    }

    [Test]
    public async Task Identical_input_gives_byte_identical_files()
    {
        var tensors = FiveTensors();
        try
        {
            using var first = new TempDirectory();
            using var second = new TempDirectory();
            var options = new CheckpointWriterOptions { MaxShardBytes = 200, Metadata = new Dictionary<string, string> { ["b"] = "2", ["a"] = "1" } };
            await CheckpointWriter.WriteAsync(first.Path, tensors, options);
            await CheckpointWriter.WriteAsync(second.Path, tensors, options with { Metadata = new Dictionary<string, string> { ["a"] = "1", ["b"] = "2" } });

            AssertSameFiles(first, second);
        }
        finally
        {
            DisposeAll(tensors);
        }
    }

    /// <summary>Early writeback is a hint to the kernel: asking for it after every few bytes changes no byte written.</summary>
    [Test]
    public async Task Early_writeback_writes_the_same_files_as_none()
    {
        var tensors = FiveTensors();
        try
        {
            using var none = new TempDirectory();
            using var often = new TempDirectory();
            var options = new CheckpointWriterOptions { MaxShardBytes = 200, WritebackBytes = 0 };
            await CheckpointWriter.WriteAsync(none.Path, tensors, options);
            await CheckpointWriter.WriteAsync(often.Path, tensors, options with { WritebackBytes = 7 });

            AssertSameFiles(none, often);

            Assert.That(() => CheckpointWriter.Create(none.Path, [new("x", SafetensorsDType.F32, [1])], new CheckpointWriterOptions { WritebackBytes = -1 }), Throws.InstanceOf<ArgumentOutOfRangeException>());
        }
        finally
        {
            DisposeAll(tensors);
        }
    }

    /// <summary>
    /// Direct writing changes how bytes reach storage, never which: with buffers of one and two alignment blocks (so files
    /// span several buffers and end mid-block), several shards, raw byte chunks of random lengths, and with direct I/O
    /// refused (the page-cache fallback), every file equals the one written through the page cache.
    /// </summary>
    [TestCase(1, DirectFileWriter.Alignment)]
    [TestCase(2, 2 * DirectFileWriter.Alignment)]
    [TestCase(3, 16 << 20)]
    public async Task Direct_writing_writes_the_same_files_as_the_page_cache(int seed, int bufferBytes)
    {
        var random = new Random(seed);
        CheckpointTensor[] declared = [.. Enumerable.Range(0, 7).Select(i => new CheckpointTensor($"t.{i}", SafetensorsDType.BF16, [random.Next(0, 40), random.Next(1, 300)]))];
        byte[][] data = [.. declared.Select(t => { byte[] bytes = new byte[t.ByteLength]; random.NextBytes(bytes); return bytes; })];
        var options = new CheckpointWriterOptions { MaxShardBytes = 20_000 };

        using var cached = new TempDirectory();
        using var direct = new TempDirectory();
        using var refused = new TempDirectory();
        await WriteInRandomChunksAsync(cached.Path, options);
        await WriteInRandomChunksAsync(direct.Path, options with { DirectWrite = true, DirectWriteBufferBytes = bufferBytes });
        int refusals = 0;
        await WriteInRandomChunksAsync(refused.Path, options with { DirectWrite = true, OpenDirect = (_, _) => { refusals++; return null; } });

        Assert.That(cached.FileNames().Count(f => f.EndsWith(".safetensors", StringComparison.Ordinal)), Is.GreaterThan(1), "several shards");
        Assert.That(refusals, Is.EqualTo(cached.FileNames().Count(f => f.EndsWith(".safetensors", StringComparison.Ordinal))), "one refused open per shard");
        AssertSameFiles(cached, direct);
        AssertSameFiles(cached, refused);

        async Task WriteInRandomChunksAsync(string directory, CheckpointWriterOptions writerOptions)
        {
            var chunks = new Random(seed);
            await using CheckpointWriter writer = CheckpointWriter.Create(directory, declared, writerOptions);
            for (int i = 0; i < declared.Length; i++)
            {
                for (int done = 0; done < data[i].Length;)
                {
                    int length = Math.Min(data[i].Length - done, chunks.Next(1, 9_000));
                    await writer.WriteBytesAsync(declared[i].Name, data[i].AsMemory(done, length));
                    done += length;
                }

                if (data[i].Length == 0)
                {
                    await writer.WriteBytesAsync(declared[i].Name, ReadOnlyMemory<byte>.Empty);
                }
            }

            await writer.CompleteAsync();
        }
    }

    /// <summary>
    /// The direct file itself: appends of random lengths land in order, the file is cut to the bytes appended (not the
    /// padded block), an existing file is never overwritten, and buffers must be whole alignment blocks. Where the file
    /// system refuses direct I/O nothing is created.
    /// </summary>
    [Test]
    public void Direct_file_writes_exactly_the_appended_bytes()
    {
        var random = new Random(5);
        byte[] expected = new byte[(3 * DirectFileWriter.Alignment) + 123];
        random.NextBytes(expected);
        string path = _dir.File("direct.bin");
        using (DirectFileWriter? file = DirectFileWriter.TryCreate(path, DirectFileWriter.Alignment))
        {
            if (file is null)
            {
                Assert.That(File.Exists(path), Is.False, "a refused direct open leaves no file");
                Assert.Ignore("this file system refuses direct I/O; the fallback is covered by Direct_writing_writes_the_same_files_as_the_page_cache");
            }

            for (int done = 0; done < expected.Length;)
            {
                int length = Math.Min(expected.Length - done, random.Next(0, 2 * DirectFileWriter.Alignment));
                file.Write(expected.AsSpan(done, length));
                done += length;
                Assert.That(file.Length, Is.EqualTo(done));
            }

            file.Complete();
        }

        Assert.That(File.ReadAllBytes(path), Is.EqualTo(expected));
        Assert.That(() => DirectFileWriter.TryCreate(path, DirectFileWriter.Alignment), Throws.InstanceOf<IOException>(), "an existing file is not replaced");
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(expected));
        Assert.That(() => DirectFileWriter.TryCreate(_dir.File("odd.bin"), DirectFileWriter.Alignment + 1), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public async Task Tensors_are_converted_to_the_declared_dtype()
    {
        using var source = torch.tensor(new float[] { 1.5f, -2.25f, 3f }); // [3]
        using var ints = torch.tensor(new long[] { 7, 8 });

        await CheckpointWriter.WriteAsync(_dir.Path, [("f", source), ("i", ints)], new CheckpointWriterOptions { FloatingPointDType = SafetensorsDType.BF16 });

        using var reader = CheckpointReader.Open(_dir.Path);
        using var f = reader.ReadTensor("f");
        using var i = reader.ReadTensor("i");
        Assert.That(f.dtype, Is.EqualTo(torch.ScalarType.BFloat16));
        Assert.That(i.dtype, Is.EqualTo(torch.ScalarType.Int64), "integer tensors keep their type");
        using var back = f.to_type(torch.ScalarType.Float32);
        Assert.That(back.data<float>().ToArray(), Is.EqualTo((float[])[1.5f, -2.25f, 3f])); // exact in bf16
    }

    [Test]
    public async Task Non_contiguous_tensors_are_written_in_logical_order()
    {
        using var matrix = torch.arange(0, 6, dtype: torch.int32).reshape(2, 3); // [2, 3]
        using var transposed = matrix.t(); // [3, 2], strided view

        await CheckpointWriter.WriteAsync(_dir.Path, [("t", transposed)]);

        using var reader = CheckpointReader.Open(_dir.Path);
        using var read = reader.ReadTensor("t");
        Assert.That(read.data<int>().ToArray(), Is.EqualTo((int[])[0, 3, 1, 4, 2, 5]));
    }

    [Test]
    public async Task Source_that_throws_midway_leaves_no_files_and_the_old_checkpoint_intact()
    {
        var tensors = FiveTensors();
        try
        {
            await CheckpointWriter.WriteAsync(_dir.Path, tensors[..1]);
            byte[] before = File.ReadAllBytes(_dir.File("model.safetensors"));

            Assert.ThrowsAsync<InvalidOperationException>(async () =>
            {
                await using var writer = CheckpointWriter.Create(_dir.Path, Declare(tensors), new CheckpointWriterOptions { MaxShardBytes = 100 });
                for (int i = 0; i < tensors.Length; i++)
                {
                    if (i == 3)
                    {
                        throw new InvalidOperationException("source failed"); // e.g. a model that cannot produce the next tensor
                    }

                    await writer.WriteTensorAsync(tensors[i].Name, tensors[i].Tensor);
                }

                await writer.CompleteAsync();
            });

            Assert.That(_dir.FileNames(), Is.EqualTo((string[])["model.safetensors"]), "no temporary or new files remain");
            Assert.That(File.ReadAllBytes(_dir.File("model.safetensors")), Is.EqualTo(before));
        }
        finally
        {
            DisposeAll(tensors);
        }
    }

    [Test]
    public void Cancellation_midway_leaves_no_files_and_abandons_the_writer()
    {
        var tensors = FiveTensors();
        try
        {
            using var cancellation = new CancellationTokenSource();
            var writer = CheckpointWriter.Create(_dir.Path, Declare(tensors), new CheckpointWriterOptions { MaxShardBytes = 100 });
            Assert.ThrowsAsync<OperationCanceledException>(async () =>
            {
                for (int i = 0; i < tensors.Length; i++)
                {
                    if (i == 2)
                    {
                        await cancellation.CancelAsync();
                    }

                    await writer.WriteTensorAsync(tensors[i].Name, tensors[i].Tensor, cancellation.Token);
                }
            });

            // Cleaned up by the failing call itself, before any dispose.
            Assert.That(_dir.FileNames(), Is.Empty);
            Assert.That(() => writer.CompleteAsync(), Throws.InvalidOperationException.With.Message.Contains("abandoned"));
            writer.Dispose();
        }
        finally
        {
            DisposeAll(tensors);
        }
    }

    [Test]
    public void Already_cancelled_convenience_write_leaves_no_files()
    {
        var tensors = FiveTensors();
        try
        {
            Assert.That(async () => await CheckpointWriter.WriteAsync(_dir.Path, tensors, cancellationToken: new CancellationToken(canceled: true)),
                Throws.InstanceOf<OperationCanceledException>());
            Assert.That(_dir.FileNames(), Is.Empty);
        }
        finally
        {
            DisposeAll(tensors);
        }
    }

    [TestCase(false)]
    [TestCase(true)]
    public async Task Disposing_an_unfinished_writer_removes_its_temporary_files(bool directWrite)
    {
        var tensors = FiveTensors();
        try
        {
            var writer = CheckpointWriter.Create(_dir.Path, Declare(tensors), new CheckpointWriterOptions { DirectWrite = directWrite, DirectWriteBufferBytes = DirectFileWriter.Alignment });
            await writer.WriteTensorAsync(tensors[0].Name, tensors[0].Tensor);
            Assert.That(_dir.FileNames(), Has.Length.EqualTo(1).And.All.EndsWith(".tmp"), "data goes to a temporary file first");

            await writer.DisposeAsync();

            Assert.That(_dir.FileNames(), Is.Empty);
        }
        finally
        {
            DisposeAll(tensors);
        }
    }

    [Test]
    public async Task Misuse_is_reported_and_abandons_the_checkpoint()
    {
        var tensors = FiveTensors();
        try
        {
            var declared = Declare(tensors);
            await using (var writer = CheckpointWriter.Create(_dir.Path, declared))
            {
                Assert.That(() => writer.WriteTensorAsync(tensors[1].Name, tensors[1].Tensor),
                    Throws.ArgumentException.With.Message.Contains("out of order").And.Message.Contains("'layer.0.weight' is next"));
            }

            await using (var writer = CheckpointWriter.Create(_dir.Path, declared))
            {
                using var wrongShape = torch.zeros(2, 8);
                Assert.That(() => writer.WriteTensorAsync(tensors[0].Name, wrongShape),
                    Throws.ArgumentException.With.Message.Contains("shape [2, 8] but was declared [4, 4]"));
            }

            await using (var writer = CheckpointWriter.Create(_dir.Path, declared))
            {
                await writer.WriteTensorAsync(tensors[0].Name, tensors[0].Tensor);
                Assert.That(() => writer.CompleteAsync(), Throws.InvalidOperationException.With.Message.Contains("'layer.1.weight' and 3 more were not written"));
            }

            await using (var writer = CheckpointWriter.Create(_dir.Path, declared[..1]))
            {
                Assert.That(() => writer.WriteBytesAsync(declared[0].Name, new byte[65]),
                    Throws.ArgumentException.With.Message.Contains("holds 64 bytes"));
            }

            Assert.That(_dir.FileNames(), Is.Empty);
            Assert.That(() => CheckpointWriter.Create(_dir.Path, [declared[0], declared[0]]), Throws.ArgumentException.With.Message.Contains("more than once"));
            Assert.That(() => CheckpointWriter.Create(_dir.Path, [new CheckpointTensor("__metadata__", SafetensorsDType.U8, [1])]), Throws.ArgumentException.With.Message.Contains("reserved"));
            Assert.That(() => CheckpointWriter.Create(_dir.Path, [new CheckpointTensor("n", SafetensorsDType.U8, [-1])]), Throws.ArgumentException.With.Message.Contains("negative"));
            Assert.That(() => CheckpointWriter.Create(_dir.Path, declared, new CheckpointWriterOptions { MaxShardBytes = 0 }), Throws.ArgumentException.With.Message.Contains("MaxShardBytes"));
        }
        finally
        {
            DisposeAll(tensors);
        }
    }

    [Test]
    public async Task Raw_bytes_and_tensors_mix_and_empty_tensors_need_one_call()
    {
        using var first = torch.tensor(new short[] { 1, 2, 3 });
        CheckpointTensor[] declared =
        [
            new("first", SafetensorsDType.I16, [3]),
            new("empty", SafetensorsDType.F32, [0, 4]),
            new("raw", SafetensorsDType.U8, [2, 2]),
        ];

        await using (var writer = CheckpointWriter.Create(_dir.Path, declared))
        {
            await writer.WriteTensorAsync("first", first);
            await writer.WriteBytesAsync("empty", ReadOnlyMemory<byte>.Empty);
            await writer.WriteBytesAsync("raw", new byte[] { 9, 8, 7 });
            Assert.That(writer.NextTensor?.Name, Is.EqualTo("raw"));
            await writer.WriteBytesAsync("raw", new byte[] { 6 });
            Assert.That(writer.NextTensor, Is.Null);
            await writer.CompleteAsync();
            Assert.That(() => writer.WriteBytesAsync("raw", new byte[] { 1 }), Throws.InvalidOperationException.With.Message.Contains("already complete"));
        }

        using var reader = CheckpointReader.Open(_dir.Path);
        using var raw = reader.ReadTensor("raw");
        using var empty = reader.ReadTensor("empty");
        Assert.That(raw.data<byte>().ToArray(), Is.EqualTo((byte[])[9, 8, 7, 6]));
        Assert.That(empty.shape, Is.EqualTo((long[])[0, 4]));
    }

    [Test]
    public async Task Rewriting_with_another_layout_removes_the_stale_checkpoint_files()
    {
        var tensors = FiveTensors();
        try
        {
            await CheckpointWriter.WriteAsync(_dir.Path, tensors, new CheckpointWriterOptions { MaxShardBytes = 100 });
            File.WriteAllText(_dir.File("config.json"), "{}");

            await CheckpointWriter.WriteAsync(_dir.Path, tensors[..2]);
            Assert.That(_dir.FileNames(), Is.EqualTo((string[])["config.json", "model.safetensors"]));

            await CheckpointWriter.WriteAsync(_dir.Path, tensors, new CheckpointWriterOptions { MaxShardBytes = 200 });
            Assert.That(_dir.FileNames(), Is.EqualTo((string[])
                ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]));
            using var reader = CheckpointReader.Open(_dir.Path);
            Assert.That(reader.TensorNames, Has.Count.EqualTo(5));
        }
        finally
        {
            DisposeAll(tensors);
        }
    }

    [Test]
    public async Task Tensors_stream_from_a_checkpoint_into_a_new_one_without_conversion()
    {
        var tensors = FiveTensors();
        try
        {
            using var source = new TempDirectory();
            await CheckpointWriter.WriteAsync(source.Path, tensors, new CheckpointWriterOptions { MaxShardBytes = 100 });
            using var reader = CheckpointReader.Open(source.Path);

            await using (var writer = CheckpointWriter.Create(_dir.Path, [new CheckpointTensor("renamed", SafetensorsDType.F32, [4, 4])]))
            {
                Assert.That(() => writer.WriteFromAsync("renamed", reader, "missing"), Throws.TypeOf<KeyNotFoundException>());
            }

            await using (var writer = CheckpointWriter.Create(_dir.Path, [new CheckpointTensor("renamed", SafetensorsDType.F16, [4, 4])]))
            {
                Assert.That(() => writer.WriteFromAsync("renamed", reader, "layer.3.weight"),
                    Throws.ArgumentException.With.Message.Contains("is F32 [4, 4] but 'renamed' was declared F16 [4, 4]"));
            }

            await using (var writer = CheckpointWriter.Create(_dir.Path, [new CheckpointTensor("renamed", SafetensorsDType.F32, [4, 4])]))
            {
                await writer.WriteFromAsync("renamed", reader, "layer.3.weight");
                await writer.CompleteAsync();
            }

            using var copy = CheckpointReader.Open(_dir.Path);
            using var read = copy.ReadTensor("renamed");
            Assert.That(read.bytes.ToArray(), Is.EqualTo(tensors[3].Tensor.bytes.ToArray()));
        }
        finally
        {
            DisposeAll(tensors);
        }
    }

    [Test]
    public async Task Empty_checkpoint_is_a_header_only_file()
    {
        await CheckpointWriter.WriteAsync(_dir.Path, []);

        using var reader = CheckpointReader.Open(_dir.Path);
        Assert.That(reader.TensorNames, Is.Empty);
        Assert.That(reader.Metadata["format"], Is.EqualTo("pt"));
    }
}
