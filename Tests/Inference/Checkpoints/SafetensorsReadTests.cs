using ModelSurgery.Inference.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Checkpoints;

/// <summary>Round trips of every dtype and partial reads (slices, index lists) checked against full reads.</summary>
public sealed class SafetensorsReadTests
{
    private TempDirectory _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDirectory();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private static readonly SafetensorsDType[] TorchDTypes =
    [
        SafetensorsDType.BOOL, SafetensorsDType.U8, SafetensorsDType.I8, SafetensorsDType.I16, SafetensorsDType.I32,
        SafetensorsDType.I64, SafetensorsDType.F16, SafetensorsDType.BF16, SafetensorsDType.F32, SafetensorsDType.F64,
    ];

    /// <summary>A [2, 3, 4] tensor of distinct values (alternating for BOOL) in <paramref name="dtype"/>.</summary>
    private static torch.Tensor Sample(SafetensorsDType dtype, long[]? shape = null)
    {
        shape ??= [2, 3, 4];
        long count = shape.Aggregate(1L, (a, b) => a * b);
        using var values = torch.arange(0, count, dtype: torch.float64).reshape(shape); // [2, 3, 4]
        if (dtype == SafetensorsDType.BOOL)
        {
            using var remainder = values.remainder(3);
            return remainder.eq(1);
        }

        using var signed = values.sub(count / 2); // negatives exercise sign handling
        var source = dtype == SafetensorsDType.U8 ? values : signed;
        return source.to_type(dtype.ToScalarType());
    }

    private async Task<string> WriteSingleAsync(params (string Name, torch.Tensor Tensor)[] tensors)
    {
        await CheckpointWriter.WriteAsync(_dir.Path, tensors);
        return _dir.File(CheckpointReader.SingleFileName);
    }

    [TestCaseSource(nameof(TorchDTypes))]
    public async Task Every_dtype_round_trips_with_shape_and_bytes(SafetensorsDType dtype)
    {
        using var original = Sample(dtype);
        using var scalar = Sample(dtype, []);
        string path = await WriteSingleAsync(("t", original), ("scalar", scalar));

        using var file = SafetensorsFile.Open(path);
        using var read = file.ReadTensor("t");
        using var readScalar = file.ReadTensor("scalar");

        Assert.That(file.GetInfo("t").DType, Is.EqualTo(dtype));
        Assert.That(read.dtype, Is.EqualTo(dtype.ToScalarType()));
        Assert.That(read.shape, Is.EqualTo(original.shape));
        Assert.That(read.bytes.ToArray(), Is.EqualTo(original.bytes.ToArray()));
        Assert.That(readScalar.shape, Is.Empty);
        Assert.That(readScalar.bytes.ToArray(), Is.EqualTo(scalar.bytes.ToArray()));
    }

    [Test]
    public void Dtype_helpers_agree_with_torch_and_the_header_strings()
    {
        foreach (var dtype in Enum.GetValues<SafetensorsDType>())
        {
            Assert.That(SafetensorsDTypes.TryParse(dtype.ToHeaderString(), out var parsed) && parsed == dtype, dtype.ToString());
            if (dtype.TryToScalarType(out var scalarType))
            {
                using var probe = torch.zeros(1, dtype: scalarType);
                Assert.That(probe.element_size(), Is.EqualTo(dtype.ElementSize()), dtype.ToString());
                Assert.That(SafetensorsDTypes.FromScalarType(scalarType), Is.EqualTo(dtype));
            }
        }

        Assert.That(SafetensorsDTypes.Parse("bf16"), Is.EqualTo(SafetensorsDType.BF16));
        Assert.That(() => SafetensorsDTypes.Parse("fp8"), Throws.ArgumentException.With.Message.Contains("fp8"));
        Assert.That(() => SafetensorsDType.U16.ToScalarType(), Throws.TypeOf<NotSupportedException>());
        Assert.That(() => SafetensorsDTypes.FromScalarType(torch.ScalarType.ComplexFloat32), Throws.TypeOf<NotSupportedException>());
    }

    [Test]
    public async Task Dtypes_without_torch_counterpart_round_trip_as_raw_bytes()
    {
        byte[] data = Enumerable.Range(0, 12).Select(i => (byte)(i * 7)).ToArray();
        await using (var writer = CheckpointWriter.Create(_dir.Path, [new CheckpointTensor("u", SafetensorsDType.U16, [2, 3])]))
        {
            await writer.WriteBytesAsync("u", data.AsMemory(0, 5));
            await writer.WriteBytesAsync("u", data.AsMemory(5));
            await writer.CompleteAsync();
        }

        using var file = SafetensorsFile.Open(_dir.File(CheckpointReader.SingleFileName));
        var back = new byte[10];
        file.ReadBytes("u", 2, back);

        Assert.That(back, Is.EqualTo(data[2..]));
        Assert.That(() => file.ReadTensor("u"), Throws.TypeOf<NotSupportedException>().With.Message.Contains("'u'"));
        Assert.That(() => file.ReadBytes("u", 4, new byte[9]), Throws.ArgumentException.With.Message.Contains("outside the 12 bytes"));
    }

    [TestCase(SafetensorsDType.F32)]
    [TestCase(SafetensorsDType.BF16)]
    [TestCase(SafetensorsDType.BOOL)]
    [TestCase(SafetensorsDType.I64)]
    public async Task Slices_along_every_dim_equal_slices_of_the_full_tensor(SafetensorsDType dtype)
    {
        long[] shape = [3, 4, 5];
        using var original = Sample(dtype, shape);
        using var file = SafetensorsFile.Open(await WriteSingleAsync(("t", original)));
        using var full = file.ReadTensor("t");

        for (int dim = 0; dim < shape.Length; dim++)
        {
            for (long start = 0; start < shape[dim]; start++)
            {
                for (long length = 0; start + length <= shape[dim]; length++)
                {
                    using var slice = file.ReadSlice("t", dim, start, length);
                    using var expected = full.narrow(dim, start, length).contiguous();
                    Assert.That(slice.shape, Is.EqualTo(expected.shape), $"dim {dim} [{start}, +{length})");
                    Assert.That(slice.bytes.ToArray(), Is.EqualTo(expected.bytes.ToArray()), $"dim {dim} [{start}, +{length})");
                }
            }
        }

        using var last = file.ReadSlice("t", -1, 1, 3);
        using var expectedLast = full.narrow(2, 1, 3).contiguous();
        Assert.That(last.bytes.ToArray(), Is.EqualTo(expectedLast.bytes.ToArray()));
    }

    private static IEnumerable<long[]> IndexLists()
    {
        yield return [];
        yield return [0];
        yield return [2, 0, 1];
        yield return [1, 1, 2, 1];
        yield return [0, 1, 2];
        yield return [2, 3, 0, 1, 2];
    }

    [TestCaseSource(nameof(IndexLists))]
    public async Task Index_reads_along_every_dim_equal_index_select_of_the_full_tensor(long[] indices)
    {
        long[] shape = [4, 4, 5];
        using var original = Sample(SafetensorsDType.F16, shape);
        using var file = SafetensorsFile.Open(await WriteSingleAsync(("t", original)));
        using var full = file.ReadTensor("t");
        using var index = torch.tensor(indices, dtype: torch.int64);

        for (int dim = 0; dim < shape.Length; dim++)
        {
            using var read = file.ReadIndices("t", dim, indices);
            using var expected = full.index_select(dim, index).contiguous();
            Assert.That(read.shape, Is.EqualTo(expected.shape), $"dim {dim}");
            Assert.That(read.bytes.ToArray(), Is.EqualTo(expected.bytes.ToArray()), $"dim {dim}");
        }
    }

    [Test]
    public async Task Out_of_range_reads_are_argument_errors_naming_the_tensor()
    {
        using var original = Sample(SafetensorsDType.F32);
        using var scalar = Sample(SafetensorsDType.F32, []);
        using var file = SafetensorsFile.Open(await WriteSingleAsync(("t", original), ("s", scalar)));

        Assert.Multiple(() =>
        {
            Assert.That(() => file.ReadSlice("t", 3, 0, 1), Throws.ArgumentException.With.Message.Contains("Dimension 3").And.Message.Contains("'t'"));
            Assert.That(() => file.ReadSlice("t", -4, 0, 1), Throws.ArgumentException.With.Message.Contains("Dimension -4"));
            Assert.That(() => file.ReadSlice("t", 1, 2, 2), Throws.ArgumentException.With.Message.Contains("out of range for dimension 1 of size 3"));
            Assert.That(() => file.ReadSlice("t", 1, -1, 1), Throws.ArgumentException);
            Assert.That(() => file.ReadSlice("t", 1, 0, -1), Throws.ArgumentException);
            Assert.That(() => file.ReadSlice("t", 1, long.MaxValue, 2), Throws.ArgumentException);
            Assert.That(() => file.ReadIndices("t", 2, [0, 4]), Throws.ArgumentException.With.Message.Contains("Index 4 (position 1)"));
            Assert.That(() => file.ReadIndices("t", 2, [-1]), Throws.ArgumentException.With.Message.Contains("Index -1"));
            Assert.That(() => file.ReadSlice("s", 0, 0, 1), Throws.ArgumentException.With.Message.Contains("scalar"));
        });
    }

    [Test]
    public async Task Concurrent_reads_return_the_same_data_as_serial_reads()
    {
        using var original = Sample(SafetensorsDType.F32, [16, 32]);
        using var file = SafetensorsFile.Open(await WriteSingleAsync(("t", original)));
        var expected = Enumerable.Range(0, 16).Select(row =>
        {
            using var slice = file.ReadSlice("t", 0, row, 1);
            return slice.bytes.ToArray();
        }).ToArray();

        var results = new byte[64][];
        Parallel.For(0, results.Length, i =>
        {
            using var slice = i % 2 == 0 ? file.ReadSlice("t", 0, i % 16, 1) : file.ReadIndices("t", 0, [i % 16]);
            results[i] = slice.bytes.ToArray();
        });

        for (int i = 0; i < results.Length; i++)
        {
            Assert.That(results[i], Is.EqualTo(expected[i % 16]));
        }
    }

    [Test]
    public async Task Reads_after_dispose_fail_cleanly()
    {
        using var original = Sample(SafetensorsDType.F32);
        var file = SafetensorsFile.Open(await WriteSingleAsync(("t", original)));
        file.Dispose();
        file.Dispose();

        Assert.That(() => file.ReadTensor("t"), Throws.TypeOf<ObjectDisposedException>());
    }

    /// <summary>
    /// A U8 tensor of 2.2e9 elements in a sparse file (nothing is allocated for the zero pages): reads near its end need
    /// 64-bit offsets everywhere, in the header, the file reads and the copies.
    /// </summary>
    [Test]
    public void Tensors_over_2GiB_are_read_with_64_bit_offsets()
    {
        const long Rows = 2;
        const long Columns = 1_100_000_000;
        const long Total = Rows * Columns; // 2.2e9 bytes > int.MaxValue
        string header = $"{{\"big\":{{\"dtype\":\"U8\",\"shape\":[{Rows},{Columns}],\"data_offsets\":[0,{Total}]}}}}";
        string path = RawSafetensors.Write(_dir.File("big.safetensors"), header);
        long dataStart = 8 + header.Length;
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite))
        {
            stream.SetLength(dataStart + Total);
            stream.Position = dataStart + Columns - 2;   // last two bytes of row 0
            stream.Write([11, 12]);
            stream.Position = dataStart + Total - 4;     // last four bytes of row 1, i.e. of the tensor
            stream.Write([21, 22, 23, 24]);
        }

        using var file = SafetensorsFile.Open(path);
        using var flatEnd = file.ReadSlice("big", 1, Columns - 4, 4);     // [2, 4]: strided runs past 2 GiB
        using var rowEnd = file.ReadIndices("big", 1, [Columns - 1, Columns - 2, 0]);
        var raw = new byte[4];
        file.ReadBytes("big", Total - 4, raw);

        Assert.That(file.GetInfo("big").ByteLength, Is.EqualTo(Total));
        Assert.That(flatEnd.shape, Is.EqualTo((long[])[2, 4]));
        Assert.That(flatEnd.data<byte>().ToArray(), Is.EqualTo((byte[])[0, 0, 11, 12, 21, 22, 23, 24]));
        Assert.That(rowEnd.data<byte>().ToArray(), Is.EqualTo((byte[])[12, 11, 0, 24, 23, 0]));
        Assert.That(raw, Is.EqualTo((byte[])[21, 22, 23, 24]));
    }
}
