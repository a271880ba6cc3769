namespace ModelSurgery.Tests.Cli;

/// <summary>Runs the command line in process, capturing what it writes.</summary>
internal static class CliRunner
{
    public static async Task<(int Code, string Output, string Error)> RunAsync(IEnumerable<string> args, TextWriter? error = null, CancellationToken cancellationToken = default)
    {
        using var output = new StringWriter();
        using var errorText = new StringWriter();
        int code = await ModelSurgery.Cli.Program.RunAsync([.. args], output, error ?? errorText, cancellationToken);
        return (code, output.ToString(), error is null ? errorText.ToString() : string.Empty);
    }
}
