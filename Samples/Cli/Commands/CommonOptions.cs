using System.CommandLine;
using System.Globalization;
using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Cli.Commands;

/// <summary>Options several commands share, defined once so their names and help agree.</summary>
internal static class CommonOptions
{
    public static Option<string> Model() => new("--model") { Description = "Checkpoint folder (config.json + safetensors).", Required = true };

    public static Option<string> Device() => new("--device") { Description = "auto, cpu, cuda or cuda:N.", DefaultValueFactory = _ => "auto" };

    /// <summary>
    /// An option choosing one value of <typeparamref name="T"/> by the names recipes and the library's JSON use
    /// (<see cref="OptionNames"/>); the help lists the names and the default.
    /// </summary>
    public static Option<T> Choice<T>(string name, string description, T defaultValue)
        where T : struct, Enum
    {
        var option = new Option<T>(name)
        {
            Description = $"{description} ({string.Join(", ", OptionNames.Names<T>())}; default {OptionNames.Name(defaultValue)}).",

            // The names the parser takes, not the enum's members.
            HelpName = string.Join('|', OptionNames.Names<T>()),
            DefaultValueFactory = _ => defaultValue,
            CustomParser = result =>
            {
                string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : string.Empty;
                try
                {
                    return OptionNames.Parse<T>(text, name);
                }
                catch (FormatException ex)
                {
                    result.AddError(ex.Message);
                    return defaultValue;
                }
            },
        };
        option.CompletionSources.Add(OptionNames.Names<T>().ToArray());
        return option;
    }

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
