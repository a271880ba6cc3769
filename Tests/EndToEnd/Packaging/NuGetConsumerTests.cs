using System.Globalization;
using System.Reflection;
using System.Xml.Linq;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using TorchSharp;
using ModelSurgery.Tests.Support;

namespace ModelSurgery.Tests.Packaging;

/// <summary>
/// Packs the libraries the way they are published and uses them from a console app outside the repository that
/// references only the umbrella package plus a LibTorch backend: the packages restore, the native fix under
/// buildTransitive/ reaches the consumer's output, and TorchSharp runs there.
/// </summary>
[Category("Packaging")]
[NonParallelizable]
public sealed class NuGetConsumerTests
{
    private const string LocalFeedKey = "modelsurgery-local";

    // The tiny model the consumer builds, saves, reloads and runs; the test computes the same logits in-process.
    private const long Seed = 7;
    private static readonly long[] InputIds = [1, 5, 9, 2, 33, 17];

    private string _workDirectory = "";
    private string _feed = "";
    private string _version = "";

    [OneTimeSetUp]
    public void PackOnce()
    {
        // Packed once per test run and shared with the notebook tests; removed after the last test (TestRunCleanup).
        PackedFeed packed = LocalPackageFeed.Get();
        _feed = packed.Folder;
        _version = packed.Version;
        _workDirectory = Directory.CreateTempSubdirectory("modelsurgery-consumer-").FullName;
    }

    [OneTimeTearDown]
    public void RemoveConsumer()
    {
        if (Directory.Exists(_workDirectory))
        {
            Directory.Delete(_workDirectory, recursive: true);
        }
    }

    [Test]
    public void Umbrella_pack_produces_every_library_package_with_readme_docs_native_fix_and_symbols()
    {
        foreach (string id in LocalPackageFeed.PackageIds)
        {
            Assert.That(File.Exists(Path.Combine(_feed, $"{id}.{_version}.nupkg")), $"{id}.{_version}.nupkg is missing");
        }

        string inference = Path.Combine(_feed, $"ModelSurgery.Inference.{_version}.nupkg");
        using var archive = System.IO.Compression.ZipFile.OpenRead(inference);
        string[] entries = [.. archive.Entries.Select(e => e.FullName)];
        Assert.That(entries, Does.Contain("README.md"));
        Assert.That(entries, Does.Contain("lib/net10.0/ModelSurgery.Inference.xml"), "XML docs");
        Assert.That(entries, Does.Contain("buildTransitive/ModelSurgery.Inference.targets"));
        Assert.That(entries, Does.Contain("buildTransitive/WeakenGlibcxxRequirement.cs"));
        foreach (string library in LocalPackageFeed.LibraryIds)
        {
            Assert.That(File.Exists(Path.Combine(_feed, $"{library}.{_version}.snupkg")), $"{library}.{_version}.snupkg is missing");
        }

        // Metadata a package page shows: licence, project and repository links, and a README whose links work there.
        foreach (string id in LocalPackageFeed.PackageIds)
        {
            using var package = System.IO.Compression.ZipFile.OpenRead(Path.Combine(_feed, $"{id}.{_version}.nupkg"));
            System.IO.Compression.ZipArchiveEntry nuspec = package.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal));
            System.Xml.Linq.XDocument document;
            using (Stream stream = nuspec.Open())
            {
                document = System.Xml.Linq.XDocument.Load(stream);
            }

            System.Xml.Linq.XElement metadata = document.Root!.Elements().Single(e => e.Name.LocalName == "metadata");
            string? Field(string name) => metadata.Elements().SingleOrDefault(e => e.Name.LocalName == name)?.Value;
            System.Xml.Linq.XElement license = metadata.Elements().Single(e => e.Name.LocalName == "license");
            Assert.That((string?)license.Attribute("type"), Is.EqualTo("expression"), id);
            Assert.That(license.Value, Is.EqualTo("MIT"), id);
            Assert.That(Field("readme"), Is.EqualTo("README.md"), id);
            Assert.That(Field("description"), Is.Not.Empty, id);
            Assert.That(Field("authors"), Is.Not.Empty, id);
            Assert.That(Field("tags"), Does.Contain("distillation"), id);
            Assert.That(Uri.TryCreate(Field("projectUrl"), UriKind.Absolute, out Uri? project) && project.Scheme == "https", Is.True, $"{id}: projectUrl");
            System.Xml.Linq.XElement repository = metadata.Elements().Single(e => e.Name.LocalName == "repository");
            Assert.That((string?)repository.Attribute("type"), Is.EqualTo("git"), id);
            Assert.That((string?)repository.Attribute("url"), Is.EqualTo(Field("projectUrl")), id);

            using var readme = new StreamReader(package.GetEntry("README.md")!.Open());
            string text = readme.ReadToEnd();
            string[] relative = [.. System.Text.RegularExpressions.Regex.Matches(text, @"\]\((?!https?://|mailto:)[^)]*\)").Select(m => m.Value)];
            Assert.That(relative, Is.Empty, $"{id}: README links must be absolute on a package page");
            Assert.That(text, Does.Contain($"]({Field("projectUrl")}/blob/main/ARCHITECTURE.md)"), id);
        }
    }

    [Test]
    public async Task Console_app_referencing_only_the_umbrella_package_runs_torchsharp_and_reloads_a_saved_model()
    {
        string app = Path.Combine(_workDirectory, "consumer");
        Directory.CreateDirectory(app);
        WriteNuGetConfig(app);
        await File.WriteAllTextAsync(Path.Combine(app, "Consumer.csproj"), ConsumerProject(_version, TorchSharpVersion()));
        await File.WriteAllTextAsync(Path.Combine(app, "Program.cs"), ConsumerProgram);

        string output = DotnetCli.Run(app, "run", "--project", Path.Combine(app, "Consumer.csproj"));
        await TestContext.Out.WriteLineAsync(output);

        // The native fix reaches the consumer through the package graph (ModelSurgery -> ... -> ModelSurgery.Inference).
        string importedTargets = await File.ReadAllTextAsync(Path.Combine(app, "obj", "Consumer.csproj.nuget.g.targets"));
        Assert.That(importedTargets, Does.Contain("buildTransitive/ModelSurgery.Inference.targets").Or.Contain("buildTransitive\\ModelSurgery.Inference.targets"));
        Assert.That(output, Does.Contain($"ModelSurgery.Inference {_version}"), output);
        Assert.That(output, Does.Contain($"ModelSurgery.Surgery {_version}"), output);
        Assert.That(output, Does.Contain($"ModelSurgery.Training {_version}"), output);
        Assert.That(output, Does.Contain("reload max abs diff: 0"), output);
        Assert.That(output, Does.Contain($"logits checksum: {ExpectedChecksum()}"), output);
    }

    // The same tiny model the consumer builds: its logits sum must match across the process boundary.
    private static string ExpectedChecksum()
    {
        using var model = new LlamaForCausalLM(ConsumerConfig());
        model.InitializeWeights(Seed);
        model.eval();
        using var noGrad = torch.no_grad();
        using var ids = torch.tensor(InputIds, [1, InputIds.Length]); // [1, T]
        using var logits = model.forward(ids); // [1, T, V]
        using var sum = logits.to_type(torch.ScalarType.Float64).sum();
        return sum.item<double>().ToString("F6", CultureInfo.InvariantCulture);
    }

    private static LlamaConfig ConsumerConfig() => new()
    {
        ModelType = "llama",
        VocabSize = 64,
        HiddenSize = 32,
        IntermediateSize = 64,
        NumHiddenLayers = 2,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        MaxPositionEmbeddings = 128,
        RmsNormEps = 1e-5,
        RopeTheta = 10000.0,
    };

    // Kept in step with ConsumerConfig, Seed and InputIds above.
    private const string ConsumerProgram = """
        using System.Globalization;
        using System.Reflection;
        using ModelSurgery.Inference.Configuration;
        using ModelSurgery.Inference.Modeling;
        using TorchSharp;

        foreach (string name in new[] { "ModelSurgery.Inference", "ModelSurgery.Surgery", "ModelSurgery.Training" })
        {
            Assembly assembly = Assembly.Load(name);
            string version = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion.Split('+')[0];
            Console.WriteLine($"{name} {version}");
        }

        var config = new LlamaConfig
        {
            ModelType = "llama", VocabSize = 64, HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2,
            NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 128, RmsNormEps = 1e-5, RopeTheta = 10000.0,
        };
        string folder = Path.Combine(AppContext.BaseDirectory, "tiny-model");
        using var model = new LlamaForCausalLM(config);
        model.InitializeWeights(7);
        model.eval();
        await ModelCheckpoint.SaveAsync(model, folder);
        using var reloaded = ModelCheckpoint.Load(folder, new ModelLoadOptions { Device = "cpu" });
        reloaded.eval();

        using var noGrad = torch.no_grad();
        using var ids = torch.tensor(new long[] { 1, 5, 9, 2, 33, 17 }, new long[] { 1, 6 });
        using var logits = model.forward(ids);
        using var reloadedLogits = reloaded.forward(ids);
        double diff = (logits - reloadedLogits).abs().max().item<float>();
        double checksum = logits.to_type(torch.ScalarType.Float64).sum().item<double>();
        Console.WriteLine($"reload max abs diff: {diff.ToString(CultureInfo.InvariantCulture)}");
        Console.WriteLine($"logits checksum: {checksum.ToString("F6", CultureInfo.InvariantCulture)}");
        """;

    private static string ConsumerProject(string version, string torchSharpVersion) => $"""
        <Project Sdk="Microsoft.NET.Sdk">
          <PropertyGroup>
            <OutputType>Exe</OutputType>
            <TargetFramework>net10.0</TargetFramework>
            <Nullable>enable</Nullable>
            <ImplicitUsings>enable</ImplicitUsings>
          </PropertyGroup>
          <ItemGroup>
            <PackageReference Include="ModelSurgery" Version="[{version}]" />
            <PackageReference Include="TorchSharp-cpu" Version="{torchSharpVersion}" />
          </ItemGroup>
        </Project>
        """;

    // The version of TorchSharp this test runs on, so the consumer uses the same backend as the repository.
    private static string TorchSharpVersion()
    {
        string informational = typeof(torch).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
            ?? throw new InvalidOperationException("TorchSharp carries no informational version.");
        return informational.Split('+')[0];
    }

    // The local feed first, then the machine's own sources under their own names (so stored credentials still
    // apply); ModelSurgery packages come only from the local feed, everything else only from the machine's sources.
    private void WriteNuGetConfig(string folder)
    {
        List<(string Key, string Url)> sources = MachineSources(folder);
        var mapping = new XElement("packageSourceMapping",
            new XElement("packageSource", new XAttribute("key", LocalFeedKey),
                new XElement("package", new XAttribute("pattern", "ModelSurgery")),
                new XElement("package", new XAttribute("pattern", "ModelSurgery.*"))));
        foreach ((string key, _) in sources)
        {
            mapping.Add(new XElement("packageSource", new XAttribute("key", key),
                new XElement("package", new XAttribute("pattern", "*"))));
        }

        var config = new XElement("configuration",
            new XElement("packageSources",
                new XElement("clear"),
                new XElement("add", new XAttribute("key", LocalFeedKey), new XAttribute("value", _feed)),
                sources.Select(s => new XElement("add", new XAttribute("key", s.Key), new XAttribute("value", s.Url)))),
            mapping);
        new XDocument(config).Save(Path.Combine(folder, "nuget.config"));
    }

    // Parses 'dotnet nuget list source' run outside the repository: "  1.  name [Enabled]" then the URL on the next line.
    private static List<(string Key, string Url)> MachineSources(string folder)
    {
        string[] lines = DotnetCli.Run(folder, "nuget", "list", "source", "--format", "Detailed")
            .Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var sources = new List<(string Key, string Url)>();
        for (int i = 0; i + 1 < lines.Length; i++)
        {
            const string enabled = " [Enabled]";
            int dot = lines[i].IndexOf(". ", StringComparison.Ordinal);
            if (dot > 0 && lines[i][..dot].All(char.IsAsciiDigit) && lines[i].EndsWith(enabled, StringComparison.Ordinal))
            {
                sources.Add((lines[i][(dot + 1)..^enabled.Length].Trim(), lines[i + 1]));
            }
        }

        Assert.That(sources, Is.Not.Empty, "dotnet nuget list source reported no enabled package source");
        return sources;
    }
}
