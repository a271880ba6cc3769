using System.CommandLine;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Inference.Reporting;

namespace ModelSurgery.Cli.Commands;

/// <summary><c>modelsurgery synth --like &lt;preset | config.json&gt; [--dtype bf16] [--max-shard-size SIZE] [--seed N] [--tokenizer T] --out &lt;dir&gt;</c>.</summary>
internal static class SynthCommand
{
    public static Command Create(CliContext context)
    {
        var like = new Option<string>("--like") { Description = $"A preset ({string.Join(", ", ModelPresets.Names)}) or a config.json path.", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "Stored dtype: f32, bf16 or f16.", DefaultValueFactory = _ => "bf16" };
        var maxShard = new Option<string?>("--max-shard-size") { Description = "Split into shards of at most this size (e.g. 2GB, 500MB)." };
        var seed = new Option<int>("--seed") { Description = "Random seed; the same seed gives identical files.", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out") { Description = "Output checkpoint folder.", Required = true };
        var tokenizer = TokenizerOption();
        var force = CommonOptions.Force();
        var command = new Command("synth", "Write a random-weight checkpoint with the exact tensor names and shapes of a real model.") { like, dtype, maxShard, seed, output, tokenizer, force };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            LlamaConfig config = ResolveConfig(parsed.GetValue(like)!);
            SafetensorsDType storedDType = ParseWeightDType(parsed.GetValue(dtype)!);
            long maxShardBytes = parsed.GetValue(maxShard) is { } size ? ParseSize(size, "--max-shard-size") : long.MaxValue;
            string outDir = parsed.GetValue(output)!;
            using OutputGuard guard = new OutputGuard()
                .Input(File.Exists(parsed.GetValue(like)) ? parsed.GetValue(like) : null, "--like")
                .Folder(outDir, "--out", parsed.GetValue(force), clearModel: true);
            Inference.Runtime.MemoryPreflight.EnsureDiskSpace(outDir, LlamaTensorLayout.CountParameters(config).Total * storedDType.ElementSize(), "synth");
            using var bar = context.CreateProgressBar("synth", ProgressUnit.Bytes);
            await SyntheticCheckpoint.WriteAsync(
                config,
                outDir,
                storedDType,
                maxShardBytes,
                parsed.GetValue(seed),
                bar,
                cancellationToken: cancellationToken).ConfigureAwait(false);
            // The live bars end before results go to standard output, which may be the same terminal.
            bar.Dispose();
            PutTokenizer(parsed.GetValue(tokenizer), outDir, config);
            await context.Output.WriteLineAsync($"wrote {outDir}: {LlamaTensorLayout.CountParameters(config).Total:N0} parameters as {storedDType}").ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }

    /// <summary><c>--tokenizer</c>: the tokenizer to put beside the weights of a written model folder.</summary>
    internal static Option<string?> TokenizerOption() => new("--tokenizer")
    {
        Description = "Tokenizer to put in the model folder: a model or tokenizer folder, tokenizer.json, a SentencePiece .model, a .tiktoken file, or gpt2.",
    };

    /// <summary>Copies <paramref name="tokenizer"/> into <paramref name="modelDir"/> after checking it covers the model's vocabulary.</summary>
    internal static void PutTokenizer(string? tokenizer, string modelDir, LlamaConfig config)
    {
        if (tokenizer is null)
        {
            return;
        }

        if (!File.Exists(tokenizer) && !Directory.Exists(tokenizer) && !string.Equals(tokenizer, TiktokenVocabulary.Gpt2Name, StringComparison.OrdinalIgnoreCase))
        {
            throw new UsageException($"--tokenizer: {tokenizer}: no such file or folder.");
        }

        int size = TokenizerFiles.Load(Directory.Exists(tokenizer) && !TokenizerFiles.IsInFolder(tokenizer) && Directory.GetFiles(tokenizer, "*.tiktoken") is [string single] ? single : tokenizer).VocabularySize;
        if (size > config.VocabSize)
        {
            throw new UsageException($"--tokenizer: {tokenizer} has {size} token ids, more than the model's vocab_size {config.VocabSize}.");
        }

        if (!ModelFolderTokenizer.CopyInto(tokenizer, modelDir, config))
        {
            throw new UsageException($"--tokenizer: {tokenizer} holds no tokenizer.json, tokenizer.model or .tiktoken file.");
        }
    }

    /// <summary>A preset name or a config.json path.</summary>
    internal static LlamaConfig ResolveConfig(string like)
    {
        if (File.Exists(like))
        {
            return LlamaConfig.Load(like);
        }

        try
        {
            return ModelPresets.Get(like);
        }
        catch (ArgumentException ex)
        {
            throw new UsageException($"--like: '{like}' is neither a config.json file nor a preset ({string.Join(", ", ModelPresets.Names)}).", ex);
        }
    }

    internal static SafetensorsDType ParseWeightDType(string text) => text.ToUpperInvariant() switch
    {
        "F32" or "FP32" or "FLOAT32" => SafetensorsDType.F32,
        "BF16" or "BFLOAT16" => SafetensorsDType.BF16,
        "F16" or "FP16" or "FLOAT16" => SafetensorsDType.F16,
        _ => throw new UsageException($"--dtype: '{text}' is not one of f32, bf16, f16."),
    };

    internal static long ParseSize(string text, string option)
    {
        try
        {
            return ByteSize.Parse(text);
        }
        catch (FormatException ex)
        {
            throw new UsageException($"{option}: {ex.Message}", ex);
        }
        catch (ArgumentException ex)
        {
            throw new UsageException($"{option}: {ex.Message}", ex);
        }
    }
}
