using System.CommandLine;
using System.Globalization;
using TorchSharp;
using ModelSurgery.Inference.Generation;
using ModelSurgery.Inference.Modeling;

namespace ModelSurgery.Cli.Commands;

/// <summary>
/// <c>modelsurgery generate --model &lt;dir&gt; [--prompt TEXT | --prompt-ids "1 2 3"] [--max-new-tokens N] [--temperature T]
/// [--top-k K] [--top-p P] [--seed S] [--ids] [--dtype fp32|bf16] [--threads N] [--stats]</c>.
/// </summary>
internal static class GenerateCommand
{
    public static Command Create(CliContext context)
    {
        var model = CommonOptions.Model();
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text (needs a tokenizer in the model folder)." };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "Prompt as token ids separated by spaces, e.g. \"1 403 9\"." };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens to generate.", DefaultValueFactory = _ => 64 };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature; 0 is greedy.", DefaultValueFactory = _ => 0.0 };
        var topK = new Option<int>("--top-k") { Description = "Sample from the k most likely tokens (0 = all).", DefaultValueFactory = _ => 0 };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling: the smallest set of tokens with this much probability.", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<ulong?>("--seed") { Description = "Random seed for reproducible sampling." };
        var ids = new Option<bool>("--ids") { Description = "Print the generated token ids on one line, separated by spaces." };
        var dtype = new Option<string>("--dtype") { Description = "Weights and activations in fp32 or bf16 (the checkpoint is converted on load).", DefaultValueFactory = _ => "fp32" };
        var threads = new Option<int?>("--threads") { Description = "CPU threads for the model (torch.set_num_threads); default: torch's choice." };
        var stats = new Option<bool>("--stats") { Description = "Print prompt and decoding tokens per second to stderr when done." };
        var device = CommonOptions.Device();
        var command = new Command("generate", "Generate a continuation (streamed).") { model, prompt, promptIds, maxNew, temperature, topK, topP, seed, ids, dtype, threads, stats, device };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            torch.ScalarType weightType = parsed.GetValue(dtype)!.ToUpperInvariant() switch
            {
                "FP32" or "F32" or "FLOAT32" => torch.ScalarType.Float32,
                "BF16" or "BFLOAT16" => torch.ScalarType.BFloat16,
                _ => throw new UsageException($"--dtype: '{parsed.GetValue(dtype)}' is not fp32 or bf16."),
            };
            if (parsed.GetValue(threads) is int threadCount)
            {
                if (threadCount < 1)
                {
                    throw new UsageException($"--threads: {threadCount} is not a positive number of threads.");
                }

                torch.set_num_threads(threadCount);
            }

            if (parsed.GetValue(prompt) is not null && parsed.GetValue(promptIds) is not null)
            {
                throw new UsageException("give --prompt or --prompt-ids, not both.");
            }

            var options = new GenerationOptions
            {
                MaxNewTokens = parsed.GetValue(maxNew),
                Temperature = parsed.GetValue(temperature),
                TopK = parsed.GetValue(topK),
                TopP = parsed.GetValue(topP),
                Seed = parsed.GetValue(seed),
            };
            try
            {
                options.Validate();
            }
            catch (ArgumentException ex)
            {
                // The library names its properties; say which option that is.
                throw new UsageException(ex.Message
                    .Replace("GenerationOptions.MaxNewTokens", "--max-new-tokens", StringComparison.Ordinal)
                    .Replace("GenerationOptions.Temperature", "--temperature", StringComparison.Ordinal)
                    .Replace("GenerationOptions.TopK", "--top-k", StringComparison.Ordinal)
                    .Replace("GenerationOptions.TopP", "--top-p", StringComparison.Ordinal), ex);
            }

            string modelDir = parsed.GetValue(model)!;
            using LlamaForCausalLM lm = ModelCheckpoint.Load(modelDir, new ModelLoadOptions { Device = parsed.GetValue(device)!, DType = weightType });
            var tokenizer = parsed.GetValue(ids) && parsed.GetValue(prompt) is null ? null : CliTokenizer.TryLoad(modelDir);
            int[] promptTokens = parsed.GetValue(promptIds) is { } idText
                ? TokenIds.Parse(idText, "--prompt-ids")
                : parsed.GetValue(prompt) is { } text
                    ? CliTokenizer.Encode(tokenizer, modelDir, text, lm.Config.BosTokenId)
                    : [lm.Config.BosTokenId ?? throw new UsageException($"{modelDir}: config.json has no bos_token_id; give --prompt-ids.")];
            TokenInput.CheckRange(promptTokens, lm.Config.VocabSize, "--prompt-ids");
            if (promptTokens.Length > lm.Config.MaxPositionEmbeddings)
            {
                throw new UsageException($"the prompt ({promptTokens.Length} tokens) is longer than the model's max_position_embeddings ({lm.Config.MaxPositionEmbeddings}).");
            }

            options = options with { StopTokenIds = lm.Config.EosTokenIds };

            var generated = new List<int>();
            int printed = 0;
            GenerationStatistics? statistics = parsed.GetValue(stats) ? new GenerationStatistics() : null;
            await foreach (int id in TextGenerator.GenerateAsync(lm, promptTokens, options, statistics, cancellationToken).ConfigureAwait(false))
            {
                generated.Add(id);
                if (!parsed.GetValue(ids) && tokenizer is not null)
                {
                    // Decode the whole continuation and print what is new: pieces can merge across tokens, and a
                    // character split over byte tokens decodes to U+FFFD until its last byte arrives, so hold that back.
                    string decoded = tokenizer.Decode(generated);
                    int stable = decoded.EndsWith('\uFFFD') ? decoded.TrimEnd('\uFFFD').Length : decoded.Length;
                    if (stable > printed)
                    {
                        await context.Output.WriteAsync(decoded.AsMemory(printed, stable - printed), cancellationToken).ConfigureAwait(false);
                        await context.Output.FlushAsync(cancellationToken).ConfigureAwait(false);
                        printed = stable;
                    }
                }
            }

            if (parsed.GetValue(ids) || tokenizer is null)
            {
                await context.Output.WriteAsync(string.Join(' ', generated)).ConfigureAwait(false);
            }
            else
            {
                // Whatever was held back (an incomplete character at the very end).
                string decoded = tokenizer.Decode(generated);
                await context.Output.WriteAsync(decoded.Length > printed ? decoded[printed..] : string.Empty).ConfigureAwait(false);
            }

            await context.Output.WriteLineAsync().ConfigureAwait(false);
            if (statistics is not null)
            {
                // On stderr, so --ids output stays parseable.
                await context.Error.WriteLineAsync(string.Create(
                    CultureInfo.InvariantCulture,
                    $"prompt: {statistics.PromptTokens} tokens in {statistics.PromptTime.TotalMilliseconds:F1} ms, {statistics.PromptTokensPerSecond:F2} tokens/s\n" +
                    $"decode: {statistics.DecodeTokens} tokens in {statistics.DecodeTime.TotalMilliseconds:F1} ms, {statistics.DecodeTokensPerSecond:F2} tokens/s\n" +
                    $"({lm.DType}, {torch.get_num_threads()} threads, {lm.Device})")).ConfigureAwait(false);
            }

            return ExitCodes.Success;
        });
        return command;
    }
}
