using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Modeling;

/// <summary>
/// The boolean attention masks of one forward pass, built once per shape and window and shared by every decoder layer
/// that needs the same one (true = may attend). A chunk of T new tokens whose keys cover S positions holds the last T of
/// them: query i sits at position S - T + i and attends key j when <c>j &lt;= S - T + i</c> and, in a layer with window
/// W, <c>j &gt; S - T + i - W</c> (transformers' <c>causal_mask_function</c> and <c>sliding_window_overlay</c>). Only
/// relative positions matter, so the same mask serves any absolute offset of the chunk.
/// </summary>
/// <remarks>
/// The masks live outside any dispose scope (a layer's scope must not free a mask the next layer reuses); dispose this
/// object when the forward pass is done. Layers called without one build their mask in their own scope.
/// </remarks>
public sealed class AttentionMasks : IDisposable
{
    private readonly Dictionary<(long Queries, long Keys, int? Window, DeviceType Type, int Index), Tensor> _masks = [];

    /// <summary>Masks built so far (each distinct shape and window once).</summary>
    public int Count => _masks.Count;

    /// <summary>
    /// The mask [T, S] of <paramref name="queryLength"/> queries over <paramref name="keyLength"/> keys with
    /// <paramref name="window"/> (null = full causal attention), built on first use. Owned by this object: do not dispose it.
    /// </summary>
    public Tensor Get(long queryLength, long keyLength, int? window, Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var key = (queryLength, keyLength, window, device.type, device.index);
        if (!_masks.TryGetValue(key, out Tensor? mask))
        {
            mask = Build(queryLength, keyLength, window, device).DetachFromDisposeScope();
            _masks[key] = mask;
        }

        return mask;
    }

    /// <summary>Builds the mask [T, S] described by <see cref="Get"/> in the current dispose scope.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The lengths are not 1 &lt;= T &lt;= S, or the window is not positive.</exception>
    public static Tensor Build(long queryLength, long keyLength, int? window, Device device)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(queryLength);
        ArgumentOutOfRangeException.ThrowIfLessThan(keyLength, queryLength);
        if (window is <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(window), window, "An attention window must be positive.");
        }

        using var scope = NewDisposeScope();
        Tensor keyPositions = torch.arange(keyLength, device: device).unsqueeze(0); // [1, S]
        Tensor queryPositions = torch.arange(keyLength - queryLength, keyLength, device: device).unsqueeze(1); // [T, 1]
        Tensor allowed = keyPositions.le(queryPositions); // [T, S]
        if (window is int w)
        {
            allowed = allowed.logical_and(keyPositions.gt(queryPositions - w)); // [T, S]
        }

        return allowed.MoveToOuterDisposeScope(); // [T, S]
    }

    /// <summary>Frees every mask.</summary>
    public void Dispose()
    {
        foreach (Tensor mask in _masks.Values)
        {
            mask.Dispose();
        }

        _masks.Clear();
    }
}
