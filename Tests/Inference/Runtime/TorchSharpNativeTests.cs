using System.Reflection;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Tests.Checkpoints;
using ModelSurgery.Tests.Support;
using TorchSharp;

namespace ModelSurgery.Tests.Inference;

/// <summary>
/// The run-time native fix, in a console app outside the repository that references TorchSharp-cpu and the built
/// ModelSurgery.Inference assembly but not the build fix, so its output holds libLibTorchSharp.so exactly as shipped.
/// </summary>
[Category("Packaging")]
[NonParallelizable]
public sealed class TorchSharpNativeTests
{
    [Test]
    public void In_a_process_whose_build_output_is_already_fixed_it_does_nothing()
    {
        TorchSharpNativeOutcome outcome = TorchSharpNative.EnsureLoadable();
        Assert.That(outcome, Is.AnyOf(TorchSharpNativeOutcome.NotNeeded, TorchSharpNativeOutcome.AlreadyLoaded));
        using var ones = torch.ones(3);
        Assert.That(TorchSharpNative.IsLoaded() || !OperatingSystem.IsLinux(), Is.True);
        Assert.That(TorchSharpNative.EnsureLoadable(), Is.EqualTo(outcome), "idempotent");
    }

    [Test]
    public void A_console_app_without_the_build_fix_runs_torchsharp_after_EnsureLoadable()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.Ignore("The fix is for Linux hosts.");
        }

        using var directory = new TempDirectory();
        string app = Path.Combine(directory.Path, "app");
        string cache = Path.Combine(directory.Path, "native-cache");
        Directory.CreateDirectory(app);
        File.WriteAllText(Path.Combine(app, "NativeProbe.csproj"), ProbeProject(TestContext.CurrentContext.TestDirectory, TorchSharpVersion()));
        File.WriteAllText(Path.Combine(app, "Program.cs"), ProbeProgram);
        DotnetCli.Run(app, "build", "-c", "Release", "-o", Path.Combine(app, "out"), "-nodeReuse:false");
        string probe = Path.Combine(app, "out", "NativeProbe.dll");

        string shippedCopy = Path.Combine(app, "out", "runtimes", "linux-x64", "native", TorchSharpNative.LibraryFileName);
        bool hostNeedsFix = !ElfVersionRequirements.HostLibStdCxxProvides(ElfVersionRequirements.TorchSharpGlibcxxVersion);
        // Without the fix TorchSharp falls back to copying LibTorch out of the NuGet packages folder (half a gigabyte);
        // an empty packages folder makes it give up at once instead.
        string noPackages = Path.Combine(directory.Path, "no-packages");
        (int plainExit, string plain) = DotnetCli.Execute(app, new Dictionary<string, string?> { ["NUGET_PACKAGES"] = noPackages }, probe, "plain", cache);
        Assert.That(plainExit, Is.Zero, plain);
        string fixedRun = DotnetCli.Run(app, probe, "fix", cache);
        string again = DotnetCli.Run(app, probe, "fix", cache);
        TestContext.Out.WriteLine($"plain:\n{plain}\nfix:\n{fixedRun}\nagain:\n{again}");

        Assert.Multiple(() =>
        {
            Assert.That(fixedRun, Does.Contain("sum: 3"), fixedRun);
            Assert.That(again, Does.Contain("sum: 3"), again);
            if (hostNeedsFix)
            {
                // Without the fix this host cannot load the shipped library: the probe shows the fix is what makes it work.
                Assert.That(ElfVersionRequirements.RequiresStrongly(File.ReadAllBytes(shippedCopy), ElfVersionRequirements.TorchSharpGlibcxxVersion), Is.True,
                    "the probe's output holds the library as shipped");
                Assert.That(plain, Does.Contain("torch failed"), plain);
                Assert.That(fixedRun, Does.Contain("outcome: LoadedPatchedCopy"), fixedRun);
                Assert.That(again, Does.Contain("outcome: LoadedPatchedCopy"), again);
                string[] copies = Directory.GetFiles(cache, TorchSharpNative.LibraryFileName, SearchOption.AllDirectories);
                Assert.That(copies, Has.Length.EqualTo(1), "one content-addressed copy, reused by the second run");
                Assert.That(ElfVersionRequirements.RequiresStrongly(File.ReadAllBytes(copies[0]), ElfVersionRequirements.TorchSharpGlibcxxVersion), Is.False);
                Assert.That(fixedRun, Does.Contain("loaded from: " + copies[0]), fixedRun);
                Assert.That(fixedRun, Does.Contain("after: LoadedPatchedCopy"), "a second call in the same process reports the same and does nothing");
            }
            else
            {
                Assert.That(plain, Does.Contain("sum: 3"), plain);
                Assert.That(fixedRun, Does.Contain("outcome: NotNeeded"), fixedRun);
                Assert.That(plain, Does.Contain("after: AlreadyLoaded"), "once TorchSharp runs, a call changes nothing");
            }
        });
    }

    // Prints what EnsureLoadable did ("fix"), whether TorchSharp then runs, and which libLibTorchSharp.so is mapped.
    private const string ProbeProgram = """
        using ModelSurgery.Inference.Runtime;
        using TorchSharp;

        string cache = args[1];
        if (args[0] == "fix")
        {
            Console.WriteLine($"outcome: {TorchSharpNative.EnsureLoadable(cache)}");
        }

        try
        {
            using var ones = torch.ones(3);
            Console.WriteLine($"sum: {ones.sum().item<float>()}");
            Console.WriteLine($"after: {TorchSharpNative.EnsureLoadable(cache)}");
        }
        catch (Exception ex) when (ex is TypeInitializationException or DllNotFoundException or NotSupportedException)
        {
            Console.WriteLine($"torch failed: {ex.GetType().Name}");
        }

        foreach (string line in File.ReadLines("/proc/self/maps").Where(l => l.EndsWith("/libLibTorchSharp.so")).Select(l => l[l.IndexOf('/')..]).Distinct())
        {
            Console.WriteLine($"loaded from: {line}");
        }
        """;

    // The built ModelSurgery.Inference (and its logging abstractions) from this test's output; TorchSharp-cpu from NuGet.
    private static string ProbeProject(string testOutput, string torchSharpVersion) => $"""
        <Project Sdk="Microsoft.NET.Sdk">
          <PropertyGroup>
            <OutputType>Exe</OutputType>
            <TargetFramework>net10.0</TargetFramework>
            <Nullable>enable</Nullable>
            <ImplicitUsings>enable</ImplicitUsings>
          </PropertyGroup>
          <ItemGroup>
            <PackageReference Include="TorchSharp-cpu" Version="{torchSharpVersion}" />
            <Reference Include="ModelSurgery.Inference" HintPath="{Path.Combine(testOutput, "ModelSurgery.Inference.dll")}" />
            <Reference Include="Microsoft.Extensions.Logging.Abstractions" HintPath="{Path.Combine(testOutput, "Microsoft.Extensions.Logging.Abstractions.dll")}" />
          </ItemGroup>
        </Project>
        """;

    private static string TorchSharpVersion() =>
        typeof(torch).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion.Split('+')[0];
}
