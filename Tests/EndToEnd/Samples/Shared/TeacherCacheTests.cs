using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Samples;
using ModelSurgery.Tests.Checkpoints;
using ModelSurgery.Tests.Modeling;
using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.Recipes;

namespace ModelSurgery.Tests.Training;

public sealed class TeacherCacheTests
{
    private const int Vocab = 32;

    private static TrainingOptions Options(string outputDir, long steps = 4) => new()
    {
        LearningRate = 1e-2,
        BatchSize = 2,
        SeqLen = 8,
        Steps = steps,
        EvalEvery = 2,
        EvalBatches = 1,
        Seed = 5,
        OutputDir = outputDir,
        CheckpointEvery = 0,
    };

    private static LlamaConfig Config() => TinyModels.Config() with { VocabSize = Vocab, MaxPositionEmbeddings = 8 };

    [Test]
    public async Task Trains_once_then_reuses_the_cached_teacher_until_something_that_decides_it_changes()
    {
        using var directory = new TempDirectory();
        using TokenFile file = TokenFile.Open(TrainingTestData.WritePatternFile(directory.Path, Vocab, documents: 12, documentLength: 20));
        long windows = TokenWindows.Count(file.Count, 8);
        var data = new TrainingData(file, [.. Enumerable.Range(0, (int)windows - 4).Select(w => (long)w)], [.. Enumerable.Range((int)windows - 4, 4).Select(w => (long)w)]);
        string teacherDir = Path.Combine(directory.Path, "teacher");

        CachedTeacher first = await TeacherCache.EnsureAsync(teacherDir, Config(), Options(Path.Combine(directory.Path, "run-1")), data, ["vocabulary v1"]);
        CachedTeacher second = await TeacherCache.EnsureAsync(teacherDir, Config(), Options(Path.Combine(directory.Path, "run-2")), data, ["vocabulary v1"]);

        Assert.That(first.FromCache, Is.False);
        Assert.That(first.History, Has.Count.EqualTo(4));
        Assert.That(first.Evaluations.Select(e => e.Step), Is.EqualTo(new long[] { 2, 4 }));
        Assert.That(File.Exists(Path.Combine(teacherDir, TeacherCache.ManifestFileName)));
        Assert.That(second.FromCache, Is.True, "another output folder does not change the model");
        Assert.That(second.History, Is.EqualTo(first.History));
        Assert.That(second.Evaluations, Is.EqualTo(first.Evaluations));
        Assert.That(second.FinalValidationLoss, Is.EqualTo(first.Evaluations[^1].ValidationLoss));
        Assert.That(second.TrainSeconds, Is.EqualTo(first.TrainSeconds).Within(1e-9));

        // The saved checkpoint is the trained model: its validation loss is what the record says.
        using (LlamaForCausalLM loaded = ModelCheckpoint.Load(teacherDir))
        {
            Assert.That(loaded.Config.VocabSize, Is.EqualTo(Vocab));
        }

        Assert.That((await TeacherCache.EnsureAsync(teacherDir, Config(), Options(directory.Path, steps: 6), data, ["vocabulary v1"])).FromCache, Is.False, "a longer budget retrains");
        Assert.That((await TeacherCache.EnsureAsync(teacherDir, Config(), Options(directory.Path, steps: 6), data, ["vocabulary v2"])).FromCache, Is.False, "other data retrains");
        Assert.That((await TeacherCache.EnsureAsync(teacherDir, Config(), Options(directory.Path, steps: 6), data, ["vocabulary v2"], fresh: true)).FromCache, Is.False, "fresh retrains");
        Assert.That((await TeacherCache.EnsureAsync(teacherDir, Config(), Options(directory.Path, steps: 6), data, ["vocabulary v2"])).FromCache, Is.True);
    }

    [Test]
    public void Fingerprint_covers_architecture_options_and_data_but_not_the_output_folder()
    {
        string baseline = TeacherCache.Fingerprint(Config(), Options("a"), "data");
        Assert.That(TeacherCache.Fingerprint(Config(), Options("b"), "data"), Is.EqualTo(baseline));
        Assert.That(TeacherCache.Fingerprint(Config() with { IntermediateSize = 96 }, Options("a"), "data"), Is.Not.EqualTo(baseline));
        Assert.That(TeacherCache.Fingerprint(Config(), Options("a") with { Seed = 6 }, "data"), Is.Not.EqualTo(baseline));
        Assert.That(TeacherCache.Fingerprint(Config(), Options("a"), "other data"), Is.Not.EqualTo(baseline));
        Assert.That(baseline, Has.Length.EqualTo(64));
    }

    [Test]
    public void A_broken_manifest_is_reported_with_its_path()
    {
        using var directory = new TempDirectory();
        File.WriteAllText(directory.File("config.json"), "{}");
        File.WriteAllText(directory.File(TeacherCache.ManifestFileName), "[1, 2");
        Assert.That(() => TeacherCache.TryLoad(directory.Path, "x"), Throws.InstanceOf<InvalidDataException>().With.Message.Contains(TeacherCache.ManifestFileName));
        Assert.That(TeacherCache.TryLoad(Path.Combine(directory.Path, "missing"), "x"), Is.Null);
    }
}
