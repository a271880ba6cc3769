using System.Globalization;
using ModelSurgery.Inference.Checkpoints;
using TorchSharp;

namespace ModelSurgery.Tests.Checkpoints;

/// <summary>Streaming a checkpoint must not keep the file resident in the process: a 13 GB teacher has to stream through a 4 GB budget.</summary>
public sealed class ReaderResidentMemoryTests
{
    private static long MappedFileResidentBytes()
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("RssFile:", StringComparison.Ordinal))
            {
                return long.Parse(line["RssFile:".Length..].Replace("kB", string.Empty, StringComparison.Ordinal).Trim(), CultureInfo.InvariantCulture) * 1024;
            }
        }

        throw new InvalidOperationException("no RssFile line in /proc/self/status");
    }

    [Test]
    public async Task Reading_every_tensor_does_not_leave_the_file_resident()
    {
        Assume.That(OperatingSystem.IsLinux() && File.Exists("/proc/self/status"), "resident-set accounting is read from Linux's /proc");
        string dir = Directory.CreateTempSubdirectory("rss").FullName;
        try
        {
            const long rows = 2048, columns = 2048; // 8 tensors of 16 MiB: 128 MiB of file
            var tensors = new List<(string Name, torch.Tensor Tensor)>();
            for (int i = 0; i < 8; i++)
            {
                tensors.Add(($"t{i}", torch.ones(rows, columns)));
            }

            await CheckpointWriter.WriteAsync(dir, tensors);
            foreach (var (_, tensor) in tensors)
            {
                tensor.Dispose();
            }

            using var reader = CheckpointReader.Open(dir);
            long[] evenRows = [.. Enumerable.Range(0, (int)rows / 2).Select(r => 2L * r)];
            long[] everyThirdColumn = [.. Enumerable.Range(0, (int)columns / 3).Select(c => 3L * c)];
            byte[] buffer = new byte[rows * columns * sizeof(float)];
            long before = MappedFileResidentBytes();
            foreach (string name in reader.TensorNames)
            {
                using torch.Tensor whole = reader.ReadTensor(name);
                using torch.Tensor rowsRead = reader.ReadIndices(name, 0, [0, 5, 2000]);
                using torch.Tensor slice = reader.ReadSlice(name, 1, 100, 50);

                // Half the rows of each tensor (8 MiB of its pages), as a build reads them: whole and with kept columns.
                using torch.Tensor submatrix = reader.ReadSubmatrix(name, evenRows, everyThirdColumn);
                reader.ReadRowsInto(name, evenRows, null, buffer);
                reader.ReadRowsInto(name, evenRows, everyThirdColumn, buffer);
            }

            long growth = MappedFileResidentBytes() - before;
            Assert.That(growth, Is.LessThan(48L << 20), $"the file stayed resident in the process: RssFile grew by {growth >> 20} MiB after reading 128 MiB");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
