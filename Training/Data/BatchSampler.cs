using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Training.Data;

/// <summary>Where a <see cref="BatchSampler"/> stands; enough to continue the exact same sequence of batches.</summary>
/// <param name="Epoch">Passes completed over the windows.</param>
/// <param name="Position">Windows consumed in the current epoch.</param>
/// <param name="Seed">The shuffle seed (each epoch's permutation is derived from it and the epoch number).</param>
public sealed record BatchSamplerState(long Epoch, long Position, ulong Seed);

/// <summary>One batch of training windows.</summary>
/// <param name="Tokens">[B, T+1] int64 token ids; inputs are [:, :-1], targets [:, 1:].</param>
/// <param name="Windows">The window index of each row (used e.g. to look up cached teacher logits).</param>
public sealed record TrainingBatch(Tensor Tokens, IReadOnlyList<long> Windows)
{
    /// <summary>Inputs [B, T].</summary>
    public Tensor Inputs => Tokens[.., ..^1];

    /// <summary>Next-token targets [B, T].</summary>
    public Tensor Targets => Tokens[.., 1..];
}

/// <summary>
/// Draws batches of [B, T+1] windows from a token file. With shuffling, every epoch visits the windows in a new
/// permutation derived from the seed and the epoch number; without it, in the given order. A partial last batch of an
/// epoch is dropped. <see cref="State"/> and <see cref="Restore"/> make the sequence resumable exactly.
/// </summary>
public sealed class BatchSampler
{
    private readonly TokenFile _file;
    private readonly long[] _windows;
    private long[] _order;
    private long _epoch;
    private long _position;

    /// <summary>Creates a sampler.</summary>
    /// <param name="file">The token file.</param>
    /// <param name="windows">Window indices to draw from (e.g. <see cref="DatasetSplit.Train"/>).</param>
    /// <param name="batchSize">Rows per batch (B).</param>
    /// <param name="seqLen">Inputs per row (T).</param>
    /// <param name="seed">Shuffle seed.</param>
    /// <param name="shuffle">Shuffle each epoch; false keeps the given order (validation, fixed round batches).</param>
    public BatchSampler(TokenFile file, IReadOnlyList<long> windows, int batchSize, int seqLen, ulong seed, bool shuffle = true)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(windows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(seqLen);
        long available = TokenWindows.Count(file.Count, seqLen);
        foreach (long w in windows)
        {
            if (w < 0 || w >= available)
            {
                throw new ArgumentException($"Window {w} is outside token file '{file.Path}', which has {available} windows of {seqLen} tokens.", nameof(windows));
            }
        }

        if (windows.Count < batchSize)
        {
            throw new ArgumentException($"{windows.Count} windows of {seqLen} tokens in '{file.Path}' do not fill one batch of {batchSize}.", nameof(windows));
        }

        _file = file;
        _windows = [.. windows];
        BatchSize = batchSize;
        SeqLen = seqLen;
        Seed = seed;
        Shuffle = shuffle;
        _order = OrderFor(0);
    }

    /// <summary>Rows per batch (B).</summary>
    public int BatchSize { get; }

    /// <summary>Inputs per row (T).</summary>
    public int SeqLen { get; }

    /// <summary>Shuffle seed.</summary>
    public ulong Seed { get; }

    /// <summary>Whether each epoch is shuffled.</summary>
    public bool Shuffle { get; }

    /// <summary>Full batches per epoch.</summary>
    public long BatchesPerEpoch => _windows.Length / BatchSize;

    /// <summary>The cursor: epoch, position and seed.</summary>
    public BatchSamplerState State => new(_epoch, _position, Seed);

    /// <summary>Moves the cursor to a saved state.</summary>
    /// <param name="state">A state from <see cref="State"/> of a sampler over the same windows.</param>
    public void Restore(BatchSamplerState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.Seed != Seed || state.Position < 0 || state.Position > _windows.Length || state.Epoch < 0)
        {
            throw new ArgumentException($"Sampler state (epoch {state.Epoch}, position {state.Position}, seed {state.Seed}) does not fit this sampler (seed {Seed}, {_windows.Length} windows).", nameof(state));
        }

        _epoch = state.Epoch;
        _position = state.Position;
        _order = OrderFor(_epoch);
    }

    /// <summary>Draws the next batch, starting a new epoch when the current one cannot fill it.</summary>
    /// <param name="device">Device for the tokens (the model's device); CPU when null.</param>
    /// <returns>The batch; its tensor belongs to the caller's dispose scope.</returns>
    public TrainingBatch Next(Device? device = null)
    {
        if (_position + BatchSize > _windows.Length)
        {
            _epoch++;
            _position = 0;
            _order = OrderFor(_epoch);
        }

        var windows = new long[BatchSize];
        var data = new long[BatchSize * (SeqLen + 1)];
        for (int row = 0; row < BatchSize; row++)
        {
            windows[row] = _order[_position + row];
            _file.Read(TokenWindows.Start(windows[row], SeqLen), data.AsSpan(row * (SeqLen + 1), SeqLen + 1));
        }

        _position += BatchSize;
        Tensor tokens = torch.tensor(data, [BatchSize, SeqLen + 1], ScalarType.Int64); // [B, T+1]
        if (device is not null && device.type != DeviceType.CPU)
        {
            using Tensor host = tokens;
            tokens = host.to(device);
        }

        return new TrainingBatch(tokens, windows);
    }

    private long[] OrderFor(long epoch)
    {
        long[] order = [.. _windows];
        if (Shuffle)
        {
            new DeterministicRandom(DeterministicRandom.Derive(Seed, (ulong)epoch)).Shuffle(order.AsSpan());
        }

        return order;
    }
}
