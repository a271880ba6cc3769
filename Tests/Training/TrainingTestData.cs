using ModelSurgery.Training.Data;

namespace ModelSurgery.Tests.Training;

/// <summary>Generates small token files for training tests.</summary>
internal static class TrainingTestData
{
    /// <summary>
    /// Writes documents where each token determines the next (t' = (3t + 1) mod (vocab - 1)), which a model that sees the
    /// previous token learns quickly. Token vocab - 1 is the separator.
    /// </summary>
    public static string WritePatternFile(string directory, int vocab, int documents, int documentLength, string name = "tokens.bin")
    {
        string path = Path.Combine(directory, name);
        using var writer = new TokenFileWriter(path, vocab, separatorId: vocab - 1);
        for (int d = 0; d < documents; d++)
        {
            var tokens = new int[documentLength];
            tokens[0] = d % (vocab - 1);
            for (int i = 1; i < documentLength; i++)
            {
                tokens[i] = ((3 * tokens[i - 1]) + 1) % (vocab - 1);
            }

            writer.AppendDocument(tokens);
        }

        writer.Complete();
        return path;
    }
}
