using System.Diagnostics;
using System.Text;

namespace ModelSurgery.Tests.Support;

/// <summary>Runs the dotnet CLI from tests (nested builds, packs, file-based apps) and finds the repository.</summary>
internal static class DotnetCli
{
    /// <summary>Runs <c>dotnet</c> with <paramref name="arguments"/> and returns its output; fails the test with that output when it exits non-zero.</summary>
    public static string Run(string workingDirectory, params string[] arguments)
    {
        (int exitCode, string text) = Execute(workingDirectory, new Dictionary<string, string?>(), arguments);
        Assert.That(exitCode, Is.Zero, $"dotnet {string.Join(' ', arguments)} failed in {workingDirectory}:\n{text}");
        return text;
    }

    /// <summary>
    /// Runs <c>dotnet</c> with <paramref name="arguments"/> and the extra <paramref name="environment"/> variables
    /// (a null value removes the variable), and returns its exit code and output (standard output and error,
    /// interleaved) without judging them.
    /// </summary>
    public static (int ExitCode, string Output) Execute(string workingDirectory, IReadOnlyDictionary<string, string?> environment, params string[] arguments) =>
        ExecuteProgram(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet", workingDirectory, environment, arguments);

    /// <summary>
    /// Runs <paramref name="program"/> (an installed tool, say) like <see cref="Execute"/> runs <c>dotnet</c>: same
    /// environment rules, exit code and interleaved output returned without judging them.
    /// </summary>
    public static (int ExitCode, string Output) ExecuteProgram(string program, string workingDirectory, IReadOnlyDictionary<string, string?> environment, params string[] arguments)
    {
        (int exitCode, _, string output) = ExecuteProgramWithId(program, workingDirectory, environment, arguments);
        return (exitCode, output);
    }

    /// <summary><see cref="ExecuteProgram"/> that also returns the process id the program ran under.</summary>
    public static (int ExitCode, int ProcessId, string Output) ExecuteProgramWithId(string program, string workingDirectory, IReadOnlyDictionary<string, string?> environment, params string[] arguments)
    {
        var start = new ProcessStartInfo(program)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        // The test host inherits MSBuild settings of the outer build; a nested build must pick its own.
        foreach (string name in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            start.Environment.Remove(name);
        }

        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        foreach ((string name, string? value) in environment)
        {
            if (value is null)
            {
                start.Environment.Remove(name);
            }
            else
            {
                start.Environment[name] = value;
            }
        }

        using Process process = Process.Start(start) ?? throw new InvalidOperationException("dotnet did not start.");
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (output) { output.AppendLine(e.Data); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (output) { output.AppendLine(e.Data); } } };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        process.WaitForExit();

        lock (output)
        {
            return (process.ExitCode, process.Id, output.ToString());
        }
    }

    /// <summary>The nearest folder above the test output that holds <paramref name="relativePath"/> (the repository root).</summary>
    public static string FindRepositoryRoot(string relativePath)
    {
        for (var folder = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, relativePath)))
            {
                return folder.FullName;
            }
        }

        throw new DirectoryNotFoundException($"No folder above {TestContext.CurrentContext.TestDirectory} holds {relativePath}.");
    }
}
