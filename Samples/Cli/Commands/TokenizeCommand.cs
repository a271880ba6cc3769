using System.CommandLine;
using System.Globalization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Training.Data;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Cli.Commands;

/// <summary><c>modelsurgery tokenize --tokenizer &lt;path&gt; --in &lt;paths...&gt; --out &lt;tokens.bin&gt;</c>.</summary>
internal static class TokenizeCommand
{
    // End-of-sequence spellings of common tokenizers, tried in order when the separator is not given.
    private static readonly string[] EndOfSequenceNames = ["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|im_end|>", "<|eot_id|>"];

    public static Command Create(CliContext context)
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "tokenizer.json, a SentencePiece .model, a .tiktoken file, a model folder holding one, or 'gpt2' (built in).", Required = true };
        var inputs = new Option<string[]>("--in") { Description = "Input files, folders (every .txt/.jsonl/.ndjson/.json below, optionally .gz) or globs; a text file is one document, JSONL one document per line.", Required = true, AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out") { Description = "Token file to write.", Required = true };
        var valFraction = new Option<double>("--val-fraction") { Description = "Share of windows train/distill/cache-teacher hold out for validation; recorded in <out>.json.", DefaultValueFactory = _ => 0.01 };
        var splitSeed = new Option<ulong>("--split-seed") { Description = "Seed of the train/validation split; recorded in <out>.json.", DefaultValueFactory = _ => TokenFileInfo.DefaultSplitSeed };
        var field = new Option<string>("--field") { Description = "JSON field holding the text in .jsonl/.json lines.", DefaultValueFactory = _ => "text" };
        var separator = new Option<int?>("--separator-id") { Description = "Id written between documents (default: the end-of-sequence token: eos_token_id of a model folder's config.json, else the tokenizer's EOS token)." };
        var command = new Command(
            "tokenize",
            "Tokenize text into a packed token file (MSTOKENS, uint16/uint32 ids, documents separated by the EOS id) and write <out>.json describing it: " +
            "tokens, documents, vocab_size, separator_id, val_fraction and split_seed. train, distill and cache-teacher read val_fraction and split_seed from it " +
            "(override with their --val-fraction), so all of them hold out the same windows for a given --seq-len.")
        { tokenizer, inputs, output, valFraction, splitSeed, field, separator };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            string tokenizerPath = parsed.GetValue(tokenizer)!;
            double fraction = parsed.GetValue(valFraction);
            if (!(fraction >= 0 && fraction < 1))
            {
                throw new UsageException($"--val-fraction must be in [0, 1), got {fraction}.");
            }

            ModelTokenizer loaded = TokenizerFiles.Load(tokenizerPath);
            int vocab = loaded.VocabularySize;
            int separatorId = parsed.GetValue(separator) ?? FindSeparator(loaded, tokenizerPath);
            if (separatorId < 0 || separatorId >= vocab)
            {
                throw new UsageException($"--separator-id {separatorId} is outside the vocabulary of {vocab} ids.");
            }

            string outPath = parsed.GetValue(output)!;
            using OutputGuard guard = new OutputGuard()
                .Input(tokenizerPath, "--tokenizer", InputKind.Model)
                .Inputs(parsed.GetValue(inputs), "--in", InputKind.Corpus)
                .File(outPath, "--out")
                .File(TokenFileInfo.PathFor(outPath), "--out");
            TokenizeResult result;
            using (ProgressBar bar = context.CreateProgressBar("tokenize", ProgressUnit.Documents))
            {
                result = await Tokenization.TokenizeAsync(
                    loaded,
                    parsed.GetValue(inputs)!,
                    outPath,
                    new TokenizeOptions(vocab, separatorId, parsed.GetValue(field)!),
                    bar,
                    cancellationToken).ConfigureAwait(false);
            }

            new TokenFileInfo
            {
                Tokens = result.Tokens,
                Documents = result.Documents,
                VocabSize = vocab,
                SeparatorId = separatorId,
                ValidationFraction = fraction,
                SplitSeed = parsed.GetValue(splitSeed),
                Tokenizer = tokenizerPath,
            }.Save(outPath);
            await context.Output.WriteLineAsync(string.Create(
                CultureInfo.InvariantCulture,
                $"wrote {result.Tokens} tokens of {result.Documents} documents from {result.Files} file(s) to {result.OutputPath} (vocab {vocab}, separator {separatorId}, val fraction {fraction})")).ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }

    private static int FindSeparator(ModelTokenizer tokenizer, string path)
    {
        string config = Path.Combine(path, "config.json");
        if (Directory.Exists(path) && File.Exists(config) && LlamaConfig.Load(config).EosTokenIds is [int eos, ..])
        {
            return eos;
        }

        if (tokenizer is SentencePieceModelTokenizer { EosId: int sentencePieceEos })
        {
            return sentencePieceEos;
        }

        foreach (string name in EndOfSequenceNames)
        {
            if (tokenizer.TokenToId(name) is int id)
            {
                return id;
            }
        }

        throw new UsageException($"{path}: no end-of-sequence token found; give --separator-id.");
    }
}
