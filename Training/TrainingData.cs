using ModelSurgery.Training.Data;

namespace ModelSurgery.Training;

/// <summary>The data of a training run.</summary>
/// <param name="File">The token file.</param>
/// <param name="TrainWindows">Training window indices.</param>
/// <param name="ValidationWindows">Validation window indices (may be empty: no evaluation).</param>
/// <param name="ShuffleTrain">Shuffle training windows each epoch; false trains on them in the given order.</param>
public sealed record TrainingData(TokenFile File, IReadOnlyList<long> TrainWindows, IReadOnlyList<long> ValidationWindows, bool ShuffleTrain = true);
