using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Tests.Cli;
using ModelSurgery.Tests.Vocabulary;
using ModelSurgery.Training;
using ModelSurgery.Training.Export;

namespace ModelSurgery.Tests.Training.Export;

/// <summary>
/// The free-disk check of a job export: it counts the inputs it will copy (not those it hard-links), refuses one byte
/// below its estimate before writing anything, passes at it, and the written job fits in what it estimated.
/// </summary>
public sealed class ExportJobDiskTests
{
    private string _dir = null!;
    private string _student = null!;
    private string _tokens = null!;

    [OneTimeSetUp]
    public async Task OneTimeSetUp()
    {
        _dir = Directory.CreateTempSubdirectory("export-job-disk").FullName;
        _student = Path.Combine(_dir, "student");
        using (await TinyTokenizedModel.SaveAsync(_student))
        {
        }

        int vocab = LlamaConfig.Load(Path.Combine(_student, "config.json")).VocabSize;
        Directory.CreateDirectory(Path.Combine(_dir, "tokens"));
        _tokens = TrainCliSupport.WriteTokens(Path.Combine(_dir, "tokens"), vocab: vocab);
    }

    [OneTimeTearDown]
    public void OneTimeTearDown() => Directory.Delete(_dir, recursive: true);

    [TearDown]
    public void ResetFreeDisk() => MemoryPreflight.FreeDiskOverride = null;

    private JobExportOptions Options(string name, bool hardLink) => new()
    {
        StudentDirectory = _student,
        TokensPath = _tokens,
        OutputDirectory = Path.Combine(_dir, name),
        Training = new TrainingOptions { BatchSize = 4, SeqLen = 16, Steps = 10, OutputDir = "unused" },
        Nodes = 1,
        GpusPerNode = 2,
        HardLink = hardLink,
    };

    private long InputBytes => Directory.GetFiles(_student).Append(_tokens).Sum(f => new FileInfo(f).Length);

    [Test]
    public async Task A_copying_export_is_refused_one_byte_below_its_estimate_and_fits_in_it()
    {
        long needed = JobExporter.EstimateDiskBytes(Options("copy", hardLink: false));
        Assert.That(needed, Is.GreaterThan(InputBytes + JobExporter.ScriptAllowance), "every input is copied, plus the split and the scripts");

        MemoryPreflight.FreeDiskOverride = needed - 1;
        JobExportException refused = Assert.ThrowsAsync<JobExportException>(() => JobExporter.ExportAsync(Options("copy-refused", hardLink: false)))!;
        Assert.That(refused.Option, Is.EqualTo("out"));
        Assert.That(refused.Message, Does.Contain(Path.Combine(_dir, "copy-refused")).And.Contain(ByteSize.Format(needed)).And.Contain("hard-link"));
        Assert.That(Directory.GetDirectories(_dir).Where(d => Path.GetFileName(d).Contains("copy-refused", StringComparison.Ordinal)), Is.Empty, "nothing is written, not even the temporary folder");

        MemoryPreflight.FreeDiskOverride = needed;
        ExportedJob job = await JobExporter.ExportAsync(Options("copy", hardLink: false));
        long written = Directory.EnumerateFiles(job.Directory, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        Assert.That(job.CopiedBytes, Is.EqualTo(InputBytes));
        Assert.That(written, Is.LessThanOrEqualTo(needed), "the estimate covers the job");
        Assert.That(written, Is.GreaterThan(needed - JobExporter.ScriptAllowance - 256), "and is not inflated beyond the scripts' allowance and the npy headers");
    }

    [Test]
    public void Inputs_on_the_outputs_file_system_are_linked_and_not_counted()
    {
        Assume.That(OperatingSystem.IsWindows(), Is.False, "hard links are only tried on Unix");
        long copying = JobExporter.EstimateDiskBytes(Options("a", hardLink: false));
        long linking = JobExporter.EstimateDiskBytes(Options("b", hardLink: true));

        Assert.That(copying - linking, Is.EqualTo(InputBytes));
    }
}
