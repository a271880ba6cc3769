using System.Text.Json.Nodes;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Surgery.Building;
using ModelSurgery.Surgery.Planning;
using ModelSurgery.Tests.Modeling;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Building;

/// <summary>Dropping layers of a teacher with sliding-window layers: every kept layer keeps its teacher's window.</summary>
public sealed class SlidingWindowSurgeryTests
{
    private const int Window = 4;
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("swa-surgery").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static LlamaConfig Teacher(JsonObject keys) =>
        TinyModels.Config("qwen2", heads: 4, kvHeads: 2, layers: 5) with { ExtraProperties = keys };

    /// <summary>Windows on layers 2, 3, 4 (max_window_layers = 2); keeping 0, 2, 4 drops layer 1 below the boundary and 3 above it.</summary>
    private static JsonObject MaxWindowLayers() => new() { ["use_sliding_window"] = true, ["sliding_window"] = Window, ["max_window_layers"] = 2 };

    /// <summary>An alternating pattern only layer_types can hold.</summary>
    private static JsonObject LayerTypes() => new()
    {
        ["use_sliding_window"] = true,
        ["sliding_window"] = Window,
        ["max_window_layers"] = 28,
        ["layer_types"] = new JsonArray("full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention"),
    };

    public static IEnumerable<TestCaseData> Cases()
    {
        yield return new TestCaseData(MaxWindowLayers(), new[] { 0, 2, 4 }, "max_window_layers=1").SetArgDisplayNames("max_window_layers teacher, keep 0 2 4");
        yield return new TestCaseData(MaxWindowLayers(), new[] { 1, 3 }, "max_window_layers=1").SetArgDisplayNames("max_window_layers teacher, keep 1 3");
        yield return new TestCaseData(LayerTypes(), new[] { 1, 2, 3 }, "layer_types").SetArgDisplayNames("layer_types teacher, keep 1 2 3");
        yield return new TestCaseData(LayerTypes(), new[] { 0, 1, 3, 4 }, "layer_types").SetArgDisplayNames("layer_types teacher, keep 0 1 3 4");
    }

    [TestCaseSource(nameof(Cases))]
    public async Task The_student_forward_equals_the_teacher_forward_with_the_dropped_layers_removed(JsonObject keys, int[] kept, string expectedKeys)
    {
        LlamaConfig config = Teacher(keys);
        using LlamaForCausalLM teacher = TinyModels.Create(config, seed: 41);
        using (no_grad())
        {
            foreach (var (name, parameter) in teacher.named_parameters())
            {
                if (!name.Contains("norm", StringComparison.Ordinal))
                {
                    parameter.mul_(15); // attention far from uniform, so the window shows in the logits
                }
            }
        }

        string teacherDir = Path.Combine(_dir, "teacher");
        await ModelCheckpoint.SaveAsync(teacher, teacherDir);
        SurgeryPlan plan = new PlanBuilder(config).KeepLayers(kept).Build();
        string studentDir = Path.Combine(_dir, "student");

        await StudentBuilder.BuildAsync(teacherDir, plan, studentDir);
        using LlamaForCausalLM student = ModelCheckpoint.Load(studentDir, new ModelLoadOptions { Device = "cpu" });

        // The config on disk gives each kept layer its teacher layer's window, through the keys transformers reads.
        int?[] teacherWindows = [.. kept.Select(config.AttentionWindow)];
        LlamaConfig written = LlamaConfig.Load(Path.Combine(studentDir, "config.json"));
        Assert.That(written.LayerAttentionWindows, Is.EqualTo(teacherWindows));
        Assert.That(student.Layers.Select(l => l.Attention.Window), Is.EqualTo(teacherWindows));
        if (expectedKeys == "layer_types")
        {
            Assert.That(written.LayerTypes, Is.EqualTo(teacherWindows.Select(w => w is null ? "full_attention" : "sliding_attention")));
            Assert.That(written.ExtraProperties.ContainsKey("max_window_layers"), Is.False, "no max_window_layers describes the kept pattern");
        }
        else
        {
            Assert.That(written.ExtraProperties["max_window_layers"]!.GetValue<int>(), Is.EqualTo(1));
            Assert.That(written.ExtraProperties.ContainsKey("layer_types"), Is.False);
        }

        // Removing a layer from the teacher: its o_proj and down_proj write nothing, so the residual passes it unchanged.
        using var removed = new LlamaForCausalLM(config);
        removed.LoadStateDict(teacher.ToStateDict());
        using (no_grad())
        {
            foreach (int layer in Enumerable.Range(0, config.NumHiddenLayers).Except(kept))
            {
                removed.Layers[layer].Attention.OutputProjection.Weight.zero_();
                removed.Layers[layer].Mlp.DownProjection.Weight.zero_();
            }
        }

        removed.eval();
        long[] ids = TinyModels.RandomIds(4 * Window, config.VocabSize, seed: 42);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        Tensor input = tensor(ids).unsqueeze(0); // [1, T]
        Tensor expected = removed.forward(input); // [1, T, V]
        Tensor actual = student.forward(input); // [1, T, V]
        Assert.That(TinyModels.AreEqual(actual, expected), Is.True);

        // Sharp: the same student with the teacher's window keys copied unchanged gives other logits.
        using var copiedKeys = new LlamaForCausalLM(config with { NumHiddenLayers = kept.Length, ExtraProperties = Rebuilt(keys, kept.Length) });
        copiedKeys.LoadStateDict(student.ToStateDict());
        Assert.That(copiedKeys.Layers.Select(l => l.Attention.Window), Is.Not.EqualTo(teacherWindows));
        Assert.That(TinyModels.MaxAbsDiff(copiedKeys.forward(input), expected), Is.GreaterThan(1e-2));
    }

    /// <summary>The teacher's keys as a naive copy would leave them (layer_types cut to length so the config loads at all).</summary>
    private static JsonObject Rebuilt(JsonObject keys, int layers)
    {
        var copy = (JsonObject)keys.DeepClone();
        if (copy["layer_types"] is JsonArray types)
        {
            copy["layer_types"] = new JsonArray([.. types.Take(layers).Select(t => t?.DeepClone())]);
        }

        return copy;
    }
}
