using System.Globalization;

namespace ModelSurgery.Tests.Support;

/// <summary>
/// The libraries packed the way they are published, once per test run, into a local folder feed: the NuGet consumer
/// and notebook tests share it. The version is one no package cache can hold yet, so every restore takes exactly these
/// packages; <see cref="RemoveIfPacked"/> (run after the last test) deletes the feed and those packages from the cache.
/// </summary>
internal static class LocalPackageFeed
{
    /// <summary>The umbrella package's project; packing it packs the three libraries too.</summary>
    public const string UmbrellaProject = "Training/Package/ModelSurgery.Package.csproj";

    /// <summary>The library packages under the umbrella package 'ModelSurgery'.</summary>
    public static readonly string[] LibraryIds = ["ModelSurgery.Inference", "ModelSurgery.Surgery", "ModelSurgery.Training"];

    /// <summary>The command-line tool's project.</summary>
    public const string ToolProject = "Samples/Cli/ModelSurgery.Cli.csproj";

    /// <summary>The tool's package id; its per-platform packages are <c>ModelSurgery.Cli.&lt;rid&gt;</c>.</summary>
    public const string ToolId = "ModelSurgery.Cli";

    /// <summary>The platform whose tool package the tests pack (the only one LibTorch and these tests run on here).</summary>
    public const string ToolRuntime = "linux-x64";

    private static readonly Lock Gate = new();
    private static PackedFeed? _packed;
    private static bool _toolPacked;

    /// <summary>Every package id in the feed: the umbrella and the libraries.</summary>
    public static IEnumerable<string> PackageIds => LibraryIds.Prepend("ModelSurgery");

    /// <summary>The feed, packed on first use (about a minute), then the same for every caller.</summary>
    public static PackedFeed Get()
    {
        lock (Gate)
        {
            return _packed ??= Pack();
        }
    }

    /// <summary>
    /// The feed with the command-line tool added (on first use): the top-level <see cref="ToolId"/> package and the
    /// <see cref="ToolRuntime"/> package it points to, same version, built beside the libraries so they are not built again.
    /// </summary>
    public static PackedFeed GetWithTool()
    {
        lock (Gate)
        {
            PackedFeed packed = _packed ??= Pack();
            if (!_toolPacked)
            {
                // Only this platform: packing the others would copy and compress their LibTorch for nothing.
                Pack(packed, ToolProject, $"-p:RuntimeIdentifiers={ToolRuntime}");
                _toolPacked = true;
            }

            return packed;
        }
    }

    /// <summary>Deletes the feed's folder and the packages of its version from the global packages folder, if it was packed.</summary>
    public static void RemoveIfPacked()
    {
        PackedFeed? packed;
        lock (Gate)
        {
            packed = _packed;
            _packed = null;
            _toolPacked = false;
        }

        if (packed is null)
        {
            return;
        }

        string globalPackages = GlobalPackagesFolder();
        foreach (string id in PackageIds.Concat([ToolId, $"{ToolId}.{ToolRuntime}"]))
        {
            string idFolder = Path.Combine(globalPackages, id.ToLowerInvariant());
            string extracted = Path.Combine(idFolder, packed.Version);
            if (Directory.Exists(extracted))
            {
                Directory.Delete(extracted, recursive: true);
            }

            if (Directory.Exists(idFolder) && !Directory.EnumerateFileSystemEntries(idFolder).Any())
            {
                Directory.Delete(idFolder);
            }
        }

        if (Directory.Exists(packed.WorkDirectory))
        {
            Directory.Delete(packed.WorkDirectory, recursive: true);
        }
    }

    private static PackedFeed Pack()
    {
        // Outside the repository so that no Directory.Build.* or repository NuGet settings apply to consumers of the feed.
        string work = Directory.CreateTempSubdirectory("modelsurgery-nuget-").FullName;
        string feed = Path.Combine(work, "feed");
        string version = "0.1.0-test." + DateTime.UtcNow.ToString("yyyyMMddHHmmssfff", CultureInfo.InvariantCulture);
        var packed = new PackedFeed(work, feed, version);
        Pack(packed, UmbrellaProject);
        return packed;
    }

    private static void Pack(PackedFeed feed, string project, params string[] properties)
    {
        string repository = DotnetCli.FindRepositoryRoot(project);
        DotnetCli.Run(repository, ["pack", Path.Combine(repository, project), "-c", "Release", "-o", feed.Folder,
            "--artifacts-path", Path.Combine(feed.WorkDirectory, "artifacts"), $"-p:Version={feed.Version}", "-nodeReuse:false", .. properties]);
    }

    private static string GlobalPackagesFolder()
    {
        const string prefix = "global-packages:";
        string line = DotnetCli.Run(Path.GetTempPath(), "nuget", "locals", "global-packages", "--list").Trim();
        Assert.That(line, Does.StartWith(prefix));
        return line[prefix.Length..].Trim();
    }
}

/// <summary>A packed local feed: its folder, the packages' version, and the scratch folder that holds both.</summary>
internal sealed record PackedFeed(string WorkDirectory, string Folder, string Version);
