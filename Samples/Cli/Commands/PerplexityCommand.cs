using System.CommandLine;
using ModelSurgery.Inference.Evaluation;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Cli.Commands;

/// <summary><c>modelsurgery perplexity --model &lt;dir&gt; --tokens &lt;file&gt; [--context N] [--stride N] [--limit N]</c>.</summary>
internal static class PerplexityCommand
{
    public static Command Create(CliContext context)
    {
        var model = CommonOptions.Model();
        var tokens = new Option<string>("--tokens") { Description = "Token file: a packed token file from 'modelsurgery tokenize', or token ids as text separated by spaces.", Required = true };
        var contextLength = new Option<int?>("--context") { Description = "Window length (default: the model's max_position_embeddings, at most 1024)." };
        var stride = new Option<int?>("--stride") { Description = "Window step (default: half the context)." };
        var limit = new Option<int?>("--limit") { Description = "Score only the first N tokens of the file: a quick estimate on a large file." };
        var device = CommonOptions.Device();
        var command = new Command("perplexity", "Perplexity of a model over a token file, with a sliding window.") { model, tokens, contextLength, stride, limit, device };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            string modelDir = parsed.GetValue(model)!;
            int[] ids = TokenInput.Read(parsed.GetValue(tokens)!);
            if (parsed.GetValue(limit) is int first)
            {
                ids = first >= 2 ? ids[..Math.Min(first, ids.Length)] : throw new UsageException($"--limit must be at least 2 tokens, got {first}.");
            }
            using LlamaForCausalLM lm = ModelCheckpoint.Load(modelDir, new ModelLoadOptions { Device = parsed.GetValue(device)! });
            TokenInput.CheckRange(ids, lm.Config.VocabSize, parsed.GetValue(tokens)!);
            if (ids.Length < 2)
            {
                throw new InvalidDataException($"{parsed.GetValue(tokens)}: holds {ids.Length} token; perplexity needs at least 2.");
            }

            int window = parsed.GetValue(contextLength) ?? Math.Min(lm.Config.MaxPositionEmbeddings, 1024);
            int step = parsed.GetValue(stride) ?? Math.Max(1, window / 2);
            if (window < 2 || window > lm.Config.MaxPositionEmbeddings)
            {
                throw new UsageException($"--context must be between 2 and the model's max_position_embeddings ({lm.Config.MaxPositionEmbeddings}), got {window}.");
            }

            if (step < 1 || step > window)
            {
                throw new UsageException($"--stride must be between 1 and --context ({window}), got {step}.");
            }

            using var bar = context.CreateProgressBar("perplexity", ProgressUnit.Tokens);
            PerplexityResult result = await PerplexityEvaluator.EvaluateAsync(
                lm,
                ids,
                window,
                step,
                bar,
                cancellationToken: cancellationToken).ConfigureAwait(false);
            bar.Dispose();
            await context.Output.WriteLineAsync($"perplexity {result.Perplexity:F4} (mean NLL {result.MeanNll:F4} nats over {result.TokensScored} tokens, context {result.Context}, stride {result.Stride})").ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }
}
