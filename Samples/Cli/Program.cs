using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using ModelSurgery.Cli.Commands;

namespace ModelSurgery.Cli;

/// <summary>Entry point of the <c>modelsurgery</c> tool.</summary>
public static partial class Program
{
    /// <summary>Runs the tool. Exit codes: 0 success, 1 failure (one-line message), 2 usage error.</summary>
    public static async Task<int> Main(string[] args)
    {
        // First of all, since it starts the program again: glibc reads its arena limit only at process start, and without
        // one a thread other than the main one maps every block of 64 MiB or more afresh (logits over a vocabulary), which
        // made training steps twice as slow once async writes had moved the loop onto pool threads.
        Inference.Runtime.NativeAllocator.RestartOnOneArena();
        // Before LibTorch loads: OpenMP threads that spin while waiting starve each other on small or busy machines.
        Training.CpuThreading.PreferPassiveWaiting();
        // Generation, perplexity and evaluation free and reallocate the same large tensors (logits over the vocabulary,
        // activations of a batch) over and over; by default glibc unmaps each block of 32 MiB or more when it is freed and
        // the next batch faults it in again, page by page. The setting is process-wide, so the tool, which owns its
        // process, makes it here once for every command; the inference library leaves it to the program that hosts it.
        Inference.Runtime.NativeAllocator.KeepFreedMemoryInProcess();
        MakeLibTorchLoadable();
        using var cancellation = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cancellation.Cancel();
        };
        return await RunAsync(args, Console.Out, Console.Error, cancellation.Token).ConfigureAwait(false);
    }

    // The installed tool runs from the NuGet tool store, where no build step patched TorchSharp's native library for
    // hosts whose libstdc++ is older than it needs (Debian 12, Ubuntu 22.04); elsewhere this does nothing.
    private static void MakeLibTorchLoadable()
    {
        try
        {
            Inference.Runtime.TorchSharpNative.EnsureLoadable();
        }
        catch (Exception ex) when (ex is DllNotFoundException or FileNotFoundException or InvalidDataException or IOException or UnauthorizedAccessException)
        {
            // Commands that need no tensors still work; the others fail with TorchSharp's own message.
            Console.Error.WriteLine($"warning: LibTorch may not load on this host: {ex.Message}");
        }
    }

    /// <summary>Runs the tool with the given writers, so tests can call it in-process.</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(error);

        // Scripts read the output: numbers look the same under every culture. The culture flows with this call only.
        CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        var context = new CliContext(output, error);
        var root = new RootCommand("ModelSurgery: make small language models out of large ones.") { CliContext.Verbose, CliContext.SkipMemoryCheck, CliContext.MaxMemory };
        foreach (Command command in CommandCatalog.Create(context))
        {
            root.Subcommands.Add(command);
        }

        ParseResult parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var parseError in parsed.Errors)
            {
                await error.WriteLineAsync($"error: {UserMessage(parseError.Message)}").ConfigureAwait(false);
            }

            await error.WriteLineAsync("Run 'modelsurgery --help' for usage.").ConfigureAwait(false);
            return ExitCodes.Usage;
        }

        if (NonFiniteNumber(parsed) is { } bad)
        {
            await error.WriteLineAsync($"error: {bad}").ConfigureAwait(false);
            return ExitCodes.Usage;
        }

        try
        {
            Inference.Runtime.MemoryPreflight.Skip = parsed.GetValue(CliContext.SkipMemoryCheck);
            Inference.Runtime.MemoryPreflight.Limit = parsed.GetValue(CliContext.MaxMemory) is { } limit ? MaxMemoryBytes(limit) : null;
            var configuration = new InvocationConfiguration { EnableDefaultExceptionHandler = false, Output = output, Error = error };
            return await parsed.InvokeAsync(configuration, cancellationToken).ConfigureAwait(false);
        }
        catch (UsageException ex)
        {
            await error.WriteLineAsync($"error: {UserMessage(ex.Message)}").ConfigureAwait(false);
            return ExitCodes.Usage;
        }
        catch (Inference.Runtime.MemoryPreflightException ex)
        {
            await error.WriteLineAsync($"error: {ex.Message} Free memory, choose a smaller model, or give {CliContext.SkipMemoryCheck.Name} to try anyway.").ConfigureAwait(false);
            return ExitCodes.Failure;
        }
        catch (OperationCanceledException)
        {
            await error.WriteLineAsync("error: cancelled.").ConfigureAwait(false);
            return ExitCodes.Failure;
        }
#pragma warning disable CA1031 // The tool's contract is a one-line message and exit code 1 for every failure.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            await error.WriteLineAsync(parsed.GetValue(CliContext.Verbose) ? $"error: {ex}" : $"error: {OneLine(ex)}").ConfigureAwait(false);
            return ExitCodes.Failure;
        }
    }

    private static long MaxMemoryBytes(string text)
    {
        long bytes = Commands.SynthCommand.ParseSize(text, CliContext.MaxMemory.Name);
        return bytes > 0 ? bytes : throw new UsageException($"{CliContext.MaxMemory.Name} must be positive, got {text}.");
    }

    // NaN and infinities parse as numbers but are never a meaningful setting: one check covers every numeric option.
    private static string? NonFiniteNumber(ParseResult parsed)
    {
        foreach (OptionResult result in parsed.CommandResult.Children.OfType<OptionResult>())
        {
            double? value = result.Option switch
            {
                Option<double> o => parsed.GetValue(o),
                Option<double?> o => parsed.GetValue(o),
                Option<float> o => parsed.GetValue(o),
                Option<float?> o => parsed.GetValue(o),
                _ => null,
            };
            if (value is { } v && !double.IsFinite(v))
            {
                return string.Create(CultureInfo.InvariantCulture, $"{result.Option.Name} must be a finite number, got {v}.");
            }
        }

        return null;
    }

    private static string OneLine(Exception ex)
    {
        Exception inner = ex is AggregateException { InnerExceptions.Count: 1 } aggregate ? aggregate.InnerExceptions[0] : ex;
        while (inner is TypeInitializationException or System.Reflection.TargetInvocationException && inner.InnerException is not null)
        {
            inner = inner.InnerException;
        }

        return UserMessage(inner.Message.ReplaceLineEndings(" "));
    }

    /// <summary>
    /// A message as the user should read it: without .NET's " (Parameter 'name')" suffix, which names a C# parameter
    /// the user never typed (messages name the option or file themselves).
    /// </summary>
    internal static string UserMessage(string message) =>
        System.Text.RegularExpressions.Regex.Replace(message, @"\s*\(Parameter '[^']*'\)", string.Empty);
}
