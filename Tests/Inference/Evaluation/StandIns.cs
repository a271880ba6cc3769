using ModelSurgery.Inference.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Evaluation;

/// <summary>One token per character of a fixed alphabet; id 0 is BOS, characters are 1..n.</summary>
internal sealed class CharTokenizer(string alphabet) : ModelTokenizer
{
    public const int Bos = 0;

    public override int VocabularySize => alphabet.Length + 1;

    public override int[] Encode(string text, bool addSpecialTokens)
    {
        var ids = new List<int>(text.Length + 1);
        if (addSpecialTokens)
        {
            ids.Add(Bos);
        }

        foreach (char c in text)
        {
            int index = alphabet.IndexOf(c, StringComparison.Ordinal);
            if (index < 0)
            {
                throw new ArgumentException($"'{c}' is not in the test alphabet.");
            }

            ids.Add(index + 1);
        }

        return [.. ids];
    }

    public override string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false) =>
        string.Concat(ids.Where(id => id != Bos).Select(id => alphabet[id - 1]));

    public override int? TokenToId(string token) => token.Length == 1 && alphabet.IndexOf(token[0], StringComparison.Ordinal) is >= 0 and var i ? i + 1 : null;

    public override string? IdToToken(int id) => id > 0 && id <= alphabet.Length ? alphabet[id - 1].ToString() : null;
}

/// <summary>Whitespace-separated words; the id of a word is its index in <c>words</c>, unknown words get 0.</summary>
internal sealed class WordTokenizer(params string[] words) : ModelTokenizer
{
    public override int VocabularySize => words.Length;

    public override int[] Encode(string text, bool addSpecialTokens) =>
        [.. text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Select(w => Math.Max(0, Array.IndexOf(words, w)))];

    public override string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false) => string.Join(' ', ids.Select(id => words[id]));

    public override int? TokenToId(string token) => Array.IndexOf(words, token) is >= 0 and var i ? i : null;

    public override string? IdToToken(int id) => id >= 0 && id < words.Length ? words[id] : null;
}

/// <summary>
/// A bigram causal LM: the logits at a position are the row of <c>probabilities</c> of the current token, stored as
/// ln(p) so that log_softmax returns ln(p) and log-likelihoods can be computed by hand. Records the inputs it sees.
/// </summary>
internal sealed class BigramLm : nn.Module<Tensor, Tensor>
{
    private readonly TorchSharp.Modules.Parameter weight;

    public BigramLm(double[,] probabilities) : base(nameof(BigramLm))
    {
        int v = probabilities.GetLength(0);
        var logs = new float[v * v];
        for (int i = 0; i < v; i++)
        {
            for (int j = 0; j < v; j++)
            {
                logs[(i * v) + j] = (float)Math.Log(probabilities[i, j]);
            }
        }

        weight = nn.Parameter(tensor(logs, [v, v]), requires_grad: false);
        RegisterComponents();
    }

    public List<long[]> SeenShapes { get; } = [];

    public override Tensor forward(Tensor input)
    {
        SeenShapes.Add(input.shape);
        using var scope = NewDisposeScope();
        long v = weight.shape[0];
        Tensor logits = weight.index_select(0, input.flatten()).view(input.shape[0], input.shape[1], v); // [B, T, V]
        return logits.MoveToOuterDisposeScope();
    }
}

internal static class StandIns
{
    /// <summary>Alphabet of the scoring tests: id 1 = ' ', 2 = 'a', 3 = 'b' (0 = BOS).</summary>
    public const string Alphabet = " ab";

    /// <summary>
    /// P(next | current), rows = current token (BOS, ' ', 'a', 'b'), columns = next token (BOS, ' ', 'a', 'b').
    /// </summary>
    public static double[,] Probabilities => new double[,]
    {
        { 0.1, 0.2, 0.3, 0.4 }, // after BOS
        { 0.1, 0.1, 0.5, 0.3 }, // after ' '
        { 0.1, 0.4, 0.2, 0.3 }, // after 'a'
        { 0.1, 0.6, 0.1, 0.2 }, // after 'b'
    };

    public static double[,] OtherProbabilities => new double[,]
    {
        { 0.25, 0.25, 0.25, 0.25 },
        { 0.25, 0.25, 0.25, 0.25 },
        { 0.25, 0.25, 0.25, 0.25 },
        { 0.25, 0.25, 0.25, 0.25 },
    };

    public static string WriteLines(string directory, string name, params string[] lines)
    {
        string path = Path.Combine(directory, name);
        File.WriteAllLines(path, lines);
        return path;
    }
}
