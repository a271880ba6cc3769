using ModelSurgery.Inference.Reporting;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace ModelSurgery.Cli;

/// <summary>
/// Standard error as the tool shows it: on a terminal, live Spectre.Console progress bars with log lines printed above
/// them (a log line goes through the same console, which draws it above the bars and redraws them below); when
/// redirected (pipes, CI, tests), plain lines: each bar's first report, one line at most every
/// <see cref="PlainInterval"/>, and its final state.
/// </summary>
internal sealed class ConsoleUi
{
    /// <summary>How often a redirected bar prints a line while it runs.</summary>
    public static readonly TimeSpan DefaultPlainInterval = TimeSpan.FromSeconds(5);

    private readonly TextWriter _plain;
    private readonly IAnsiConsole? _live;
    private readonly Lock _gate = new();
    private readonly Dictionary<ProgressTask, ProgressBar> _liveBars = [];
    private ProgressContext? _context;
    private TaskCompletionSource? _stop;
    private Task? _session;
    private int _openBars;

    /// <summary>Creates the console: live bars on <paramref name="live"/> when given, plain lines on <paramref name="plain"/> otherwise.</summary>
    public ConsoleUi(TextWriter plain, IAnsiConsole? live = null, TimeSpan? plainInterval = null, TimeProvider? time = null)
    {
        _plain = plain;
        _live = live;
        PlainInterval = plainInterval ?? DefaultPlainInterval;
        Time = time ?? TimeProvider.System;
    }

    /// <summary>How often a redirected bar prints a line while it runs.</summary>
    public TimeSpan PlainInterval { get; }

    /// <summary>The clock for elapsed times and the plain-line rate.</summary>
    public TimeProvider Time { get; }

    /// <summary>True when bars are drawn live (standard error is a terminal).</summary>
    public bool IsLive => _live is not null;

    /// <summary>
    /// The console for <paramref name="error"/>: live when it is the process's standard error and that is an interactive
    /// terminal that understands ANSI; plain lines otherwise.
    /// </summary>
    public static ConsoleUi For(TextWriter error)
    {
        if (ReferenceEquals(error, Console.Error) && !Console.IsErrorRedirected)
        {
            IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            if (console.Profile.Capabilities is { Interactive: true, Ansi: true })
            {
                return new ConsoleUi(error, console);
            }
        }

        return new ConsoleUi(error);
    }

    /// <summary>Writes one whole line (a log entry); on a terminal it appears above the live bars.</summary>
    public void WriteLine(string line)
    {
        if (_live is not null)
        {
            // One write holding the line and its end: the live display positions the cursor, prints it, then redraws the bars below.
            _live.Write(new Text(line + "\n"));
            return;
        }

        lock (_gate)
        {
            _plain.WriteLine(line);
        }
    }

    /// <summary>Starts a bar labelled <paramref name="label"/>, counting <paramref name="unit"/> until a report names its own; dispose it when the work ends.</summary>
    public ProgressBar StartBar(string label, ProgressUnit unit)
    {
        if (_live is null)
        {
            return new ProgressBar(this, label, unit, task: null);
        }

        lock (_gate)
        {
            ProgressContext context = _context ??= StartSession(_live);
            _openBars++;
            ProgressTask task = context.AddTask(Markup.Escape(label), autoStart: true, maxValue: 1);
            task.IsIndeterminate = true;
            var bar = new ProgressBar(this, label, unit, task);
            _liveBars[task] = bar;
            return bar;
        }
    }

    /// <summary>Draws the live bars now instead of at the next refresh (nothing when none are live).</summary>
    public void Refresh()
    {
        ProgressContext? context;
        lock (_gate)
        {
            context = _context;
        }

        context?.Refresh();
    }

    /// <summary>Writes a redirected bar's line.</summary>
    internal void WritePlain(string line)
    {
        lock (_gate)
        {
            _plain.WriteLine(line);
        }
    }

    /// <summary>A live bar ended: the display stops with the last open bar, leaving the bars' final state on screen.</summary>
    internal void EndBar()
    {
        Task? session = null;
        lock (_gate)
        {
            if (--_openBars == 0 && _stop is not null)
            {
                _stop.TrySetResult();
                session = _session;
                _context = null;
                _stop = null;
                _session = null;
            }
        }

        // The session's last refresh draws the bars' final state; their texts are dropped after it.
        session?.GetAwaiter().GetResult();
        if (session is not null)
        {
            lock (_gate)
            {
                if (_context is null)
                {
                    _liveBars.Clear();
                }
            }
        }
    }

    // Spectre's progress runs inside a callback; the callback here hands its context out and waits until the last bar
    // ends, so commands keep the create-report-dispose shape. The callback starts on this thread (no other live display
    // holds the console), so the context is there when StartAsync returns its task.
    private ProgressContext StartSession(IAnsiConsole console)
    {
        var ready = new TaskCompletionSource<ProgressContext>(TaskCreationOptions.RunContinuationsAsynchronously);
        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _stop = stop;
        _session = console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new KnownTotalBarColumn(), new SummaryColumn(this))
            .StartAsync(async context =>
            {
                ready.TrySetResult(context);
                await stop.Task.ConfigureAwait(false);
            });
        return ready.Task.GetAwaiter().GetResult();
    }

    /// <summary>The bar itself, only when the total is known: an unknown total shows its count alone, not a bar that means nothing.</summary>
    private sealed class KnownTotalBarColumn : ProgressColumn
    {
        private readonly ProgressBarColumn _bar = new();

        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime) =>
            task.IsIndeterminate ? Text.Empty : _bar.Render(options, task, deltaTime);
    }

    /// <summary>The bar's text: share, count with unit, elapsed, ETA and status, as <see cref="ProgressText.Summary"/> writes it.</summary>
    private sealed class SummaryColumn(ConsoleUi ui) : ProgressColumn
    {
        protected override bool NoWrap => true;

        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime)
        {
            ProgressBar? bar;
            lock (ui._gate)
            {
                ui._liveBars.TryGetValue(task, out bar);
            }

            return new Text(bar?.Summary() ?? string.Empty);
        }
    }
}

/// <summary>
/// One progress bar: a live Spectre.Console task on a terminal, plain lines when redirected. It draws any of the
/// library's progress records (<see cref="IProgressReport"/>) the same way, and is itself the progress sink a command
/// hands the library: reports are drawn on the reporting thread, in order.
/// </summary>
internal sealed class ProgressBar : IProgress<IProgressReport>, IDisposable
{
    private readonly ConsoleUi _ui;
    private readonly string _label;
    private readonly ProgressTask? _task;
    private readonly long _started;
    private readonly Lock _gate = new();
    private ProgressUnit _unit;
    private long _done;
    private long? _total;
    private string? _status;
    private long? _lastLine;
    private bool _changedSinceLine;
    private bool _disposed;
    private TimeSpan? _endedAfter;
    private (long Done, long Timestamp)? _rateStart;
    private TimeSpan? _eta;

    internal ProgressBar(ConsoleUi ui, string label, ProgressUnit unit, ProgressTask? task)
    {
        _ui = ui;
        _label = label;
        _unit = unit;
        _task = task;
        _started = ui.Time.GetTimestamp();
    }

    /// <summary>
    /// Draws <paramref name="report"/>: a bar with share, count, elapsed time and ETA when its total is known; a count
    /// and elapsed time, without share or ETA, when it is not.
    /// </summary>
    public void Report(IProgressReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        string? line = null;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            long now = _ui.Time.GetTimestamp();
            long? total = report.Total is > 0 ? report.Total : null;
            // The rate is measured from the first report of a count (work done before it, as in a resumed run, is not
            // this run's speed); a new unit, a new total or a count going back starts a new count.
            if (_rateStart is null || report.Unit != _unit || total != _total || report.Completed < _done)
            {
                _rateStart = (report.Completed, now);
            }

            _done = report.Completed;
            _total = total;
            _status = report.Status;
            _unit = report.Unit;
            _eta = _total is { } all ? ProgressEta.Remaining(_done - _rateStart.Value.Done, _ui.Time.GetElapsedTime(_rateStart.Value.Timestamp, now), all - _done) : null;
            if (_task is not null)
            {
                _task.IsIndeterminate = _total is null;
                _task.MaxValue = _total ?? 1;
                _task.Value = _total is null ? 0 : Math.Min(_done, _total.Value);
                return;
            }

            bool finished = _total is { } t && _done >= t;
            if (_lastLine is null || finished || _ui.Time.GetElapsedTime(_lastLine.Value, now) >= _ui.PlainInterval)
            {
                _lastLine = now;
                _changedSinceLine = false;
                line = PlainLine();
            }
            else
            {
                _changedSinceLine = true;
            }
        }

        if (line is not null)
        {
            _ui.WritePlain(line);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        string? line = null;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _endedAfter = _ui.Time.GetElapsedTime(_started);
            if (_task is null)
            {
                // The final state, unless the last line already showed it.
                line = _changedSinceLine ? PlainLine() : null;
            }
        }

        if (_task is not null)
        {
            _task.StopTask();
            _ui.EndBar();
        }
        else if (line is not null)
        {
            _ui.WritePlain(line);
        }
    }

    /// <summary>The bar's text now (an ended bar keeps the time it ended at).</summary>
    internal string Summary()
    {
        lock (_gate)
        {
            return ProgressText.Summary(_done, _total, _unit, _endedAfter ?? _ui.Time.GetElapsedTime(_started), _eta, _status);
        }
    }

    private string PlainLine()
    {
        string summary = ProgressText.Summary(_done, _total, _unit, _endedAfter ?? _ui.Time.GetElapsedTime(_started), _eta, _status);
        return _total is { } total ? $"{_label} [{ProgressText.Bar(_done, total)}] {summary}" : $"{_label} {summary}";
    }
}
