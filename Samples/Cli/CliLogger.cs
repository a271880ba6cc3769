using System.Globalization;
using Microsoft.Extensions.Logging;

namespace ModelSurgery.Cli;

/// <summary>
/// Log entries as one line each, <c>HH:mm:ss info: category: message</c>, written through the <see cref="ConsoleUi"/> so
/// that on a terminal they appear above the live progress bars. No event ids: the source-generated ids are hashes that
/// mean nothing to a reader.
/// </summary>
internal sealed class CliLoggerProvider(ConsoleUi ui) : ILoggerProvider
{
    /// <inheritdoc />
    public ILogger CreateLogger(string categoryName) => new CliLogger(ui, categoryName);

    /// <inheritdoc />
    public void Dispose()
    {
    }

    /// <summary>The line a log entry becomes (an exception follows on the lines after it).</summary>
    public static string Format(DateTime time, LogLevel level, string category, string message, Exception? exception)
    {
        string line = string.Create(CultureInfo.InvariantCulture, $"{time:HH:mm:ss} {Level(level)}: {category}: {message.ReplaceLineEndings(" ")}");
        return exception is null ? line : line + Environment.NewLine + exception;
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

    private sealed class CliLogger(ConsoleUi ui, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel))
            {
                return;
            }

            string message = formatter(state, exception);
            if (string.IsNullOrEmpty(message) && exception is null)
            {
                return;
            }

            ui.WriteLine(Format(DateTime.Now, logLevel, category, message, exception));
        }
    }
}
