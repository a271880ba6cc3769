using System.CommandLine;
using System.Globalization;
using ModelSurgery.Inference.Checkpoints;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Inspection;

namespace ModelSurgery.Cli.Commands;

/// <summary><c>modelsurgery inspect &lt;checkpoint-dir | file.safetensors | config.json&gt; [--json]</c>.</summary>
internal static class InspectCommand
{
    public static Command Create(CliContext context)
    {
        var path = new Argument<string>("path") { Description = "A checkpoint folder, any .safetensors file (with or without config.json beside it), or a bare config.json (parameter accounting only)." };
        var json = new Option<bool>("--json") { Description = "Print the result as JSON." };
        var scan = new Option<bool>("--scan") { Description = $"Check every weight for NaN and infinite values even above {ByteSize.Format(ScanLimitBytes)} (smaller checkpoints are always checked)." };
        var command = new Command("inspect", "Show a model's architecture, parameter count by component, dtypes, shards and bytes; or a bare safetensors file's tensors and metadata.") { path, json, scan };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            string target = parsed.GetValue(path)!;
            ModelInspection inspection = ModelInspector.Inspect(target);
            string text = parsed.GetValue(json) ? inspection.ToJson() : Render(inspection);
            await context.Output.WriteLineAsync(text.AsMemory(), cancellationToken).ConfigureAwait(false);
            if (!target.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
            {
                // Inspecting a damaged checkpoint is still meaningful: the values are reported as warnings, not as a failure.
                foreach (string warning in ScanValues(target, parsed.GetValue(scan), cancellationToken))
                {
                    await context.Error.WriteLineAsync($"warning: {warning}").ConfigureAwait(false);
                }
            }

            return ExitCodes.Success;
        });
        return command;
    }

    /// <summary>Checkpoints up to this size have every value checked by default (a pass over the memory-mapped files).</summary>
    internal const long ScanLimitBytes = 8L << 30;

    private static List<string> ScanValues(string path, bool force, CancellationToken cancellationToken)
    {
        using CheckpointReader reader = CheckpointReader.Open(path);
        if (reader.TotalTensorBytes > ScanLimitBytes && !force)
        {
            return [$"weights not checked for NaN or infinite values ({ByteSize.Format(reader.TotalTensorBytes)}); give --scan to check them."];
        }

        var warnings = new List<string>();
        foreach (string name in reader.TensorNames)
        {
            cancellationToken.ThrowIfCancellationRequested();
            try
            {
                reader.ReadTensor(name).Dispose();
            }
            catch (InvalidDataException e)
            {
                warnings.Add(e.Message);
            }
        }

        return warnings;
    }

    internal static string Render(ModelInspection inspection)
    {
        var w = new StringWriter(CultureInfo.InvariantCulture);
        w.WriteLine($"{inspection.Source}");
        if (inspection.Config is { } c && inspection.Parameters is { } p)
        {
            w.WriteLine($"  architecture   {c.ModelType}: {c.NumHiddenLayers} layers, hidden {c.HiddenSize}, FFN {c.IntermediateSize}, " +
                        $"{c.NumAttentionHeads} heads / {c.NumKeyValueHeads} KV heads of {c.HeadDim}, vocab {c.VocabSize}" +
                        (c.TieWordEmbeddings ? ", tied embeddings" : string.Empty));
            w.WriteLine($"  rope           theta {c.RopeTheta.ToString(CultureInfo.InvariantCulture)}" +
                        (c.RopeScaling is null ? string.Empty : $", {c.RopeScaling.RopeType} scaling x{c.RopeScaling.Factor.ToString(CultureInfo.InvariantCulture)}") +
                        $", max positions {c.MaxPositionEmbeddings}");
            w.WriteLine("  parameters");
            Row("embeddings", p.Embeddings);
            Row("attention", p.Attention);
            Row("mlp", p.Mlp);
            Row("norms", p.Norms);
            Row("head", p.Head);
            Row("total", p.Total);
            w.WriteLine($"    {"non-embedding",-14}{p.NonEmbedding,16:N0}   embeddings+head share {p.EmbeddingShare:P2}");

            void Row(string name, long count) => w.WriteLine($"    {name,-14}{count,16:N0}  {(p.Total == 0 ? 0 : (double)count / p.Total),7:P2}");
        }
        else
        {
            // Without a config only the file itself can be described: every tensor, as its header states it.
            w.WriteLine("  config         none beside the file (architecture and parameter accounting need config.json)");
            w.WriteLine($"  tensors        {inspection.Tensors.Count:N0} tensors, {inspection.TensorElements:N0} elements");
            int nameWidth = Math.Max(14, inspection.Tensors.Select(t => t.Name.Length).DefaultIfEmpty(0).Max());
            foreach (TensorUsage t in inspection.Tensors)
            {
                w.WriteLine($"    {t.Name.PadRight(nameWidth)}  {t.DType,-5} [{string.Join(", ", t.Shape)}]  {ByteSize.Format(t.Bytes)}");
            }
        }

        if (inspection.DTypes.Count > 0)
        {
            w.WriteLine("  storage");
            foreach (DTypeUsage d in inspection.DTypes)
            {
                w.WriteLine($"    {d.DType,-14}{d.Tensors,6} tensors {ByteSize.Format(d.Bytes),12}");
            }

            foreach (ShardUsage s in inspection.Shards)
            {
                w.WriteLine($"    {s.File,-40}{s.Tensors,6} tensors {ByteSize.Format(s.Bytes),12}");
            }
        }

        foreach ((string key, string value) in inspection.Metadata.OrderBy(m => m.Key, StringComparer.Ordinal))
        {
            w.WriteLine($"  metadata       {key} = {value}");
        }

        foreach (string problem in inspection.Problems)
        {
            w.WriteLine($"  problem        {problem}");
        }

        return w.ToString().TrimEnd();
    }
}
