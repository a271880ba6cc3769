using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Xml.Linq;
using ModelSurgery.Tests.Cli;
using ModelSurgery.Tests.Support;

namespace ModelSurgery.Tests.Packaging;

/// <summary>
/// Packs the <c>modelsurgery</c> tool the way it is published (a top-level package pointing to one package per
/// platform, each with only its own LibTorch), installs it from the local feed into a tool folder, and runs it: the
/// installed tool loads LibTorch on this host and gives the same results as the CLI built in the repository.
/// </summary>
[Category("Packaging")]
[NonParallelizable]
public sealed class CliToolPackageTests
{
    // nuget.org refuses packages above 250 MB; a tool package with every platform's LibTorch was 346 MB.
    private const long NuGetOrgPackageLimit = 250L * 1024 * 1024;

    private PackedFeed _feed = null!;
    private string _work = "";

    [OneTimeSetUp]
    public void PackOnce()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            Assert.Ignore($"The tool package is packed for {LocalPackageFeed.ToolRuntime} only.");
        }

        _feed = LocalPackageFeed.GetWithTool();
        _work = Directory.CreateTempSubdirectory("modelsurgery-tool-").FullName;
    }

    [OneTimeTearDown]
    public void RemoveWork()
    {
        if (Directory.Exists(_work))
        {
            Directory.Delete(_work, recursive: true);
        }
    }

    [Test]
    public void Top_level_package_points_to_the_platform_package_which_carries_only_its_own_LibTorch()
    {
        string topLevel = Path.Combine(_feed.Folder, $"{LocalPackageFeed.ToolId}.{_feed.Version}.nupkg");
        string platform = Path.Combine(_feed.Folder, $"{LocalPackageFeed.ToolId}.{LocalPackageFeed.ToolRuntime}.{_feed.Version}.nupkg");
        Assert.That(File.Exists(topLevel), $"{topLevel} is missing");
        Assert.That(File.Exists(platform), $"{platform} is missing");

        using (ZipArchive archive = ZipFile.OpenRead(topLevel))
        {
            ZipArchiveEntry settings = archive.Entries.Single(e => e.Name == "DotnetToolSettings.xml");
            using Stream stream = settings.Open();
            XDocument document = XDocument.Load(stream);
            string[] runtimes = [.. document.Descendants().Where(e => e.Name.LocalName == "RuntimeIdentifierPackage")
                .Select(e => (string?)e.Attribute("RuntimeIdentifier") ?? "")];
            Assert.That(runtimes, Is.EqualTo(new[] { LocalPackageFeed.ToolRuntime }), "the top-level package names the platform packages");
            Assert.That(archive.Entries.Where(e => e.Name.EndsWith(".so", StringComparison.Ordinal)), Is.Empty, "the top-level package holds no native code");
        }

        using (ZipArchive archive = ZipFile.OpenRead(platform))
        {
            string[] natives = [.. archive.Entries.Select(e => e.FullName).Where(n => n.EndsWith(".so", StringComparison.Ordinal) || n.EndsWith(".dll", StringComparison.OrdinalIgnoreCase) && n.Contains("torch", StringComparison.OrdinalIgnoreCase))];
            Assert.That(natives, Has.Some.EndsWith("libtorch_cpu.so"));
            Assert.That(natives, Has.Some.EndsWith("libLibTorchSharp.so"));
            Assert.That(natives, Has.None.EndsWith("torch_cpu.dll"), "no Windows LibTorch in the Linux package");
            Assert.That(natives, Has.None.EndsWith(".dylib"), "no macOS LibTorch in the Linux package");
        }

        Assert.That(new FileInfo(platform).Length, Is.LessThan(NuGetOrgPackageLimit), "the platform package fits nuget.org's limit");
    }

    [Test]
    public async Task Installed_tool_runs_LibTorch_and_matches_the_repository_build()
    {
        string toolPath = Path.Combine(_work, "tools");
        DotnetCli.Run(_work, "tool", "install", LocalPackageFeed.ToolId, "--version", _feed.Version,
            "--tool-path", toolPath, "--add-source", _feed.Folder);
        string tool = Path.Combine(toolPath, "modelsurgery");
        Assert.That(File.Exists(tool), $"{tool} was not installed");

        string config = CliFixtures.WriteTinyConfig(_work);
        string model = Path.Combine(_work, "model");
        Installed(tool, "synth", "--like", config, "--dtype", "f32", "--seed", "4", "--out", model);
        string[] generate = ["generate", "--model", model, "--prompt-ids", "1 5 9", "--max-new-tokens", "12", "--ids"];
        string installed = Installed(tool, generate);

        CliRun inRepository = await CliFixtures.RunOkAsync(generate);
        Assert.That(installed.Trim(), Is.EqualTo(inRepository.Output.Trim()), "the installed tool generates what the repository's CLI generates");
    }

    private string Installed(string tool, params string[] arguments)
    {
        (int exitCode, string output) = DotnetCli.ExecuteProgram(tool, _work, new Dictionary<string, string?>(), arguments);
        Assert.That(exitCode, Is.Zero, $"modelsurgery {string.Join(' ', arguments)} failed:\n{output}");
        return output;
    }
}
