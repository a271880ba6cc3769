using System.Text.Json.Nodes;
using ModelSurgery.Tests.Cli;

namespace ModelSurgery.Tests.Reliability;

/// <summary>One misuse of the tool: what is set up, the command line (<c>{d}</c> is the case's folder), and what the refusal must name.</summary>
/// <param name="Category">overwrite, garbage, non-finite weights or preflight.</param>
/// <param name="Name">What the case does.</param>
/// <param name="Args">The command line.</param>
/// <param name="Expect">Fragments the error message must contain (the option, file or field at fault).</param>
/// <param name="Setup">Changes made to the case's copy before the run.</param>
public sealed record MisuseCase(string Category, string Name, string[] Args, string[] Expect, Action<string>? Setup = null)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Category}: {Name}";
}

/// <summary>
/// The misuse battery: every case must exit non-zero with a one-line message that names the option, file or field at
/// fault, print no stack trace, and leave every file that existed before the run byte for byte as it was (SHA-256).
/// </summary>
[Parallelizable(ParallelScope.None)]
public sealed class MisuseBatteryTests
{
    private const string Overwrite = "overwrite";
    private const string Garbage = "garbage";
    private const string NonFinite = "non-finite weights";
    private const string Preflight = "preflight";
    private const string Newcomer = "newcomer";

    public static IEnumerable<TestCaseData> Cases() => All().Select(c => new TestCaseData(c).SetName($"{c.Category}: {c.Name}".Replace('.', '_')).SetCategory(c.Category));

    [TestCaseSource(nameof(Cases))]
    public async Task Refused_cleanly_and_inputs_untouched(MisuseCase misuse)
    {
        ArgumentNullException.ThrowIfNull(misuse);
        string d = await ReliabilityFixture.CopyAsync(misuse.Category.Replace(' ', '-'));
        try
        {
            misuse.Setup?.Invoke(d);
            Dictionary<string, string> before = ReliabilityFixture.Hashes(d);
            CliRun run = await CliFixtures.RunAsync([.. misuse.Args.Select(a => a.Replace("{d}", d, StringComparison.Ordinal))]);

            Assert.That(run.ExitCode, Is.Not.Zero, run.ToString());
            foreach (string fragment in misuse.Expect)
            {
                Assert.That(run.Error, Does.Contain(fragment.Replace("{d}", d, StringComparison.Ordinal)), run.ToString());
            }

            Assert.That(run.Error + run.Output, Does.Not.Contain("   at ").And.Not.Contain("Exception:").And.Not.Contain("(Parameter '"), run.ToString());
            Dictionary<string, string> after = ReliabilityFixture.Hashes(d);
            foreach ((string file, string hash) in before)
            {
                Assert.That(after.GetValueOrDefault(file), Is.EqualTo(hash), $"{file} changed or vanished\n{run}");
            }
        }
        finally
        {
            Directory.Delete(d, recursive: true);
        }
    }

    private static IEnumerable<MisuseCase> All()
    {
        string[] train = ReliabilityFixture.QuickTrain;

        // Outputs that are inputs, and outputs that already hold a model or a run.
        yield return new(Overwrite, "build --out the teacher", ["build", "--model", "{d}/m", "--plan", "{d}/plan.json", "--out", "{d}/m"], ["--out", "--model"]);
        yield return new(Overwrite, "build --out the teacher through a symlink", ["build", "--model", "{d}/m", "--plan", "{d}/plan.json", "--out", "{d}/link"], ["--out", "--model"], d => Directory.CreateSymbolicLink(Path.Combine(d, "link"), Path.Combine(d, "m")));
        yield return new(Overwrite, "build --out a folder holding the teacher", ["build", "--model", "{d}/m", "--plan", "{d}/plan.json", "--out", "{d}"], ["--out", "contains", "--model"]);
        yield return new(Overwrite, "rebuild over an existing student", ["build", "--model", "{d}/m", "--plan", "{d}/plan.json", "--out", "{d}/student"], ["already holds a model", "--force"]);
        yield return new(Overwrite, "tokenize --out its own --in", ["tokenize", "--tokenizer", "{d}/m", "--in", "{d}/c.jsonl", "--out", "{d}/c.jsonl", "--separator-id", "96"], ["--out", "--in"]);
        yield return new(Overwrite, "tokenize --out matched by its --in glob", ["tokenize", "--tokenizer", "{d}/m", "--in", "{d}/*.jsonl", "--out", "{d}/c.jsonl", "--separator-id", "96"], ["--out", "--in"]);
        yield return new(Overwrite, "tokenize --out through a symlink to --in", ["tokenize", "--tokenizer", "{d}/m", "--in", "{d}/c.jsonl", "--out", "{d}/alias.jsonl", "--separator-id", "96"], ["--out", "--in"], d => File.CreateSymbolicLink(Path.Combine(d, "alias.jsonl"), Path.Combine(d, "c.jsonl")));
        yield return new(Overwrite, "tokenize --out the tokenizer", ["tokenize", "--tokenizer", "{d}/m/tokenizer.json", "--in", "{d}/c.jsonl", "--out", "{d}/m/tokenizer.json", "--separator-id", "96"], ["--out", "--tokenizer"]);
        yield return new(Overwrite, "plan --out its own scores", ["plan", "--model", "{d}/m", "--scores", "{d}/scores/l2.json", "--layers", "1", "--out", "{d}/scores/l2.json"], ["--out", "--scores"]);
        yield return new(Overwrite, "plan --out the teacher's config", ["plan", "--model", "{d}/m", "--scores", "{d}/scores/l2.json", "--layers", "1", "--out", "{d}/m/config.json"], ["--out", "--model"]);
        yield return new(Overwrite, "cache-teacher --out its data", ["cache-teacher", "--teacher", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/tokens.bin", "--seq-len", "16", "--device", "cpu"], ["--out", "--data"]);
        yield return new(Overwrite, "cache-teacher --out its data description", ["cache-teacher", "--teacher", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/tokens.bin.json", "--seq-len", "16", "--device", "cpu"], ["--out", "--data"]);
        yield return new(Overwrite, "export-llama2c into the model's weights", ["export-llama2c", "{d}/m", "{d}/m/model.safetensors"], ["file.bin", "model-dir"]);
        yield return new(Overwrite, "eval --out the model's config", ["eval", "--model", "{d}/m", "--perplexity", "{d}/c.jsonl", "--out", "{d}/m/config.json", "--device", "cpu"], ["--out", "--model"]);
        yield return new(Overwrite, "eval --out its own text", ["eval", "--model", "{d}/m", "--perplexity", "{d}/c.jsonl", "--out", "{d}/c.jsonl", "--device", "cpu"], ["--out", "--task/--perplexity"]);
        yield return new(Overwrite, "synth over an existing model", ["synth", "--like", "{d}/tiny-config.json", "--dtype", "f32", "--out", "{d}/m"], ["already holds a model", "--force"]);
        yield return new(Overwrite, "import-llama2c into an existing model", ["import-llama2c", "{d}/stories.bin", "{d}/m"], ["already holds a model", "--force"]);
        yield return new(Overwrite, "train over an existing run", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/run", .. train], ["already holds a training run", "--resume", "--force"]);
        yield return new(Overwrite, "train --out the model it trains", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/student", "--force", .. train], ["--out", "--model"]);
        yield return new(Overwrite, "distill --out the teacher", ["distill", "--student", "{d}/student", "--teacher", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/m", .. train], ["--out", "--teacher"]);
        yield return new(Overwrite, "score --out the model", ["score", "--model", "{d}/m", "--tokens", "{d}/tokens.bin", "--sequences", "2", "--length", "16", "--out", "{d}/m", "--device", "cpu"], ["--out", "--model"]);
        yield return new(Overwrite, "prune --out the teacher", ["prune", "--model", "{d}/m", "--layers", "1", "--out", "{d}/m", "--device", "cpu"], ["--out", "--model"]);
        yield return new(Overwrite, "vocab compress --out the model", ["vocab", "compress", "--model", "{d}/m", "--corpus", "{d}/c.jsonl", "--keep", "50", "--out", "{d}/m"], ["--out", "--model"]);
        yield return new(Overwrite, "vocab compress over an existing model", ["vocab", "compress", "--model", "{d}/m", "--corpus", "{d}/c.jsonl", "--keep", "50", "--out", "{d}/student"], ["already holds a model", "--force"]);
        yield return new(Overwrite, "vocab stats --out its corpus", ["vocab", "stats", "--tokenizer", "{d}/m", "--corpus", "{d}/c.jsonl", "--out", "{d}/c.jsonl"], ["--out", "--corpus"]);
        yield return new(Overwrite, "tokenize --out a hard link to --in", ["tokenize", "--tokenizer", "{d}/m", "--in", "{d}/c.jsonl", "--out", "{d}/hard.jsonl", "--separator-id", "96"], ["--out", "--in"], d => ReliabilityFixture.HardLink(Path.Combine(d, "c.jsonl"), Path.Combine(d, "hard.jsonl")));
        yield return new(Overwrite, "plan --out a hard link to the teacher's config", ["plan", "--model", "{d}/m", "--scores", "{d}/scores/l2.json", "--layers", "1", "--out", "{d}/cfg.json"], ["--out", "--model"], d => ReliabilityFixture.HardLink(Path.Combine(d, "m", "config.json"), Path.Combine(d, "cfg.json")));
        yield return new(Overwrite, "plan --out a hard link to its scores", ["plan", "--model", "{d}/m", "--scores", "{d}/scores/l2.json", "--layers", "1", "--out", "{d}/p.json"], ["--out", "--scores"], d => ReliabilityFixture.HardLink(Path.Combine(d, "scores", "l2.json"), Path.Combine(d, "p.json")));
        yield return new(Overwrite, "tokenize --out through a symlinked folder to the tokenizer", ["tokenize", "--tokenizer", "{d}/m/tokenizer.json", "--in", "{d}/c.jsonl", "--out", "{d}/alias/tokenizer.json", "--separator-id", "96"], ["--out", "--tokenizer"], d => Directory.CreateSymbolicLink(Path.Combine(d, "alias"), Path.Combine(d, "m")));
        yield return new(Overwrite, "eval --out through a symlinked folder to the model's config", ["eval", "--model", "{d}/m", "--perplexity", "{d}/c.jsonl", "--out", "{d}/alias/config.json", "--device", "cpu"], ["--out", "--model"], d => Directory.CreateSymbolicLink(Path.Combine(d, "alias"), Path.Combine(d, "m")));
        yield return new(Overwrite, "export-job --force --out the student", ["export-job", "hf-accelerate", "--student", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/student", "--force", "--steps", "2"], ["--out", "--student"]);

        // Garbage that used to be accepted.
        yield return new(Garbage, "config rope_theta 0", ["generate", "--model", "{d}/m", "--prompt-ids", "1 2", "--max-new-tokens", "2", "--device", "cpu"], ["config.json", "rope_theta"], d => ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "rope_theta", 0));
        yield return new(Garbage, "config rope_theta negative", ["perplexity", "--model", "{d}/m", "--tokens", "{d}/ids.txt", "--device", "cpu"], ["config.json", "rope_theta"], d => ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "rope_theta", -10000));
        yield return new(Garbage, "config max_position_embeddings 0", ["perplexity", "--model", "{d}/m", "--tokens", "{d}/ids.txt", "--device", "cpu"], ["config.json", "max_position_embeddings"], d => ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "max_position_embeddings", 0));
        yield return new(Garbage, "config max_position_embeddings negative", ["train", "--model", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/r", .. train], ["config.json", "max_position_embeddings"], d => ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "max_position_embeddings", -5));
        yield return new(Garbage, "config hidden_size not divisible by heads", ["generate", "--model", "{d}/m", "--prompt-ids", "1", "--device", "cpu"], ["config.json", "hidden_size", "num_attention_heads"], d =>
        {
            ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "num_attention_heads", 5);
            ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "num_key_value_heads", 5);
        });
        yield return new(Garbage, "config num_hidden_layers above the weights", ["generate", "--model", "{d}/m", "--prompt-ids", "1", "--device", "cpu"], ["config.json", "num_hidden_layers 3", "missing"], d => ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "num_hidden_layers", 3));
        yield return new(Garbage, "config num_hidden_layers far above the weights", ["generate", "--model", "{d}/m", "--prompt-ids", "1", "--device", "cpu"], ["config.json", "num_hidden_layers 100000"], d => ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "num_hidden_layers", 100000));
        yield return new(Garbage, "config num_hidden_layers below the weights", ["perplexity", "--model", "{d}/m", "--tokens", "{d}/ids.txt", "--device", "cpu"], ["config.json", "num_hidden_layers 1", "unexpected"], d => ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "num_hidden_layers", 1));
        yield return new(Garbage, "int32 weights used as floats", ["generate", "--model", "{d}/m", "--prompt-ids", "1", "--device", "cpu"], ["model.norm.weight", "floating-point"], d => ReliabilityFixture.RelabelAsInt32(Path.Combine(d, "m"), "model.norm.weight"));
        yield return new(Garbage, "empty corpus tokenized", ["tokenize", "--tokenizer", "{d}/m", "--in", "{d}/empty.jsonl", "--out", "{d}/e.bin", "--separator-id", "96"], ["empty.jsonl", "0 tokens"], d => File.WriteAllText(Path.Combine(d, "empty.jsonl"), "\n\n"));
        yield return new(Garbage, "empty text evaluated", ["eval", "--model", "{d}/m", "--perplexity", "{d}/empty.txt", "--device", "cpu"], ["empty.txt", "no text"], d => File.WriteAllText(Path.Combine(d, "empty.txt"), string.Empty));
        yield return new(Garbage, "binary file tokenized", ["tokenize", "--tokenizer", "{d}/m", "--in", "{d}/blob.txt", "--out", "{d}/b.bin", "--separator-id", "96"], ["blob.txt", "UTF-8"], d => File.WriteAllBytes(Path.Combine(d, "blob.txt"), [0x7f, 0x45, 0x4c, 0x46, 0xff, 0xfe, 0x00, 0x01, 0x9c]));
        yield return new(Garbage, "NUL bytes in a text file", ["tokenize", "--tokenizer", "{d}/m", "--in", "{d}/nul.txt", "--out", "{d}/b.bin", "--separator-id", "96"], ["nul.txt", "binary"], d => File.WriteAllBytes(Path.Combine(d, "nul.txt"), [0x61, 0x00, 0x00, 0x62]));
        yield return new(Garbage, "invalid UTF-8 in a corpus for vocab stats", ["vocab", "stats", "--tokenizer", "{d}/m", "--corpus", "{d}/bad.txt", "--out", "{d}/s.json"], ["bad.txt", "UTF-8"], d => File.WriteAllBytes(Path.Combine(d, "bad.txt"), [0x61, 0x62, 0xc3, 0x28, 0x0a]));
        yield return new(Garbage, "invalid UTF-8 in an eval text", ["eval", "--model", "{d}/m", "--perplexity", "{d}/bad.txt", "--device", "cpu"], ["bad.txt", "UTF-8"], d => File.WriteAllBytes(Path.Combine(d, "bad.txt"), [0x61, 0x62, 0xe2, 0x82, 0x0a]));
        yield return new(Garbage, "train --seq-len beyond max positions", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--steps", "1", "--seq-len", "1000", "--device", "cpu"], ["--seq-len", "max_position_embeddings"]);
        yield return new(Garbage, "cache-teacher --seq-len beyond max positions", ["cache-teacher", "--teacher", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/cache.bin", "--seq-len", "1000", "--device", "cpu"], ["--seq-len", "max_position_embeddings"]);
        yield return new(Garbage, "train --lr 1e30", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--lr", "1e30", "--min-lr", "0", .. train], ["--lr"]);
        yield return new(Garbage, "train --lr NaN", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--lr", "NaN", .. train], ["--lr"]);
        yield return new(Garbage, "train --weight-decay Infinity", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--weight-decay", "Infinity", .. train], ["--weight-decay"]);
        yield return new(Garbage, "train --warmup-fraction NaN", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--warmup-fraction", "NaN", .. train], ["--warmup-fraction"]);
        yield return new(Garbage, "train --grad-clip negative", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--grad-clip", "-1", .. train], ["--grad-clip"]);
        yield return new(Garbage, "train --batch-size 0", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--steps", "1", "--batch-size", "0", "--seq-len", "16", "--device", "cpu"], ["--batch-size"]);
        yield return new(Garbage, "train --round-ratio NaN", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--rounds", "2", "--round-ratio", "NaN", .. train], ["--round-ratio"]);
        yield return new(Garbage, "distill --hidden-weight NaN", ["distill", "--student", "{d}/student", "--teacher", "{d}/m", "--plan", "{d}/plan.json", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--hidden-weight", "NaN", .. train], ["--hidden-weight"]);
        yield return new(Garbage, "distill --hidden-weight negative", ["distill", "--student", "{d}/student", "--teacher", "{d}/m", "--plan", "{d}/plan.json", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--hidden-weight", "-1", .. train], ["--hidden-weight"]);
        yield return new(Garbage, "distill --temperature Infinity", ["distill", "--student", "{d}/student", "--teacher", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--temperature", "Infinity", .. train], ["--temperature"]);
        yield return new(Garbage, "distill --alpha NaN", ["distill", "--student", "{d}/student", "--teacher", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--alpha", "NaN", .. train], ["--alpha"]);
        yield return new(Garbage, "generate --temperature negative", ["generate", "--model", "{d}/m", "--prompt-ids", "1", "--temperature", "-1", "--device", "cpu"], ["--temperature"]);
        yield return new(Garbage, "generate --top-p 0", ["generate", "--model", "{d}/m", "--prompt-ids", "1", "--top-p", "0", "--device", "cpu"], ["--top-p"]);
        yield return new(Garbage, "generate --top-p NaN", ["generate", "--model", "{d}/m", "--prompt-ids", "1", "--top-p", "NaN", "--device", "cpu"], ["--top-p"]);
        yield return new(Garbage, "generate --max-new-tokens negative", ["generate", "--model", "{d}/m", "--prompt-ids", "1", "--max-new-tokens", "-3", "--device", "cpu"], ["--max-new-tokens"]);
        yield return new(Garbage, "generate --prompt-ids outside the vocabulary", ["generate", "--model", "{d}/m", "--prompt-ids", "1 5000", "--device", "cpu"], ["--prompt-ids", "5000"]);
        yield return new(Garbage, "perplexity ids outside the vocabulary", ["perplexity", "--model", "{d}/m", "--tokens", "{d}/big.txt", "--device", "cpu"], ["big.txt", "4242"], d => File.WriteAllText(Path.Combine(d, "big.txt"), "1 2 4242 3"));
        yield return new(Garbage, "perplexity empty ids file", ["perplexity", "--model", "{d}/m", "--tokens", "{d}/none.txt", "--device", "cpu"], ["none.txt", "no token ids"], d => File.WriteAllText(Path.Combine(d, "none.txt"), " \n"));
        yield return new(Garbage, "perplexity --context 1", ["perplexity", "--model", "{d}/m", "--tokens", "{d}/ids.txt", "--context", "1", "--device", "cpu"], ["--context"]);
        yield return new(Garbage, "perplexity --stride 0", ["perplexity", "--model", "{d}/m", "--tokens", "{d}/ids.txt", "--stride", "0", "--device", "cpu"], ["--stride"]);
        yield return new(Garbage, "plan --neuron-fraction NaN", ["plan", "--model", "{d}/m", "--scores", "{d}/scores/l2.json", "--neuron-fraction", "NaN", "--out", "{d}/p.json"], ["--neuron-fraction"]);
        yield return new(Garbage, "plan --hidden-fraction negative", ["plan", "--model", "{d}/m", "--scores", "{d}/scores/l2.json", "--hidden-fraction", "-0.5", "--out", "{d}/p.json"], ["--hidden-fraction"]);
        yield return new(Garbage, "plan --budget NaN", ["plan", "--model", "{d}/m", "--budget", "NaN", "--out", "{d}/p.json"], ["--budget"]);
        yield return new(Garbage, "score --sequences 0", ["score", "--model", "{d}/m", "--tokens", "{d}/tokens.bin", "--sequences", "0", "--length", "16", "--out", "{d}/s", "--device", "cpu"], ["--sequences"]);
        yield return new(Garbage, "score --batch-size 0", ["score", "--model", "{d}/m", "--tokens", "{d}/tokens.bin", "--sequences", "2", "--length", "16", "--batch-size", "0", "--out", "{d}/s", "--device", "cpu"], ["--batch-size"]);
        yield return new(Garbage, "score --length beyond max positions", ["score", "--model", "{d}/m", "--tokens", "{d}/tokens.bin", "--sequences", "1", "--length", "300", "--out", "{d}/s", "--device", "cpu"], ["--length", "max_position_embeddings"]);
        yield return new(Garbage, "vocab compress --coverage NaN", ["vocab", "compress", "--model", "{d}/m", "--corpus", "{d}/c.jsonl", "--coverage", "NaN", "--out", "{d}/v"], ["--coverage"]);
        yield return new(Garbage, "tokenize --val-fraction NaN", ["tokenize", "--tokenizer", "{d}/m", "--in", "{d}/c.jsonl", "--out", "{d}/t.bin", "--val-fraction", "NaN", "--separator-id", "96"], ["--val-fraction"]);
        yield return new(Garbage, "build --max-shard-size negative", ["build", "--model", "{d}/m", "--plan", "{d}/plan.json", "--out", "{d}/s2", "--max-shard-size", "-5"], ["--max-shard-size"]);
        yield return new(Garbage, "build --read-workers 0", ["build", "--model", "{d}/m", "--plan", "{d}/plan.json", "--out", "{d}/s2", "--read-workers", "0"], ["--read-workers"]);
        yield return new(Garbage, "eval --few-shot negative", ["eval", "--model", "{d}/m", "--perplexity", "{d}/c.jsonl", "--few-shot", "-1", "--device", "cpu"], ["--few-shot"]);
        yield return new(Garbage, "eval --batch-size 0", ["eval", "--model", "{d}/m", "--perplexity", "{d}/c.jsonl", "--batch-size", "0", "--device", "cpu"], ["--batch-size"]);
        yield return new(Garbage, "cache-teacher --top-k beyond the vocabulary", ["cache-teacher", "--teacher", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/cache.bin", "--seq-len", "16", "--top-k", "1000", "--device", "cpu"], ["--top-k"]);

        // A teacher whose weights hold NaN or infinity is stopped wherever its weights are read.
        Action<string> nan = d => ReliabilityFixture.PoisonFirstElement(Path.Combine(d, "m"), "model.layers.0.mlp.down_proj.weight", float.NaN);
        Action<string> inf = d => ReliabilityFixture.PoisonFirstElement(Path.Combine(d, "m"), "model.embed_tokens.weight", float.PositiveInfinity);
        string[] expectNaN = ["NaN or infinite", "model.layers.0.mlp.down_proj.weight"];
        string[] expectInf = ["NaN or infinite", "model.embed_tokens.weight"];
        yield return new(NonFinite, "generate (NaN)", ["generate", "--model", "{d}/m", "--prompt-ids", "1 2", "--device", "cpu"], expectNaN, nan);
        yield return new(NonFinite, "perplexity (NaN)", ["perplexity", "--model", "{d}/m", "--tokens", "{d}/ids.txt", "--device", "cpu"], expectNaN, nan);
        yield return new(NonFinite, "perplexity (Inf)", ["perplexity", "--model", "{d}/m", "--tokens", "{d}/ids.txt", "--device", "cpu"], expectInf, inf);
        yield return new(NonFinite, "score (NaN)", ["score", "--model", "{d}/m", "--tokens", "{d}/tokens.bin", "--sequences", "2", "--length", "16", "--out", "{d}/s", "--device", "cpu"], expectNaN, nan);
        yield return new(NonFinite, "score with weight metrics only (Inf)", ["score", "--model", "{d}/m", "--metric", "l2", "--out", "{d}/s", "--device", "cpu"], expectInf, inf);
        yield return new(NonFinite, "build (NaN)", ["build", "--model", "{d}/m", "--plan", "{d}/plan.json", "--out", "{d}/s2"], expectNaN, nan);
        yield return new(NonFinite, "prune (Inf)", ["prune", "--model", "{d}/m", "--tokens", "{d}/tokens.bin", "--sequences", "2", "--length", "16", "--layers", "1", "--out", "{d}/s2", "--device", "cpu"], expectInf, inf);
        yield return new(NonFinite, "eval (NaN)", ["eval", "--model", "{d}/m", "--perplexity", "{d}/c.jsonl", "--device", "cpu"], expectNaN, nan);
        yield return new(NonFinite, "cache-teacher (NaN)", ["cache-teacher", "--teacher", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/cache.bin", "--seq-len", "16", "--device", "cpu"], expectNaN, nan);
        yield return new(NonFinite, "export-llama2c (Inf)", ["export-llama2c", "{d}/m", "{d}/out.bin"], expectInf, inf);
        yield return new(NonFinite, "vocab compress (Inf)", ["vocab", "compress", "--model", "{d}/m", "--corpus", "{d}/c.jsonl", "--coverage", "0.9", "--out", "{d}/v"], expectInf, inf);
        yield return new(NonFinite, "train (NaN)", ["train", "--model", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/r", .. train], expectNaN, nan);
        yield return new(NonFinite, "distill from a NaN teacher", ["distill", "--student", "{d}/student", "--teacher", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/r", .. train], expectNaN, nan);

        // A checkpoint far larger than memory is refused with numbers before anything is allocated.
        Action<string> huge = d => ReliabilityFixture.WriteSparseCheckpoint(Path.Combine(d, "big"), ReliabilityFixture.Llama70B());
        string[] expectMemory = ["needs about", "available", "--skip-memory-check"];
        yield return new(Preflight, "generate on a 70B checkpoint", ["generate", "--model", "{d}/big", "--prompt-ids", "1", "--device", "cpu"], expectMemory, huge);
        yield return new(Preflight, "perplexity on a 70B checkpoint", ["perplexity", "--model", "{d}/big", "--tokens", "{d}/ids.txt", "--device", "cpu"], expectMemory, huge);
        yield return new(Preflight, "train on a 70B checkpoint", ["train", "--model", "{d}/big", "--data", "{d}/tokens.bin", "--out", "{d}/r", .. train], expectMemory, huge);
        string[] expectScoring = ["needs about", "available", "--batch-size", "--length", "--sequences", "--metric", "--device", "--skip-memory-check"];
        yield return new(Preflight, "score on a 70B checkpoint over --max-memory", ["score", "--model", "{d}/big", "--tokens", "{d}/tokens.bin", "--out", "{d}/s", "--device", "cpu", "--max-memory", "2GB"], expectScoring, huge);
        yield return new(Preflight, "score with weight metrics on a 70B checkpoint over --max-memory", ["score", "--model", "{d}/big", "--metric", "l2", "--out", "{d}/s", "--device", "cpu", "--max-memory", "2GB"], expectScoring, huge);
        yield return new(Preflight, "score with taylor on a 70B checkpoint", ["score", "--model", "{d}/big", "--metric", "taylor", "--tokens", "{d}/tokens.bin", "--out", "{d}/s", "--device", "cpu"], expectScoring, huge);
        yield return new(Preflight, "score with huge calibration windows", ["score", "--model", "{d}/big", "--tokens", "{d}/tokens.bin", "--sequences", "100000", "--length", "8192", "--out", "{d}/s", "--device", "cpu"], expectScoring, huge);
        yield return new(Preflight, "prune a 70B checkpoint over --max-memory", ["prune", "--model", "{d}/big", "--tokens", "{d}/tokens.bin", "--layers", "40", "--out", "{d}/p", "--device", "cpu", "--max-memory", "2GB"], expectScoring, huge);
        yield return new(Preflight, "train whose activations exceed --max-memory", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--steps", "1", "--batch-size", "4096", "--seq-len", "16", "--device", "cpu", "--max-memory", "16MB"], ["needs about", "activations", "logits", "--batch-size", "--seq-len"]);
        yield return new(Preflight, "distill whose teacher exceeds --max-memory", ["distill", "--student", "{d}/student", "--teacher", "{d}/big", "--data", "{d}/tokens.bin", "--out", "{d}/r", .. train, "--max-memory", "4GB"], ["needs about", "teacher"], huge);
        yield return new(Preflight, "--max-memory not a size", ["generate", "--model", "{d}/m", "--prompt-ids", "1", "--device", "cpu", "--max-memory", "lots"], ["--max-memory"]);
        yield return new(Preflight, "synth of a model larger than the disk", ["synth", "--like", "{d}/huge.json", "--out", "{d}/h"], ["free", "{d}/h"], d => (ReliabilityFixture.Llama70B() with { NumHiddenLayers = 50_000 }).Save(Path.Combine(d, "huge.json")));

        // What a newcomer tries: out-of-range numbers, files of the wrong kind, configs that do not match the weights.
        yield return new(Newcomer, "train --seq-len 0", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--steps", "1", "--seq-len", "0", "--device", "cpu"], ["--seq-len"]);
        yield return new(Newcomer, "train --steps negative", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--steps", "-1", "--seq-len", "16", "--device", "cpu"], ["--steps"]);
        yield return new(Newcomer, "train --grad-accum 0", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--grad-accum", "0", .. train], ["--grad-accum"]);
        yield return new(Newcomer, "train --eval-every negative", ["train", "--model", "{d}/student", "--data", "{d}/tokens.bin", "--out", "{d}/r", "--steps", "1", "--seq-len", "16", "--eval-every", "-5", "--device", "cpu"], ["--eval-every"]);
        yield return new(Newcomer, "train on a one-token token file", ["train", "--model", "{d}/student", "--data", "{d}/one.bin", "--out", "{d}/r", .. train], ["one.bin", "not enough"], d => ReliabilityFixture.Tokenize(d, "a", "one.bin"));
        yield return new(Newcomer, "train on an empty token file", ["train", "--model", "{d}/student", "--data", "{d}/empty.bin", "--out", "{d}/r", .. train], ["empty.bin"], d => File.WriteAllBytes(Path.Combine(d, "empty.bin"), []));
        yield return new(Newcomer, "train on a corpus instead of a token file", ["train", "--model", "{d}/student", "--data", "{d}/c.jsonl", "--out", "{d}/r", .. train], ["c.jsonl"]);
        yield return new(Newcomer, "score on a one-token ids file", ["score", "--model", "{d}/m", "--tokens", "{d}/one.txt", "--sequences", "2", "--length", "16", "--out", "{d}/s", "--device", "cpu"], ["one.txt", "not enough"], d => File.WriteAllText(Path.Combine(d, "one.txt"), "5"));
        yield return new(Newcomer, "score on an empty token file", ["score", "--model", "{d}/m", "--tokens", "{d}/empty.bin", "--sequences", "2", "--length", "16", "--out", "{d}/s", "--device", "cpu"], ["empty.bin"], d => File.WriteAllBytes(Path.Combine(d, "empty.bin"), []));
        yield return new(Newcomer, "score --length 0", ["score", "--model", "{d}/m", "--tokens", "{d}/tokens.bin", "--sequences", "2", "--length", "0", "--out", "{d}/s", "--device", "cpu"], ["--length"]);
        yield return new(Newcomer, "score an unknown --metric", ["score", "--model", "{d}/m", "--metric", "magic", "--out", "{d}/s", "--device", "cpu"], ["--metric", "magic"]);
        yield return new(Newcomer, "perplexity on a one-token ids file", ["perplexity", "--model", "{d}/m", "--tokens", "{d}/one.txt", "--device", "cpu"], ["one.txt"], d => File.WriteAllText(Path.Combine(d, "one.txt"), "5"));
        yield return new(Newcomer, "build --out an existing file", ["build", "--model", "{d}/m", "--plan", "{d}/plan.json", "--out", "{d}/c.jsonl"], ["--out", "is a file"]);
        yield return new(Newcomer, "score --out an existing file", ["score", "--model", "{d}/m", "--metric", "l2", "--out", "{d}/ids.txt", "--device", "cpu"], ["--out", "is a file"]);
        yield return new(Newcomer, "tokenize --out an existing folder", ["tokenize", "--tokenizer", "{d}/m", "--in", "{d}/c.jsonl", "--out", "{d}/scores", "--separator-id", "96"], ["--out", "is a folder"]);
        yield return new(Newcomer, "export-llama2c to an existing folder", ["export-llama2c", "{d}/m", "{d}/scores"], ["scores", "folder"]);
        yield return new(Newcomer, "generate --model a file", ["generate", "--model", "{d}/c.jsonl", "--prompt-ids", "1", "--device", "cpu"], ["c.jsonl"]);
        yield return new(Newcomer, "generate --model a missing folder", ["generate", "--model", "{d}/nowhere", "--prompt-ids", "1", "--device", "cpu"], ["nowhere"]);
        yield return new(Newcomer, "eval a folder without weights", ["eval", "--model", "{d}/empty", "--perplexity", "{d}/c.jsonl", "--device", "cpu"], ["empty"], d => Directory.CreateDirectory(Path.Combine(d, "empty")));
        yield return new(Newcomer, "config.json not UTF-8", ["generate", "--model", "{d}/m", "--prompt-ids", "1", "--device", "cpu"], ["config.json", "UTF-8"], d => File.WriteAllBytes(Path.Combine(d, "m", "config.json"), [0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]));
        yield return new(Newcomer, "config.json truncated", ["perplexity", "--model", "{d}/m", "--tokens", "{d}/ids.txt", "--device", "cpu"], ["config.json", "JSON"], d => File.WriteAllText(Path.Combine(d, "m", "config.json"), "{\"model_type\": \"llama\", \"hidden"));
        yield return new(Newcomer, "duplicate tensor names in the weights", ["generate", "--model", "{d}/m", "--prompt-ids", "1", "--device", "cpu"], ["model.safetensors", "model.norm.weight"], d => ReliabilityFixture.DuplicateTensor(Path.Combine(d, "m"), "model.norm.weight"));
        foreach ((string command, string[] args) in MismatchCommands())
        {
            yield return new(Newcomer, $"{command} with a config wider than the weights", args, ["config.json", "intermediate_size"], d => ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "intermediate_size", 48));
            yield return new(Newcomer, $"{command} with a vocabulary larger than the weights", args, ["config.json", "vocab_size"], d => ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "vocab_size", 500));
        }

        yield return new(Newcomer, "plan --layers 0", ["plan", "--model", "{d}/m", "--scores", "{d}/scores/l2.json", "--layers", "0", "--out", "{d}/p.json"], ["--layers"]);
        yield return new(Newcomer, "plan --layers more than the teacher has", ["plan", "--model", "{d}/m", "--scores", "{d}/scores/l2.json", "--layers", "9", "--out", "{d}/p.json"], ["--layers"]);
        yield return new(Newcomer, "build a plan made for another model", ["build", "--model", "{d}/student", "--plan", "{d}/plan.json", "--out", "{d}/s2"], ["another teacher", "num_hidden_layers"]);
        yield return new(Newcomer, "build with a config wider than the weights", ["build", "--model", "{d}/m", "--plan", "{d}/plan.json", "--out", "{d}/s2"], ["another teacher", "intermediate_size"], d => ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "intermediate_size", 48));
        yield return new(Newcomer, "build with a vocabulary larger than the weights", ["build", "--model", "{d}/m", "--plan", "{d}/plan.json", "--out", "{d}/s2"], ["another teacher", "vocab_size"], d => ReliabilityFixture.SetConfig(Path.Combine(d, "m"), "vocab_size", 500));
        yield return new(Newcomer, "tokenize --separator-id negative", ["tokenize", "--tokenizer", "{d}/m", "--in", "{d}/c.jsonl", "--out", "{d}/t.bin", "--separator-id", "-1"], ["--separator-id"]);
        yield return new(Newcomer, "cache-teacher --top-k 0", ["cache-teacher", "--teacher", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/cache.bin", "--seq-len", "16", "--top-k", "0", "--device", "cpu"], ["--top-k"]);
        yield return new(Newcomer, "run with --work holding its own recipe", ["run", "{d}/r.json", "--work", "{d}"], ["--work", "recipe"], d => File.Copy(ReliabilityFixture.SampleRecipe, Path.Combine(d, "r.json")));
    }

    // Commands that read a model's config and weights, each on {d}/m.
    private static IEnumerable<(string Command, string[] Args)> MismatchCommands()
    {
        yield return ("generate", ["generate", "--model", "{d}/m", "--prompt-ids", "1", "--device", "cpu"]);
        yield return ("score", ["score", "--model", "{d}/m", "--tokens", "{d}/tokens.bin", "--sequences", "2", "--length", "16", "--out", "{d}/s", "--device", "cpu"]);
        yield return ("export-llama2c", ["export-llama2c", "{d}/m", "{d}/out.bin"]);
        yield return ("cache-teacher", ["cache-teacher", "--teacher", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/cache.bin", "--seq-len", "16", "--device", "cpu"]);
        yield return ("train", ["train", "--model", "{d}/m", "--data", "{d}/tokens.bin", "--out", "{d}/r", .. ReliabilityFixture.QuickTrain]);
    }
}
