using ModelSurgery.Inference.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Checkpoints;

/// <summary>
/// Kept columns in ascending order, as plans keep them, go through <see cref="RowCompressor"/> where the CPU has AVX-512:
/// every row width around the 64-byte block (narrower, exact, one more, many blocks with a tail) and every pattern of kept
/// columns (one, the first or last only, all, scattered) gives exactly torch's own selection.
/// </summary>
public sealed class RowCompressorTests
{
    [TestCase(torch.ScalarType.BFloat16)]
    [TestCase(torch.ScalarType.Float16)]
    [TestCase(torch.ScalarType.Float32)]
    public async Task Ascending_columns_read_exactly_as_torch_selects_them(torch.ScalarType dtype)
    {
        string dir = Directory.CreateTempSubdirectory("row-compressor").FullName;
        try
        {
            int[] widths = [15, 16, 31, 32, 33, 64, 100, 2055];
            var tensors = widths.Select((w, i) => ($"w{w}", torch.randn(9, w).to(dtype))).ToList();
            await CheckpointWriter.WriteAsync(dir, tensors);
            using var reader = CheckpointReader.Open(dir);
            var random = new Random(5);
            long[] rows = [0, 3, 4, 8];
            foreach ((string name, torch.Tensor full) in tensors)
            {
                long width = full.shape[1];
                var patterns = new Dictionary<string, long[]>
                {
                    ["first"] = [0],
                    ["last"] = [width - 1],
                    ["all"] = [.. Enumerable.Range(0, (int)width).Select(c => (long)c)],
                    ["every third"] = [.. Enumerable.Range(0, (int)width).Where(c => c % 3 == 1).Select(c => (long)c)],
                    ["scattered"] = [.. Enumerable.Range(0, (int)width).Where(_ => random.Next(5) < 3).Select(c => (long)c)],
                };
                foreach ((string pattern, long[] columns) in patterns.Where(p => p.Value.Length > 0))
                {
                    using var scope = torch.NewDisposeScope();
                    torch.Tensor expected = full.index_select(0, torch.tensor(rows)).index_select(1, torch.tensor(columns));
                    byte[] buffer = new byte[rows.Length * columns.Length * full.element_size() + 64];
                    Array.Fill(buffer, (byte)0xA5);
                    long length = reader.ReadRowsInto(name, rows, columns, buffer);
                    Assert.That(length, Is.EqualTo(expected.numel() * full.element_size()), $"{name} {pattern}");
                    Assert.That(buffer.AsSpan(0, (int)length).ToArray(), Is.EqualTo(expected.contiguous().bytes.ToArray()), $"{name} {pattern}");
                    Assert.That(buffer.AsSpan((int)length).ToArray(), Is.All.EqualTo((byte)0xA5), $"{name} {pattern}: nothing written past the rows");
                }
            }

            foreach ((_, torch.Tensor full) in tensors)
            {
                full.Dispose();
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void Compressing_applies_only_to_ascending_columns_of_rows_of_a_block_or_more()
    {
        Assert.That(RowCompressor.TryCreate([3, 2], 2, 64), Is.Null, "descending");
        Assert.That(RowCompressor.TryCreate([2, 2], 2, 64), Is.Null, "repeated");
        Assert.That(RowCompressor.TryCreate([1], 2, 31), Is.Null, "narrower than a block of 32");
        Assert.That(RowCompressor.TryCreate([1], 8, 64), Is.Null, "8-byte elements");
        Assert.That(RowCompressor.TryCreate([1, 5], 2, 32) is not null, Is.EqualTo(RowCompressor.IsSupported(2)));
        Assert.That(RowCompressor.TryCreate([1, 5], 4, 16) is not null, Is.EqualTo(RowCompressor.IsSupported(4)));
    }

    /// <summary>The compressor itself against a plain loop, over every row width from one block to three and kept fractions.</summary>
    [TestCase(2)]
    [TestCase(4)]
    public void A_compressed_row_equals_the_kept_elements_in_order(int elementSize)
    {
        Assume.That(RowCompressor.IsSupported(elementSize), Is.True, "this CPU has no AVX-512 compress for this element size");
        int lanes = 64 / elementSize;
        var random = new Random(elementSize);
        for (int width = lanes; width <= 3 * lanes + 1; width++)
        {
            byte[] source = new byte[width * elementSize];
            random.NextBytes(source);
            foreach (int percent in new[] { 1, 30, 70, 100 })
            {
                long[] columns = [.. Enumerable.Range(0, width).Where(_ => random.Next(100) < percent).Select(c => (long)c)];
                if (columns.Length == 0)
                {
                    continue;
                }

                byte[] expected = [.. columns.SelectMany(c => source.Skip((int)c * elementSize).Take(elementSize))];
                byte[] actual = new byte[expected.Length + 64];
                Array.Fill(actual, (byte)0xA5);
                RowCompressor compressor = RowCompressor.TryCreate(columns, elementSize, width)!;
                compressor.CompressRow(source, actual);

                Assert.That(actual.Take(expected.Length), Is.EqualTo(expected), $"width {width}, {percent}%");
                Assert.That(actual.Skip(expected.Length), Is.All.EqualTo((byte)0xA5), $"width {width}, {percent}%: nothing past the row");
            }
        }
    }
}
