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
        var command = new Command("inspect", "Show a model's architecture, parameter count by component, dtypes, shards and bytes; or a bare safetensors file's tensors and metadata.") { path, json };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            ModelInspection inspection = ModelInspector.Inspect(parsed.GetValue(path)!);
            string text = parsed.GetValue(json) ? inspection.ToJson() : Render(inspection);
            await context.Output.WriteLineAsync(text.AsMemory(), cancellationToken).ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
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
