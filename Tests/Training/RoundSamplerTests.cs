using ModelSurgery.Training;
using ModelSurgery.Training.Data;
using ModelSurgery.Training.MultiRound;

namespace ModelSurgery.Tests.Training;

public sealed class RoundSamplerTests
{
    [Test]
    public void Single_draws_follow_exp_of_the_loss()
    {
        // Losses [0, ln 2, ln 4]: weights 1, 2, 4, so probabilities 1/7, 2/7, 4/7. With 20000 draws the standard error
        // of each frequency is below 0.0035; the tolerance 0.02 is more than five of them.
        double[] losses = [0, Math.Log(2), Math.Log(4)];
        var random = new DeterministicRandom(42);
        var counts = new int[3];
        const int Draws = 20000;
        for (int i = 0; i < Draws; i++)
        {
            counts[RoundSampler.Sample(losses, 1, random)[0]]++;
        }

        Assert.Multiple(() =>
        {
            Assert.That(counts[0] / (double)Draws, Is.EqualTo(1.0 / 7).Within(0.02));
            Assert.That(counts[1] / (double)Draws, Is.EqualTo(2.0 / 7).Within(0.02));
            Assert.That(counts[2] / (double)Draws, Is.EqualTo(4.0 / 7).Within(0.02));
        });
    }

    [Test]
    public void Draws_are_without_replacement_and_the_second_draw_follows_the_remaining_weights()
    {
        // P(first = 2, second = 1) = 4/7 * 2/3 = 8/21 under sequential sampling without replacement.
        double[] losses = [0, Math.Log(2), Math.Log(4)];
        var random = new DeterministicRandom(7);
        int pair21 = 0;
        const int Draws = 20000;
        for (int i = 0; i < Draws; i++)
        {
            int[] drawn = RoundSampler.Sample(losses, 2, random);
            Assert.That(drawn, Is.Unique);
            pair21 += drawn[0] == 2 && drawn[1] == 1 ? 1 : 0;
        }

        Assert.That(pair21 / (double)Draws, Is.EqualTo(8.0 / 21).Within(0.02));
    }

    [Test]
    public void Large_losses_are_handled_stably_and_all_can_be_drawn()
    {
        double[] losses = [1000, 1001, 1002, 999];
        int[] all = RoundSampler.Sample(losses, 4, new DeterministicRandom(1));
        int[] once = RoundSampler.Sample(losses, 2, new DeterministicRandom(5));
        int[] again = RoundSampler.Sample(losses, 2, new DeterministicRandom(5));
        Assert.Multiple(() =>
        {
            Assert.That(all.Order(), Is.EqualTo(Enumerable.Range(0, 4)));
            Assert.That(once, Is.EqualTo(again), "same seed, same draw");
            Assert.That(() => RoundSampler.Sample([1, double.NaN], 1, new DeterministicRandom(1)), Throws.ArgumentException.With.Message.Contains("batch 1"));
            Assert.That(RoundSampler.CountFor(9, 0.5), Is.EqualTo(4));
            Assert.That(RoundSampler.CountFor(1, 0.5), Is.EqualTo(1));
        });
    }

    [Test]
    public async Task Multi_round_training_rescans_samples_and_audits()
    {
        string dir = Directory.CreateTempSubdirectory("rounds").FullName;
        try
        {
            using TokenFile file = TokenFile.Open(TrainingTestData.WritePatternFile(dir, 16, 20, 40));
            DatasetSplit split = DatasetSplit.ByChunk(TokenWindows.Count(file.Count, 8), 0.1, 1);
            using var model = new TinyCausalLm(16, 8, seed: 1);
            var options = new TrainingOptions { LearningRate = 1e-2, BatchSize = 4, SeqLen = 8, EvalEvery = 0, Steps = 1, OutputDir = Path.Combine(dir, "out") };
            var trainer = new MultiRoundTrainer(model, options, new MultiRoundOptions(Rounds: 3, Ratio: 0.5));

            IReadOnlyList<RoundResult> rounds = await trainer.RunAsync(new TrainingData(file, split.Train, split.Validation));

            int n = split.Train.Count / 4;
            string[] audit = File.ReadAllLines(trainer.AuditPath);
            Assert.Multiple(() =>
            {
                Assert.That(rounds.Select(r => r.Batches.Count), Is.EqualTo(new[] { n, RoundSampler.CountFor(n, 0.5), RoundSampler.CountFor(n, 0.5) }));
                Assert.That(rounds[0].Batches, Is.EqualTo(Enumerable.Range(0, n)));
                Assert.That(rounds[1].Batches, Is.Unique);
                Assert.That(rounds.Select(r => r.Result.Steps), Is.EqualTo(rounds.Select(r => (long)r.Batches.Count)));
                Assert.That(audit, Has.Length.EqualTo(2 * n), "every batch is logged in each of the two scans");
                Assert.That(audit.Count(l => l.Contains("\"selected\":true", StringComparison.Ordinal)), Is.EqualTo(2 * RoundSampler.CountFor(n, 0.5)));
                Assert.That(audit[0], Does.StartWith("{\"round\":2,\"batch\":0,\"loss\":"));
                Assert.That(Directory.Exists(Path.Combine(dir, "out", "round-3")));
                Assert.That(rounds[2].Result.BestValidationLoss, Is.LessThan(rounds[0].Result.History[0].Loss));
            });
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
