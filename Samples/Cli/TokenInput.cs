using ModelSurgery.Cli.Commands;
using ModelSurgery.Training.Data;

namespace ModelSurgery.Cli;

/// <summary>Reads token ids from the files commands accept.</summary>
internal static class TokenInput
{
    /// <summary>
    /// Reads token ids from a packed token file (recognised by its <c>MSTOKENS</c> magic, as written by
    /// <c>modelsurgery tokenize</c>) or from a text file of ids separated by whitespace or commas.
    /// </summary>
    public static int[] Read(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: no such token file.", path);
        }

        if (IsPackedTokenFile(path))
        {
            using TokenFile file = TokenFile.Open(path);
            if (file.Count > Array.MaxLength)
            {
                throw new InvalidDataException($"{path}: {file.Count} tokens do not fit in memory as one sequence.");
            }

            if (file.Count == 0)
            {
                throw new InvalidDataException($"{path}: holds no tokens.");
            }

            long[] ids = file.Read(0, (int)file.Count);
            return [.. ids.Select(id => (int)id)];
        }

        int[] parsed = TokenIds.Parse(Inference.IO.TextFiles.ReadAllText(path), path);
        return parsed.Length > 0 ? parsed : throw new InvalidDataException($"{path}: holds no token ids.");
    }

    /// <summary>Refuses ids outside a model's vocabulary, naming where they came from.</summary>
    public static IReadOnlyList<int> CheckRange(IReadOnlyList<int> ids, int vocabSize, string source)
    {
        for (int i = 0; i < ids.Count; i++)
        {
            if (ids[i] < 0 || ids[i] >= vocabSize)
            {
                throw new InvalidDataException($"{source}: token id {ids[i]} (item {i + 1}) is outside the model's vocabulary of {vocabSize} ids.");
            }
        }

        return ids;
    }

    private static bool IsPackedTokenFile(string path)
    {
        Span<byte> head = stackalloc byte[TokenFile.Magic.Length];
        using var stream = File.OpenRead(path);
        return stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false) == head.Length && head.SequenceEqual(TokenFile.Magic);
    }
}
