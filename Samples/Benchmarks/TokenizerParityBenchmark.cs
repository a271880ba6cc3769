using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using ModelSurgery.Inference.Tokenization;

namespace ModelSurgery.Benchmarks;

/// <summary>
/// <c>parity &lt;tokenizer.json&gt;</c>: encodes the committed documents (Brown paragraphs and the held-out set, plus
/// optional extra JSON string arrays) with Hugging Face's Rust tokenizers (Tokenizers.DotNet), with this library's
/// <see cref="HuggingFaceTokenizer"/> and with the Microsoft.ML.Tokenizers conversion this library used before, and
/// prints how many documents each gives identical ids for, and how long each took.
/// </summary>
internal static class TokenizerParityBenchmark
{
    public static Command Create()
    {
        var file = new Argument<string>("tokenizer") { Description = "A tokenizer.json (BPE)." };
        var data = new Option<string>("--data") { Description = "Folder holding brown.jsonl and heldout.jsonl.", DefaultValueFactory = _ => Path.Combine("Samples", "Data") };
        var extra = new Option<string[]>("--strings") { Description = "JSON files holding an array of extra strings to compare.", AllowMultipleArgumentsPerToken = true };
        var command = new Command("parity", "Documents tokenized identically to Hugging Face tokenizers: this library's engine vs Microsoft.ML.Tokenizers.") { file, data, extra };
        command.SetAction(parsed =>
        {
            string path = parsed.GetValue(file)!;
            List<string> documents = Documents(parsed.GetValue(data)!);
            foreach (string strings in parsed.GetValue(extra) ?? [])
            {
                documents.AddRange(JsonSerializer.Deserialize<string[]>(File.ReadAllText(strings)) ?? []);
            }

            using var reference = new Tokenizers.DotNet.Tokenizer(path);
            HuggingFaceTokenizerJson json = HuggingFaceTokenizerJson.Load(path);
            var stopwatch = Stopwatch.StartNew();
            int[][] expected = [.. documents.Select(d => reference.Encode(d).Select(i => (int)i).ToArray())];
            double referenceSeconds = stopwatch.Elapsed.TotalSeconds;

            stopwatch.Restart();
            HuggingFaceTokenizer ours = json.CreateTokenizer();
            int[][] actual = [.. documents.Select(d => ours.Encode(d, addSpecialTokens: true))];
            double oursSeconds = stopwatch.Elapsed.TotalSeconds;
            int oursSame = Enumerable.Range(0, documents.Count).Count(i => expected[i].AsSpan().SequenceEqual(actual[i]));
            int firstDifferent = Enumerable.Range(0, documents.Count).FirstOrDefault(i => !expected[i].AsSpan().SequenceEqual(actual[i]), -1);

            string before;
            try
            {
                stopwatch.Restart();
                Tokenizer microsoft = MicrosoftTokenizer(json, path);
                // The reference applies the post-processor; compare the body only (what the old path produced).
                int[] prefix = ours.Encode("", addSpecialTokens: true);
                int same = Enumerable.Range(0, documents.Count).Count(i => expected[i].AsSpan(prefix.Length).SequenceEqual([.. microsoft.EncodeToIds(documents[i])]));
                before = string.Create(CultureInfo.InvariantCulture, $"{same}/{documents.Count} identical ({stopwatch.Elapsed.TotalSeconds:F1} s)");
            }
            catch (InvalidDataException e)
            {
                before = $"not loadable ({e.Message})";
            }

            Console.WriteLine($"{Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(path)))}/{Path.GetFileName(path)}: {documents.Count} documents");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  Hugging Face tokenizers (Rust): {referenceSeconds:F1} s"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  HuggingFaceTokenizer (managed): {oursSame}/{documents.Count} identical ({oursSeconds:F1} s)"));
            Console.WriteLine($"  Microsoft.ML.Tokenizers (before): {before}");
            if (firstDifferent >= 0)
            {
                Console.WriteLine($"  first difference, document {firstDifferent}: {JsonSerializer.Serialize(documents[firstDifferent][..Math.Min(200, documents[firstDifferent].Length)])}");
                Console.WriteLine($"    expected {string.Join(' ', expected[firstDifferent].Take(40))}");
                Console.WriteLine($"    actual   {string.Join(' ', actual[firstDifferent].Take(40))}");
            }

            return oursSame == documents.Count ? 0 : 1;
        });
        return command;
    }

    /// <summary>Brown paragraphs (one per line of each document) and the held-out documents.</summary>
    private static List<string> Documents(string folder)
    {
        static string Text(string line) => JsonDocument.Parse(line).RootElement.GetProperty("text").GetString() ?? "";
        var documents = new List<string>();
        foreach (string line in File.ReadLines(Path.Combine(folder, "brown.jsonl")).Where(l => l.Length > 0))
        {
            documents.AddRange(Text(line).Split('\n'));
        }

        documents.AddRange(File.ReadLines(Path.Combine(folder, "heldout.jsonl")).Where(l => l.Length > 0).Select(Text));
        return documents;
    }

    /// <summary>
    /// How this library ran tokenizer.json files before its own engine: byte-level files as Microsoft.ML.Tokenizers'
    /// BpeTokenizer with the file's split pattern, SentencePiece-style files as a SentencePiece BPE model through
    /// LlamaTokenizer.
    /// </summary>
    private static Tokenizer MicrosoftTokenizer(HuggingFaceTokenizerJson json, string path)
    {
        if (json.IsByteLevel)
        {
            Dictionary<string, int> specials = json.AddedTokens.ToDictionary(t => t.Content, t => t.Id);
            var options = new BpeOptions(json.Vocabulary)
            {
                Merges = json.Merges.Select(m => $"{m.Left} {m.Right}"),
                ByteLevel = true,
                PreTokenizer = new RegexPreTokenizer(new Regex(json.PreTokenizerPattern!, RegexOptions.Compiled), specials),
                SpecialTokens = specials,
            };
            return BpeTokenizer.Create(options);
        }

        if (json.IsSentencePieceStyle)
        {
            using var stream = new MemoryStream(json.ToSentencePieceModel().ToBytes());
            return LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
        }

        throw new InvalidDataException($"{path}: neither byte-level nor SentencePiece-style BPE.");
    }
}
