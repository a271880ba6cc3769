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
}
