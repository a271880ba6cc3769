using System.Diagnostics;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Benchmarks;

/// <summary>Synthetic checkpoints shared by the benchmarks, written once and reused.</summary>
internal static class Checkpoints
{
    public static async Task<string> EnsureSyntheticAsync(string preset, string dtype, string work, CancellationToken ct)
    {
        SafetensorsDType stored = dtype.ToUpperInvariant() switch
        {
            "F32" => SafetensorsDType.F32,
            "BF16" => SafetensorsDType.BF16,
            "F16" => SafetensorsDType.F16,
            _ => throw new ArgumentException($"--dtype {dtype}: use f32, bf16 or f16."),
        };
        string dir = Path.GetFullPath(Path.Combine(work, $"{preset}-{dtype.ToLowerInvariant()}"));
        if (!File.Exists(Path.Combine(dir, "config.json")))
        {
            Console.WriteLine($"synthesising {preset} as {stored} in {dir} ...");
            var watch = Stopwatch.StartNew();
            await SyntheticCheckpoint.WriteAsync(ModelPresets.Get(preset), dir, stored, 2L << 30, seed: 0, cancellationToken: ct);
            Console.WriteLine($"synthesised in {watch.Elapsed.TotalSeconds:F1} s");
        }

        return dir;
    }
}

/// <summary>Runs this benchmark program again in a fresh process, so per-process figures (peak RSS) start clean.</summary>
internal static class ChildProcess
{
    public static string RunSelf(IReadOnlyList<string> args) => Run(null, args);

    /// <summary>
    /// Runs <paramref name="program"/> (another build of this benchmark program: its executable or its .dll) with
    /// <paramref name="args"/>, or this program when null; returns its standard output.
    /// </summary>
    public static string Run(string? program, IReadOnlyList<string> args)
    {
        bool assembly = program is not null && program.EndsWith(".dll", StringComparison.OrdinalIgnoreCase);
        string host = program is null ? Environment.ProcessPath! : assembly ? "dotnet" : program;
        var info = new ProcessStartInfo(host) { RedirectStandardOutput = true, UseShellExecute = false };
        if (assembly)
        {
            info.ArgumentList.Add(program!);
        }
        else if (program is null && Path.GetFileNameWithoutExtension(host) == "dotnet")
        {
            info.ArgumentList.Add(typeof(ChildProcess).Assembly.Location);
        }

        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using Process process = Process.Start(info)!;
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"child benchmark process '{string.Join(' ', args)}' failed with exit code {process.ExitCode}.");
        }

        return output;
    }
}
