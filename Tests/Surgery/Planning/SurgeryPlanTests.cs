using ModelSurgery.Inference.Configuration;
using ModelSurgery.Surgery.Planning;

// Expected values read best as inline literal arrays in assertions.
#pragma warning disable CA1861

namespace ModelSurgery.Tests.Planning;

public sealed class SurgeryPlanTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("plans").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    /// <summary>A hand-written valid plan for the toy teacher: layers 0 and 3, KV group 1 with query heads 5 and 7.</summary>
    private static SurgeryPlan Explicit() => new()
    {
        Description = "by hand",
        Teacher = PlanningFixtures.Toy(),
        HiddenChannels = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23],
        Layers =
        [
            new LayerPlan { TeacherLayer = 0, KvHeads = [1], QueryHeads = [5, 7], Neurons = [0, 2, 4, 6] },
            new LayerPlan { TeacherLayer = 3, KvHeads = [1], QueryHeads = [4, 6], Neurons = [1, 3, 5, 7] },
        ],
    };

    [Test]
    public void Identity_plan_student_is_the_teacher()
    {
        LlamaConfig teacher = PlanningFixtures.Toy();
        SurgeryPlan plan = PlanBuilder.Identity(teacher);

        Assert.That(plan.Validate(), Is.Empty);
        Assert.That(plan.Student.ToJson(), Is.EqualTo((teacher with { ExplicitHeadDim = teacher.HeadDim }).ToJson()));
        Assert.That(plan.ParameterCount, Is.EqualTo(LlamaTensorLayout.CountParameters(teacher)));
        Assert.That(plan.StudentTensors().Select(t => (t.Name, string.Join("x", t.Shape))),
            Is.EqualTo(LlamaTensorLayout.Tensors(teacher).Select(t => (t.Name, string.Join("x", t.Shape)))));
    }

    [Test]
    public void Explicit_plan_derives_the_student_config_with_the_teacher_head_dim()
    {
        SurgeryPlan plan = Explicit();
        LlamaConfig student = plan.Student;

        Assert.That(plan.Validate(), Is.Empty);
        Assert.That((student.NumHiddenLayers, student.HiddenSize, student.IntermediateSize, student.NumAttentionHeads, student.NumKeyValueHeads, student.VocabSize),
            Is.EqualTo((2, 24, 4, 2, 1, 40)));
        // hidden 24 != 2 heads * 4: head_dim is written explicitly and stays the teacher's.
        Assert.That(student.ExplicitHeadDim, Is.EqualTo(4));
        Assert.DoesNotThrow(() => student.Validate());
        Assert.That(plan.ParameterCount, Is.EqualTo(LlamaTensorLayout.CountParameters(student)));
    }

    [Test]
    public void Random_plans_validate_and_match_their_shape()
    {
        LlamaConfig teacher = PlanningFixtures.Toy();
        StudentShape[] shapes =
        [
            new(2, 16, 24, 4, 1, 40),
            new(3, 8, 8, 4, 2, 40),
            new(4, 32, 48, 8, 2, 20),
            new(1, 1, 1, 1, 1, 3),
        ];
        foreach (StudentShape shape in shapes)
        {
            for (int seed = 0; seed < 5; seed++)
            {
                SurgeryPlan plan = PlanBuilder.Random(teacher, shape, seed);
                Assert.That(plan.Validate(), Is.Empty, $"{shape} seed {seed}");
                Assert.That(StudentShape.Of(plan.Student), Is.EqualTo(shape));
                Assert.That(plan.ParameterCount, Is.EqualTo(shape.CountParameters(teacher)));
            }
        }

        SurgeryPlan once = PlanBuilder.Random(teacher, shapes[0], 1);
        SurgeryPlan again = PlanBuilder.Random(teacher, shapes[0], 1);
        Assert.That(again, Is.EqualTo(once), "a seed reproduces its plan");
        Assert.That(PlanBuilder.Random(teacher, shapes[0], 1), Is.Not.EqualTo(PlanBuilder.Random(teacher, shapes[0], 2)));
    }

    private static IEnumerable<TestCaseData> BrokenPlans()
    {
        SurgeryPlan p = Explicit();
        LayerPlan l1 = p.Layers[1];
        SurgeryPlan WithLayer1(LayerPlan layer) => p with { Layers = [p.Layers[0], layer] };

        yield return new TestCaseData(WithLayer1(l1 with { QueryHeads = [4, 40] }), "layers[1].query_heads[1]", "index 40 out of range 0..7").SetName("query head out of range");
        yield return new TestCaseData(WithLayer1(l1 with { KvHeads = [2] }), "layers[1].kv_heads[0]", "index 2 out of range 0..1").SetName("KV head out of range");
        yield return new TestCaseData(WithLayer1(l1 with { Neurons = [1, 3, 3, 7] }), "layers[1].neurons[2]", "index 3 appears twice").SetName("duplicate neuron");
        yield return new TestCaseData(WithLayer1(l1 with { Neurons = [1, 7, 3, 5] }), "layers[1].neurons[2]", "strictly ascending").SetName("unsorted neurons");
        yield return new TestCaseData(WithLayer1(l1 with { Neurons = [] }), "layers[1].neurons", "at least one").SetName("no neurons");
        yield return new TestCaseData(WithLayer1(l1 with { TeacherLayer = 4 }), "layers[1].teacher_layer", "index 4 out of range 0..3").SetName("teacher layer out of range");
        yield return new TestCaseData(WithLayer1(l1 with { TeacherLayer = 0 }), "layers[1].teacher_layer", "teacher order").SetName("repeated layer");
        yield return new TestCaseData(WithLayer1(l1 with { QueryHeads = [1, 4] }), "layers[1].query_heads[0]", "query head 1 belongs to KV head 0, which is not in kv_heads").SetName("query head of a dropped KV head");
        yield return new TestCaseData(WithLayer1(l1 with { KvHeads = [0, 1], QueryHeads = [0, 4, 5, 6] }), "layers[1].query_heads", "KV head 1 keeps 3 query heads but KV head 0 keeps 1").SetName("uneven GQA groups");
        yield return new TestCaseData(WithLayer1(l1 with { Neurons = [1, 3, 5] }), "layers[1].neurons", "allow_non_uniform").SetName("non-uniform neurons");
        yield return new TestCaseData(WithLayer1(l1 with { KvHeads = [0, 1], QueryHeads = [0, 1, 4, 5] }), "layers[1].kv_heads", "keeps 2 KV heads but layers[0] keeps 1").SetName("non-uniform heads");
        yield return new TestCaseData(p with { HiddenChannels = [] }, "hidden_channels", "at least one").SetName("no hidden channels");
        yield return new TestCaseData(p with { HiddenChannels = [0, 32] }, "hidden_channels[1]", "index 32 out of range 0..31").SetName("hidden channel out of range");
        yield return new TestCaseData(p with { Layers = [] }, "layers", "at least one layer").SetName("no layers");
        yield return new TestCaseData(p with { KeptTokens = [1, 2, 40] }, "kept_tokens[2]", "token id 40 out of range 0..39").SetName("token out of range");
        yield return new TestCaseData(p with { KeptTokens = [1, 2, 9, 9] }, "kept_tokens[3]", "token id 9 appears twice").SetName("duplicate token");
        yield return new TestCaseData(p with { KeptTokens = [2, 3] }, "kept_tokens", "bos_token_id 1 is not kept").SetName("dropped bos token");
        yield return new TestCaseData(p with { FormatVersion = 2 }, "format_version", "version 2 is not supported").SetName("unknown version");
        yield return new TestCaseData(p with { Teacher = p.Teacher with { NumKeyValueHeads = 3 } }, "teacher", "num_attention_heads (8) must be a multiple of num_key_value_heads (3)").SetName("invalid teacher");
    }

    [TestCaseSource(nameof(BrokenPlans))]
    public void Broken_plan_is_rejected_naming_the_field(SurgeryPlan plan, string field, string message)
    {
        IReadOnlyList<PlanError> errors = plan.Validate();
        Assert.That(errors.Select(e => e.Field), Does.Contain(field), string.Join("; ", errors));
        Assert.That(errors.First(e => e.Field == field).Message, Does.Contain(message));

        var ex = Assert.Throws<InvalidDataException>(() => plan.EnsureValid("my-plan.json"));
        Assert.That(ex!.Message, Does.Contain("my-plan.json").And.Contain($"{field}: "));
        Assert.Throws<InvalidDataException>(() => _ = plan.Student);
    }

    [Test]
    public void Non_uniform_plan_is_accepted_only_when_allowed_and_counts_each_layer()
    {
        SurgeryPlan plan = Explicit();
        SurgeryPlan nonUniform = plan with
        {
            AllowNonUniform = true,
            Layers = [plan.Layers[0], plan.Layers[1] with { KvHeads = [0, 1], QueryHeads = [0, 1, 4, 5], Neurons = [1, 3, 5] }],
        };

        Assert.That(nonUniform.Validate(), Is.Empty);
        Assert.That(nonUniform.IsUniform, Is.False);
        Assert.Throws<InvalidOperationException>(() => _ = nonUniform.Student);
        // Hand count, hidden 24, head_dim 4: layer 1 gains 2 query heads (q and o grow by 2 * 4 * 24 = 192 each), one KV
        // head (k and v grow by 4 * 24 = 96 each) and loses one neuron (gate, up and down shrink by 24 each).
        Assert.That(nonUniform.ParameterCount.Total - plan.ParameterCount.Total, Is.EqualTo((2 * 192) + (2 * 96) - (3 * 24)));
        TensorSpec q1 = nonUniform.StudentTensors().Single(t => t.Name == LlamaTensorLayout.LayerPrefix(1) + "self_attn.q_proj.weight");
        Assert.That(q1.Shape, Is.EqualTo(new long[] { 16, 24 }));
    }

    [Test]
    public void Head_rows_expand_each_kept_head_to_its_head_dim_rows()
    {
        LayerPlan layer = Explicit().Layers[0];
        Assert.That(layer.QueryRows(4), Is.EqualTo(new[] { 20, 21, 22, 23, 28, 29, 30, 31 }));
        Assert.That(layer.KvRows(4), Is.EqualTo(new[] { 4, 5, 6, 7 }));
    }

    [Test]
    public void Plan_json_with_null_fields_is_rejected_naming_them()
    {
        string json = Explicit().ToJson().Replace("\"neurons\": [0,2,4,6]", "\"neurons\": null", StringComparison.Ordinal)
            .Replace("\"hidden_channels\": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23]", "\"hidden_channels\": null", StringComparison.Ordinal);
        var ex = Assert.Throws<InvalidDataException>(() => SurgeryPlan.FromJson(json, "p.json"));
        Assert.That(ex!.Message, Does.Contain("layers[0].neurons: must keep at least one").And.Contain("hidden_channels: must keep at least one"));
    }

    [Test]
    public void Misspelt_fields_are_rejected_rather_than_ignored()
    {
        string json = Explicit().ToJson().Replace("\"kept_tokens\": null", "\"kept_token\": [1, 2]", StringComparison.Ordinal);
        var ex = Assert.Throws<InvalidDataException>(() => SurgeryPlan.FromJson(json, "p.json"));
        Assert.That(ex!.Message, Does.Contain("p.json").And.Contain("kept_token"));
    }

    [Test]
    public void Tied_embeddings_stay_tied()
    {
        SurgeryPlan plan = Explicit() with { Teacher = PlanningFixtures.Toy(tied: true) };
        Assert.That(plan.Student.TieWordEmbeddings, Is.True);
        Assert.That(plan.StudentTensors().Select(t => t.Name), Does.Not.Contain(LlamaTensorLayout.LmHead));
        Assert.That(plan.ParameterCount.Head, Is.Zero);
    }

    [Test]
    public void Kept_tokens_set_the_vocabulary_and_remap_special_tokens()
    {
        SurgeryPlan plan = Explicit() with { KeptTokens = [30, 2, 1, 7] };
        LlamaConfig student = plan.Student;
        Assert.That(student.VocabSize, Is.EqualTo(4));
        Assert.That(student.BosTokenId, Is.EqualTo(2));
        Assert.That(student.EosTokenIds, Is.EqualTo(new[] { 1 }));
    }

    [Test]
    public void Json_round_trip_is_equal_with_stable_field_names_in_order()
    {
        SurgeryPlan plan = Explicit() with { KeptTokens = [1, 2, 5] };
        string path = Path.Combine(_dir, "plan.json");
        plan.Save(path);
        SurgeryPlan back = SurgeryPlan.Load(path);

        Assert.That(back, Is.EqualTo(plan));
        Assert.That(back.ToJson(), Is.EqualTo(plan.ToJson()));
        string text = File.ReadAllText(path);
        string[] keys = ["\"format_version\": 1", "\"description\":", "\"teacher\": {", "\"allow_non_uniform\": false", "\"hidden_channels\": [0,1,2,", "\"kept_tokens\": [1,2,5]", "\"layers\": [",
            "\"teacher_layer\": 0", "\"kv_heads\": [1]", "\"query_heads\": [5,7]", "\"neurons\": [0,2,4,6]"];
        int at = 0;
        foreach (string key in keys)
        {
            int found = text.IndexOf(key, at, StringComparison.Ordinal);
            Assert.That(found, Is.GreaterThanOrEqualTo(0), $"'{key}' after offset {at} in{Environment.NewLine}{text}");
            at = found;
        }

        Assert.That(text, Does.Contain("\"num_attention_heads\": 8"), "the teacher is embedded as its config.json object");
        Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1), "no temp file is left behind");
    }

    [Test]
    public void Loading_an_invalid_plan_names_the_file_and_the_field()
    {
        string path = Path.Combine(_dir, "bad.json");
        string json = Explicit().ToJson().Replace("\"query_heads\": [5,7]", "\"query_heads\": [5,40]", StringComparison.Ordinal);
        File.WriteAllText(path, json);
        var ex = Assert.Throws<InvalidDataException>(() => SurgeryPlan.Load(path));
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("layers[0].query_heads[1]: index 40 out of range 0..7"));

        File.WriteAllText(path, "{\"format_version\": 1, \"layers\": 3}");
        var parse = Assert.Throws<InvalidDataException>(() => SurgeryPlan.Load(path));
        Assert.That(parse!.Message, Does.Contain(path));
    }

    [Test]
    public void A_saved_plan_can_be_edited_with_with_and_revalidated()
    {
        string path = Path.Combine(_dir, "plan.json");
        Explicit().Save(path);
        SurgeryPlan loaded = SurgeryPlan.Load(path);

        SurgeryPlan edited = loaded with { HiddenChannels = [.. loaded.HiddenChannels.Take(16)] };
        Assert.That(edited.Validate(), Is.Empty);
        Assert.That(edited.Student.HiddenSize, Is.EqualTo(16));

        SurgeryPlan broken = loaded with { Layers = [loaded.Layers[0] with { KvHeads = [0] }, loaded.Layers[1]] };
        Assert.That(broken.Validate().Select(e => e.Field), Does.Contain("layers[0].query_heads[0]"));
        Assert.Throws<InvalidDataException>(() => broken.Save(path));
        Assert.That(SurgeryPlan.Load(path), Is.EqualTo(loaded), "a failed save leaves the file untouched");
    }
}
