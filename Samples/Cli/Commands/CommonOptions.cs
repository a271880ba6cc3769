using System.CommandLine;
using System.Globalization;

namespace ModelSurgery.Cli.Commands;

/// <summary>Options several commands share, defined once so their names and help agree.</summary>
internal static class CommonOptions
{
    public static Option<string> Model() => new("--model") { Description = "Checkpoint folder (config.json + safetensors).", Required = true };

    public static Option<string> Device() => new("--device") { Description = "auto, cpu, cuda or cuda:N.", DefaultValueFactory = _ => "auto" };

    /// <summary><c>--force</c>: replace a model or run already in the output folder.</summary>
    public static Option<bool> Force(string what = "a model") => new("--force") { Description = $"Replace {what} already in the output folder (refused without it)." };
}

/// <summary>Token ids given on the command line or in a text file.</summary>
internal static class TokenIds
{
    /// <summary>Parses ids separated by whitespace or commas.</summary>
    public static int[] Parse(string text, string source)
    {
        string[] parts = text.Split([' ', '\t', '\r', '\n', ','], StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out ids[i]))
            {
                throw new UsageException($"{source}: '{parts[i]}' (item {i + 1}) is not a token id.");
            }
        }

        return ids;
    }
}
