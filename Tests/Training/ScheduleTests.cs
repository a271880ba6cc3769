using ModelSurgery.Training;

namespace ModelSurgery.Tests.Training;

public sealed class ScheduleTests
{
    [Test]
    public void Cosine_schedule_warms_up_peaks_and_decays_to_the_minimum()
    {
        // 100 steps, 3% warmup = 3 steps: lr = 1e-3 * (s + 1) / 3 for s < 3, then a cosine from step 3 (peak) to step 99 (min).
        var schedule = LearningRateSchedule.For(new TrainingOptions { LearningRate = 1e-3, MinLearningRate = 1e-5, Steps = 100 }, 100);
        Assert.Multiple(() =>
        {
            Assert.That(schedule.WarmupSteps, Is.EqualTo(3));
            Assert.That(schedule.At(0), Is.EqualTo(1e-3 / 3).Within(1e-15));
            Assert.That(schedule.At(2), Is.EqualTo(1e-3).Within(1e-15), "warmup ends at the peak");
            Assert.That(schedule.At(3), Is.EqualTo(1e-3).Within(1e-15));
            // Middle of the cosine: (51 - 3) / (99 - 3) = 0.5, so lr = min + (peak - min) / 2.
            Assert.That(schedule.At(51), Is.EqualTo(1e-5 + ((1e-3 - 1e-5) / 2)).Within(1e-15));
            Assert.That(schedule.At(99), Is.EqualTo(1e-5).Within(1e-15));
            Assert.That(schedule.At(60), Is.LessThan(schedule.At(50)));
        });
    }

    [Test]
    public void Learning_rate_scales_with_the_square_root_of_the_batch_size()
    {
        Assert.Multiple(() =>
        {
            Assert.That(LearningRateScaling.ScaleForBatch(3e-4, 256, 1024), Is.EqualTo(6e-4).Within(1e-18));
            Assert.That(LearningRateScaling.ScaleForBatch(3e-4, 256, 64), Is.EqualTo(1.5e-4).Within(1e-18));
            Assert.That(() => LearningRateScaling.ScaleForBatch(3e-4, 0, 64), Throws.TypeOf<ArgumentOutOfRangeException>());
        });
    }

    [Test]
    public void Options_name_the_bad_setting_and_derive_steps_from_tokens()
    {
        Assert.Multiple(() =>
        {
            Assert.That(() => new TrainingOptions { Steps = 10, GradAccumulation = 0 }.Validate(), Throws.ArgumentException.With.Message.Contains("GradAccumulation"));
            Assert.That(() => new TrainingOptions().Validate(), Throws.ArgumentException.With.Message.Contains("Steps"));
            Assert.That(new TrainingOptions { Tokens = 1000, BatchSize = 2, SeqLen = 10, GradAccumulation = 3 }.TotalSteps(), Is.EqualTo(17), "ceil(1000 / 60)");
            var defaults = new TrainingOptions();
            Assert.That((defaults.Beta1, defaults.Beta2, defaults.WeightDecay, defaults.GradClip, defaults.WarmupFraction, defaults.MinLearningRate), Is.EqualTo((0.9, 0.95, 0.1, 1.0, 0.03, 1e-5)));
        });
    }

    [Test]
    public void Norms_and_biases_are_excluded_from_weight_decay()
    {
        string[] names =
        [
            "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.bias",
            "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight", "model.norm.weight",
            "lm_head.weight", "model.layers.0.mlp.down_proj.weight",
        ];
        string[] excluded =
        [
            "model.layers.0.self_attn.q_proj.bias", "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight", "model.norm.weight",
        ];
        Assert.That(names.Where(WeightDecayGroups.IsExcluded), Is.EqualTo(excluded));

        using var model = new TinyCausalLm(8, 4, 1);
        var (decay, noDecay) = WeightDecayGroups.Split(model.named_parameters().Select(p => (p.name, p.parameter)));
        string[] decayed = ["embed_tokens.weight", "mix.weight", "lm_head.weight"];
        string[] undecayed = ["mix.bias", "norm.weight", "norm.bias"];
        Assert.Multiple(() =>
        {
            Assert.That(decay.Select(p => p.Name), Is.EqualTo(decayed));
            Assert.That(noDecay.Select(p => p.Name), Is.EqualTo(undecayed));
        });
    }
}
