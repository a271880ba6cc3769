using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Console;

namespace ModelSurgery.Cli;

/// <summary>
/// One line per log entry, <c>HH:mm:ss info: category: message</c>: no event ids (the source-generated ids are hashes
/// that mean nothing to a reader), and on a terminal the line first clears a progress line being drawn, so a log entry
/// stands above the bar instead of running into it (the bar redraws on its next report).
/// </summary>
internal sealed class ConsoleLogFormatter : ConsoleFormatter
{
    /// <summary>The formatter's name in the console logger's options.</summary>
    public const string FormatterName = "modelsurgery";

    private readonly bool _clearProgressLine = !Console.IsErrorRedirected;

    public ConsoleLogFormatter()
        : base(FormatterName)
    {
    }

    /// <inheritdoc />
    public override void Write<TState>(in LogEntry<TState> logEntry, IExternalScopeProvider? scopeProvider, TextWriter textWriter)
    {
        string message = logEntry.Formatter(logEntry.State, logEntry.Exception);
        if (string.IsNullOrEmpty(message) && logEntry.Exception is null)
        {
            return;
        }

        if (_clearProgressLine)
        {
            textWriter.Write("\r\u001b[K");
        }

        textWriter.Write(DateTime.Now.ToString("HH:mm:ss ", CultureInfo.InvariantCulture));
        textWriter.Write(Level(logEntry.LogLevel));
        textWriter.Write(": ");
        textWriter.Write(logEntry.Category);
        textWriter.Write(": ");
        textWriter.WriteLine(message.ReplaceLineEndings(" "));
        if (logEntry.Exception is not null)
        {
            textWriter.WriteLine(logEntry.Exception.ToString());
        }
    }

    private static string Level(LogLevel level) => level switch
    {
        LogLevel.Trace => "trce",
        LogLevel.Debug => "dbug",
        LogLevel.Information => "info",
        LogLevel.Warning => "warn",
        LogLevel.Error => "fail",
        LogLevel.Critical => "crit",
        _ => level.ToString().ToLowerInvariant(),
    };
}
