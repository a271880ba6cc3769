using System.CommandLine;
using Microsoft.Extensions.Logging;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Cli;

/// <summary>Exit codes of the tool.</summary>
public static class ExitCodes
{
    /// <summary>Success.</summary>
    public const int Success = 0;

    /// <summary>The command ran and failed; a one-line message was printed.</summary>
    public const int Failure = 1;

    /// <summary>The command line was wrong.</summary>
    public const int Usage = 2;
}

/// <summary>A command-line mistake found after parsing (a bad combination or value); exits with code 2.</summary>
public sealed class UsageException : Exception
{
    /// <summary>Creates the exception.</summary>
    public UsageException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public UsageException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public UsageException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>What every command shares: output writers, logging and the global options.</summary>
public sealed class CliContext(TextWriter output, TextWriter error)
{
    /// <summary><c>--verbose</c>: stack traces on failure and debug logging.</summary>
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "Show debug logs and full stack traces.", Recursive = true };

    /// <summary><c>--skip-memory-check</c>: load or build even when the estimate exceeds the available memory.</summary>
    public static readonly Option<bool> SkipMemoryCheck = new("--skip-memory-check") { Description = "Proceed even when a model's estimated memory exceeds what is available (it may then be killed for lack of memory).", Recursive = true };

    /// <summary><c>--max-memory</c>: the memory a run may use (on a GPU the only figure checked, as GPU memory cannot be queried).</summary>
    public static readonly Option<string?> MaxMemory = new("--max-memory") { Description = "Memory the run may use, e.g. 24GB: the memory checks compare their estimates with it (on the CPU with the smaller of it and the machine's; on a GPU only with it).", Recursive = true };

    /// <summary>Standard output (results).</summary>
    public TextWriter Output { get; } = output;

    /// <summary>Standard error (logs, progress, errors).</summary>
    public TextWriter Error { get; } = error;

    /// <summary>Standard error as a console: live progress bars with logs above them on a terminal, plain lines otherwise.</summary>
    internal ConsoleUi Ui { get; } = ConsoleUi.For(error);

    /// <summary>Creates a logger factory writing one line per entry to standard error, above any live progress bars.</summary>
    public ILoggerFactory CreateLoggerFactory(ParseResult parsed)
    {
        ArgumentNullException.ThrowIfNull(parsed);
        LogLevel level = parsed.GetValue(Verbose) ? LogLevel.Debug : LogLevel.Information;
        return LoggerFactory.Create(builder => builder
            .SetMinimumLevel(level)
            .AddProvider(new CliLoggerProvider(Ui))
            .AddFilter("Microsoft", LogLevel.Warning));
    }

    /// <summary>Starts a progress bar on standard error counting <paramref name="unit"/>; dispose it when the work ends.</summary>
    internal ProgressBar CreateProgressBar(string label, ProgressUnit unit) => Ui.StartBar(label, unit);
}
