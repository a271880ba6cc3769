using ModelSurgery.Inference.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Checkpoints;

public sealed class SubmatrixReadTests
{
    [TestCase(torch.ScalarType.Float32)]
    [TestCase(torch.ScalarType.BFloat16)]
    [TestCase(torch.ScalarType.Float16)]
    [TestCase(torch.ScalarType.Int64)]
    [TestCase(torch.ScalarType.Byte)]
    public async Task A_submatrix_equals_rows_then_columns_of_the_full_tensor(torch.ScalarType dtype)
    {
        string dir = Directory.CreateTempSubdirectory("submatrix").FullName;
        try
        {
            using torch.Tensor full = torch.arange(0, 37 * 53).reshape(37, 53).to(dtype);
            await CheckpointWriter.WriteAsync(dir, [("w", full)]);
            using var reader = CheckpointReader.Open(dir);
            long[] rows = [36, 0, 1, 2, 17, 17, 5];
            long[] columns = [0, 1, 2, 3, 10, 52, 11, 30, 31, 30];

            using torch.Tensor actual = reader.ReadSubmatrix("w", rows, columns);
            using torch.Tensor expected = full.index_select(0, torch.tensor(rows)).index_select(1, torch.tensor(columns));

            Assert.That(actual.dtype, Is.EqualTo(dtype));
            Assert.That(actual.shape, Is.EqualTo(new long[] { rows.Length, columns.Length }));
            Assert.That(actual.eq(expected).all().item<bool>(), Is.True);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public async Task Out_of_range_indices_and_non_matrices_are_named()
    {
        string dir = Directory.CreateTempSubdirectory("submatrix").FullName;
        try
        {
            using torch.Tensor matrix = torch.zeros(4, 5), vector = torch.zeros(4);
            await CheckpointWriter.WriteAsync(dir, [("m", matrix), ("v", vector)]);
            using var reader = CheckpointReader.Open(dir);

            var column = Assert.Throws<ArgumentException>(() => reader.ReadSubmatrix("m", [0], [5]));
            Assert.That(column!.Message, Does.Contain("Index 5").And.Contain("dimension 1").And.Contain("'m'"));
            var rank = Assert.Throws<ArgumentException>(() => reader.ReadSubmatrix("v", [0], [0]));
            Assert.That(rank!.Message, Does.Contain("rank 1"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// Reads large enough to be gathered in row blocks on several threads (over <see cref="SafetensorsFile.ParallelCopyBytes"/>)
    /// give exactly torch's own selection, in order, with duplicates and for every read kind.
    /// </summary>
    [TestCase(torch.ScalarType.BFloat16)]
    [TestCase(torch.ScalarType.Float32)]
    public async Task Reads_gathered_on_several_threads_equal_torch_selection(torch.ScalarType dtype)
    {
        string dir = Directory.CreateTempSubdirectory("submatrix").FullName;
        int threads = torch.get_num_threads();
        try
        {
            torch.set_num_threads(Math.Max(threads, 3));
            var random = new Random(3);
            using torch.Tensor full = torch.randn(1031, 1543).to(dtype);
            Assert.That(full.numel() * full.element_size(), Is.GreaterThan(2 * SafetensorsFile.ParallelCopyBytes));
            await CheckpointWriter.WriteAsync(dir, [("w", full)]);
            using var reader = CheckpointReader.Open(dir);
            long[] rows = [.. Enumerable.Range(0, 1031).Where(_ => random.Next(4) != 0).Select(r => (long)r), 7, 7, 1030];
            long[] columns = [.. Enumerable.Range(0, 1543).Where(_ => random.Next(3) != 0).Select(c => (long)c), 0, 1542];
            using var scope = torch.NewDisposeScope();

            Assert.That(reader.ReadSubmatrix("w", rows, columns).eq(full.index_select(0, torch.tensor(rows)).index_select(1, torch.tensor(columns))).all().item<bool>(), Is.True, "sub-matrix");
            // Whole blocks of 64 columns (heads, neurons in blocks): long runs, copied run by run rather than gathered.
            long[] blocks = [.. new[] { 1472, 0, 64, 640 }.SelectMany(b => Enumerable.Range(b, 64).Select(c => (long)c))];
            Assert.That(reader.ReadSubmatrix("w", rows, blocks).eq(full.index_select(0, torch.tensor(rows)).index_select(1, torch.tensor(blocks))).all().item<bool>(), Is.True, "column blocks");
            Assert.That(reader.ReadIndices("w", 0, rows).eq(full.index_select(0, torch.tensor(rows))).all().item<bool>(), Is.True, "rows");
            Assert.That(reader.ReadSlice("w", 0, 5, 1000).eq(full.narrow(0, 5, 1000)).all().item<bool>(), Is.True, "row slice");
            Assert.That(reader.ReadSlice("w", 1, 3, 1500).eq(full.narrow(1, 3, 1500)).all().item<bool>(), Is.True, "column slice");
            Assert.That(reader.ReadTensor("w").eq(full).all().item<bool>(), Is.True, "whole tensor");
        }
        finally
        {
            torch.set_num_threads(threads);
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// Reads across rows (slices and index lists along the last dimension) take each row's pieces either with a read
    /// apiece (long pieces) or out of whole rows read a block at a time (short ones); both give torch's own selection.
    /// </summary>
    [Test]
    public async Task Strided_reads_of_long_and_short_pieces_equal_torch_selection()
    {
        string dir = Directory.CreateTempSubdirectory("strided").FullName;
        try
        {
            using torch.Tensor full = torch.randn(24, 40_000); // rows of 160,000 bytes
            await CheckpointWriter.WriteAsync(dir, [("w", full)]);
            using var reader = CheckpointReader.Open(dir);
            using var scope = torch.NewDisposeScope();
            long rowBytes = 40_000 * sizeof(float);
            long[] longRuns = [.. Enumerable.Range(30_000, 9_999).Concat(Enumerable.Range(2, 20_000)).Select(c => (long)c)];
            long[] scattered = [39_999, 0, 7, 7, 20_001, 3];
            Assert.Multiple(() =>
            {
                Assert.That(SafetensorsFile.ReadsRunsDirectly(30_000 * sizeof(float), rowBytes), Is.True, "long pieces are read directly");
                Assert.That(SafetensorsFile.ReadsRunsDirectly(50 * sizeof(float), rowBytes), Is.False, "short pieces come out of whole rows");
                Assert.That(reader.ReadSlice("w", 1, 3, 30_000).eq(full.narrow(1, 3, 30_000)).all().item<bool>(), Is.True, "long slice");
                Assert.That(reader.ReadSlice("w", 1, 39_950, 50).eq(full.narrow(1, 39_950, 50)).all().item<bool>(), Is.True, "short slice");
                Assert.That(reader.ReadIndices("w", 1, longRuns).eq(full.index_select(1, torch.tensor(longRuns))).all().item<bool>(), Is.True, "long runs of indices");
                Assert.That(reader.ReadIndices("w", 1, scattered).eq(full.index_select(1, torch.tensor(scattered))).all().item<bool>(), Is.True, "scattered indices");
            });
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// Reading rows (and columns) straight into a byte buffer gives the bytes of the tensor reads, in large reads gathered on
    /// several threads and small ones alike, and is checked for NaN like them.
    /// </summary>
    [TestCase(torch.ScalarType.BFloat16, 37, 53)]
    [TestCase(torch.ScalarType.Float32, 37, 53)]
    [TestCase(torch.ScalarType.BFloat16, 1031, 1543)]
    public async Task Rows_read_into_a_buffer_equal_the_tensor_reads_and_are_checked(torch.ScalarType dtype, int rowCount, int columnCount)
    {
        string dir = Directory.CreateTempSubdirectory("submatrix").FullName;
        try
        {
            using torch.Tensor full = torch.randn(rowCount, columnCount).to(dtype);
            using torch.Tensor damaged = full.clone();
            damaged[rowCount - 1, columnCount - 1] = torch.tensor(double.NaN);
            await CheckpointWriter.WriteAsync(dir, [("w", full), ("v", full[0]), ("bad", damaged)]);
            using var reader = CheckpointReader.Open(dir);
            var random = new Random(rowCount);
            long[] rows = [.. Enumerable.Range(0, rowCount).Where(_ => random.Next(4) != 0).Select(r => (long)r), 7, 7, rowCount - 1];
            long[] columns = [.. Enumerable.Range(0, columnCount).Where(_ => random.Next(3) != 0).Select(c => (long)c), 0, columnCount - 1];
            byte[] buffer = new byte[rows.Length * columnCount * 4];

            long length = reader.ReadRowsInto("w", rows, columns, buffer);
            using (torch.Tensor expected = reader.ReadSubmatrix("w", rows, columns))
            {
                Assert.That(buffer.AsSpan(0, (int)length).ToArray(), Is.EqualTo(expected.bytes.ToArray()), "sub-matrix");
            }

            length = reader.ReadRowsInto("w", rows, null, buffer);
            using (torch.Tensor expected = reader.ReadIndices("w", 0, rows))
            {
                Assert.That(buffer.AsSpan(0, (int)length).ToArray(), Is.EqualTo(expected.bytes.ToArray()), "whole rows");
            }

            length = reader.ReadRowsInto("v", [3, 1, 2], null, buffer);
            using (torch.Tensor expected = reader.ReadIndices("v", 0, [3, 1, 2]))
            {
                Assert.That(buffer.AsSpan(0, (int)length).ToArray(), Is.EqualTo(expected.bytes.ToArray()), "entries of a vector");
            }

            Assert.That(reader.ReadRowsInto("bad", [0], null, buffer), Is.EqualTo(columnCount * full.element_size()), "the damaged value is not in row 0");
            var nan = Assert.Throws<InvalidDataException>(() => reader.ReadRowsInto("bad", [rowCount - 1], [0, columnCount - 1], buffer));
            Assert.That(nan!.Message, Does.Contain("'bad'").And.Contain("NaN"));
            Assert.Throws<ArgumentException>(() => reader.ReadRowsInto("w", rows, columns, new byte[10]));
            Assert.Throws<ArgumentException>(() => reader.ReadRowsInto("v", [0], [0], buffer));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// Integer rows read into a buffer whatever their bits (they cannot be NaN); rows of an 8-bit float, whose raw values
    /// are not checked, are refused before the buffer is touched, naming the tensor.
    /// </summary>
    [Test]
    public void Integer_rows_are_read_and_8_bit_float_rows_refused()
    {
        string dir = Directory.CreateTempSubdirectory("submatrix").FullName;
        try
        {
            // Two 2 x 3 tensors, every byte 0xFF: I32 (-1 everywhere, 24 bytes) and F8_E5M2 (NaN everywhere, 6 bytes).
            string header = """{"ints":{"dtype":"I32","shape":[2,3],"data_offsets":[0,24]},"f8":{"dtype":"F8_E5M2","shape":[2,3],"data_offsets":[24,30]}}""";
            RawSafetensors.Write(Path.Combine(dir, "model.safetensors"), header, Enumerable.Repeat((byte)0xFF, 30).ToArray());
            using var reader = CheckpointReader.Open(dir);
            byte[] buffer = new byte[24];

            Assert.That(reader.ReadRowsInto("ints", [1, 0], [2, 0], buffer), Is.EqualTo(16));
            Assert.That(buffer.Take(16), Is.All.EqualTo(0xFF));

            Array.Clear(buffer);
            var refused = Assert.Throws<NotSupportedException>(() => reader.ReadRowsInto("f8", [0, 1], null, buffer));
            Assert.That(refused!.Message, Does.Contain("'f8'").And.Contain("F8_E5M2"));
            Assert.That(buffer, Is.All.EqualTo(0), "nothing is read");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
