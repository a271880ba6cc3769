using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;

namespace ModelSurgery.Inference.Runtime;

/// <summary>What <see cref="TorchSharpNative.EnsureLoadable"/> did.</summary>
public enum TorchSharpNativeOutcome
{
    /// <summary>Nothing was needed: not Linux, the host's libstdc++ has the version, or the shipped library is already patched.</summary>
    NotNeeded,

    /// <summary>TorchSharp's native library was already loaded in this process; nothing changed.</summary>
    AlreadyLoaded,

    /// <summary>A patched private copy of <c>libLibTorchSharp.so</c> was loaded; TorchSharp binds to it from now on.</summary>
    LoadedPatchedCopy,
}

/// <summary>
/// The run-time form of the native fix that the build applies to its output (see <see cref="ElfVersionRequirements"/>):
/// for hosts that load TorchSharp's native library straight from the NuGet cache, where no build step runs, such as
/// Polyglot Notebooks (<c>#r "nuget: TorchSharp-cpu"</c>), F# Interactive or scripts.
/// </summary>
/// <remarks>
/// <para>
/// On a Linux host whose libstdc++ lacks <see cref="ElfVersionRequirements.TorchSharpGlibcxxVersion"/> (Debian 12,
/// Ubuntu 22.04), <see cref="EnsureLoadable"/> copies TorchSharp's <c>libLibTorchSharp.so</c> into a private cache
/// folder, marks that one version requirement weak in the copy, loads LibTorch's own libraries the way TorchSharp
/// finds them, and then loads the copy. The library's <c>DT_SONAME</c> is <c>libLibTorchSharp.so</c>, so every later
/// load of it by name, TorchSharp's included, binds to the copy already in the process.
/// </para>
/// <para>
/// Files NuGet restored are only read, never changed. Call it before the first TorchSharp call (first thing in a
/// notebook, after the package references); it is idempotent and cheap once done.
/// </para>
/// </remarks>
public static partial class TorchSharpNative
{
    /// <summary>The file name of TorchSharp's native library on Linux.</summary>
    public const string LibraryFileName = "libLibTorchSharp.so";

    private const string NativeRid = "linux-x64";
    private static readonly Lock Gate = new();
    private static TorchSharpNativeOutcome? _done;

    /// <summary>
    /// Makes TorchSharp's native library loadable on this host; a no-op where it already is (see the remarks of
    /// <see cref="TorchSharpNative"/>).
    /// </summary>
    /// <param name="cacheDirectory">Where the patched copy is kept (a subfolder per shipped library); default
    /// <c>ModelSurgery/native</c> under the user's local application data folder.</param>
    /// <param name="logger">Optional; receives what was done and where.</param>
    /// <returns>What was done.</returns>
    /// <exception cref="FileNotFoundException">The patch is needed but TorchSharp's native library is nowhere to be found (no LibTorch backend package is referenced).</exception>
    /// <exception cref="DllNotFoundException">LibTorch itself, or the patched copy, could not be loaded; the message says which and why.</exception>
    public static TorchSharpNativeOutcome EnsureLoadable(string? cacheDirectory = null, ILogger? logger = null)
    {
        logger ??= NullLogger.Instance;
        lock (Gate)
        {
            if (_done is { } done)
            {
                return done;
            }

            TorchSharpNativeOutcome outcome = Apply(cacheDirectory, logger);
            _done = outcome;
            return outcome;
        }
    }

    /// <summary>Whether TorchSharp's native library is mapped into this process (Linux: <c>/proc/self/maps</c>).</summary>
    /// <returns>True once a <c>libLibTorchSharp.so</c> has been loaded.</returns>
    public static bool IsLoaded()
    {
        const string maps = "/proc/self/maps";
        return File.Exists(maps) && File.ReadLines(maps).Any(line => line.EndsWith("/" + LibraryFileName, StringComparison.Ordinal));
    }

    private static TorchSharpNativeOutcome Apply(string? cacheDirectory, ILogger logger)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return TorchSharpNativeOutcome.NotNeeded;
        }

        if (IsLoaded())
        {
            return TorchSharpNativeOutcome.AlreadyLoaded;
        }

        const string version = ElfVersionRequirements.TorchSharpGlibcxxVersion;
        if (ElfVersionRequirements.HostLibStdCxxProvides(version))
        {
            LogHostProvides(logger, version);
            return TorchSharpNativeOutcome.NotNeeded;
        }

        Assembly torchSharp = typeof(torch).Assembly;
        string shipped = FindShippedLibrary(torchSharp);
        byte[] image = File.ReadAllBytes(shipped);
        if (!ElfVersionRequirements.RequiresStrongly(image, version))
        {
            LogAlreadyPatched(logger, shipped, version);
            return TorchSharpNativeOutcome.NotNeeded;
        }

        LoadLibTorch(torchSharp);
        string copy = WritePatchedCopy(image, shipped, cacheDirectory, version);
        if (!NativeLibrary.TryLoad(copy, out _))
        {
            // Load again for the loader's own message (a missing dependency, another missing version).
            try
            {
                NativeLibrary.Load(copy);
            }
            catch (DllNotFoundException ex)
            {
                throw new DllNotFoundException($"The patched copy {copy} of {shipped} could not be loaded: {ex.Message}", ex);
            }
        }

        LogLoadedCopy(logger, copy, shipped, version);
        return TorchSharpNativeOutcome.LoadedPatchedCopy;
    }

    // LibTorch's libraries, found the way TorchSharp finds them (application output, or the package folders a notebook
    // kernel resolves), so that the copy's DT_NEEDED entries bind to them by soname.
    private static void LoadLibTorch(Assembly torchSharp)
    {
        foreach (string name in new[] { "torch_cpu", "torch" })
        {
            if (!NativeLibrary.TryLoad(name, torchSharp, null, out _))
            {
                throw new DllNotFoundException(
                    $"LibTorch's lib{name}.so could not be loaded relative to {torchSharp.Location}: reference a LibTorch backend package " +
                    "(TorchSharp-cpu, or TorchSharp-cuda-linux) next to ModelSurgery.");
            }
        }
    }

    // Content-addressed, so two TorchSharp versions never share a copy; written through a temporary file and a rename.
    private static string WritePatchedCopy(byte[] image, string shipped, string? cacheDirectory, string version)
    {
        string root = cacheDirectory ?? DefaultCacheDirectory();
        string folder = Path.Combine(root, Convert.ToHexStringLower(SHA256.HashData(image))[..16]);
        string copy = Path.Combine(folder, LibraryFileName);
        if (ElfVersionRequirements.MarkWeak(image, version) != WeakenOutcome.MarkedWeak)
        {
            throw new InvalidOperationException($"{shipped}: {version} was expected to be a strong requirement.");
        }

        if (File.Exists(copy) && File.ReadAllBytes(copy).AsSpan().SequenceEqual(image))
        {
            return copy;
        }

        Directory.CreateDirectory(folder);
        string temporary = Path.Combine(folder, $"{LibraryFileName}.{Environment.ProcessId}.tmp");
        File.WriteAllBytes(temporary, image);
        File.Move(temporary, copy, overwrite: true);
        return copy;
    }

    private static string DefaultCacheDirectory()
    {
        string local = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.DoNotVerify);
        return Path.Combine(string.IsNullOrEmpty(local) ? Path.GetTempPath() : local, "ModelSurgery", "native");
    }

    // Application output first (next to TorchSharp.dll, or the restored runtimes/ layout), then the NuGet layout
    // <packages>/torchsharp/<version>/lib/<tfm>/TorchSharp.dll -> <packages>/torchsharp/<version>/runtimes/<rid>/native,
    // then the global packages folder.
    private static string FindShippedLibrary(Assembly torchSharp)
    {
        var folders = new List<string>();
        string? torchFolder = string.IsNullOrEmpty(torchSharp.Location) ? null : Path.GetDirectoryName(torchSharp.Location);
        if (torchFolder is not null)
        {
            folders.Add(torchFolder);
        }

        folders.Add(AppContext.BaseDirectory);
        folders.Add(Path.Combine(AppContext.BaseDirectory, "runtimes", NativeRid, "native"));
        if (torchFolder is not null)
        {
            folders.Add(Path.GetFullPath(Path.Combine(torchFolder, "..", "..", "runtimes", NativeRid, "native")));
        }

        string? version = torchSharp.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0];
        if (version is not null)
        {
            string packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } configured
                ? configured
                : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
            folders.Add(Path.Combine(packages, "torchsharp", version, "runtimes", NativeRid, "native"));
        }

        foreach (string folder in folders)
        {
            string candidate = Path.Combine(folder, LibraryFileName);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException(
            $"{LibraryFileName} was not found in any of: {string.Join(", ", folders.Distinct())}. Reference a LibTorch backend package " +
            "(TorchSharp-cpu, or TorchSharp-cuda-linux) next to ModelSurgery.", LibraryFileName);
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "The host libstdc++ provides {Version}; TorchSharp loads as shipped.")]
    private static partial void LogHostProvides(ILogger logger, string version);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Library} already requires {Version} weakly; TorchSharp loads as it is.")]
    private static partial void LogAlreadyPatched(ILogger logger, string library, string version);

    [LoggerMessage(Level = LogLevel.Information, Message = "Loaded {Copy}: a copy of {Library} with {Version} marked weak.")]
    private static partial void LogLoadedCopy(ILogger logger, string copy, string library, string version);
}
