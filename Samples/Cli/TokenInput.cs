using ModelSurgery.Cli.Commands;

namespace ModelSurgery.Cli;

/// <summary>Reads token ids from the files commands accept.</summary>
internal static class TokenInput
{
    /// <summary>Reads token ids from a text file of ids separated by whitespace or commas.</summary>
    public static int[] Read(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: no such token file.", path);
        }

        return TokenIds.Parse(File.ReadAllText(path), path);
    }
}
