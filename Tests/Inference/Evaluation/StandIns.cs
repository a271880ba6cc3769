using System.Buffers;
using Microsoft.ML.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Evaluation;

/// <summary>One token per character of a fixed alphabet; id 0 is BOS, characters are 1..n.</summary>
internal sealed class CharTokenizer(string alphabet) : Tokenizer
{
    public const int Bos = 0;

    public int VocabularySize => alphabet.Length + 1;

    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        ReadOnlySpan<char> span = text is null ? textSpan : text.AsSpan();
        var tokens = new List<EncodedToken>(span.Length);
        for (int i = 0; i < span.Length; i++)
        {
            int index = alphabet.IndexOf(span[i], StringComparison.Ordinal);
            if (index < 0)
            {
                throw new ArgumentException($"'{span[i]}' is not in the test alphabet.");
            }

            tokens.Add(new EncodedToken(index + 1, span[i].ToString(), new Range(i, i + 1)));
        }

        return new EncodeResults<EncodedToken> { Tokens = tokens, CharsConsumed = span.Length };
    }

    public override OperationStatus Decode(IEnumerable<int> ids, Span<char> destination, out int idsConsumed, out int charsWritten)
    {
        idsConsumed = 0;
        charsWritten = 0;
        foreach (int id in ids)
        {
            if (id == Bos)
            {
                idsConsumed++;
                continue;
            }

            if (charsWritten >= destination.Length)
            {
                return OperationStatus.DestinationTooSmall;
            }

            destination[charsWritten++] = alphabet[id - 1];
            idsConsumed++;
        }

        return OperationStatus.Done;
    }
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
