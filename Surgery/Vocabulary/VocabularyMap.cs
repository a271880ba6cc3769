using System.Text.Json;
using System.Text.Json.Serialization;
using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Surgery.Vocabulary;

/// <summary>
/// How a compressed vocabulary relates to the original: new id i is old id <c>KeptOldIds[i]</c>. Kept ids keep their
/// original relative order, so special tokens keep their relative positions. Saved as <c>vocab_map.json</c>.
/// </summary>
public sealed record VocabularyMap
{
    private readonly int[] _oldToNew;

    /// <summary>Creates a map and checks it.</summary>
    /// <param name="keptOldIds">Old ids in new-id order; distinct and within <paramref name="oldVocabSize"/>.</param>
    /// <param name="oldVocabSize">Size of the original vocabulary (ids 0..size-1).</param>
    /// <exception cref="ArgumentException">An id is out of range or repeated.</exception>
    [JsonConstructor]
    public VocabularyMap(IReadOnlyList<int> keptOldIds, int oldVocabSize)
    {
        ArgumentNullException.ThrowIfNull(keptOldIds);
        var seen = new HashSet<int>();
        foreach (int id in keptOldIds)
        {
            if (id < 0 || id >= oldVocabSize || !seen.Add(id))
            {
                throw new ArgumentException($"Kept id {id} is outside 0..{oldVocabSize - 1} or repeated.", nameof(keptOldIds));
            }
        }

        KeptOldIds = [.. keptOldIds];
        OldVocabSize = oldVocabSize;
        _oldToNew = new int[oldVocabSize];
        Array.Fill(_oldToNew, -1);
        for (int i = 0; i < KeptOldIds.Count; i++)
        {
            _oldToNew[KeptOldIds[i]] = i;
        }
    }

    /// <summary>Old ids in new-id order.</summary>
    [JsonPropertyName("kept_old_ids")]
    public IReadOnlyList<int> KeptOldIds { get; }

    /// <summary>Size of the original vocabulary.</summary>
    [JsonPropertyName("old_vocab_size")]
    public int OldVocabSize { get; }

    /// <summary>Size of the compressed vocabulary.</summary>
    [JsonPropertyName("new_vocab_size")]
    public int NewVocabSize => KeptOldIds.Count;

    /// <summary>The new id of <paramref name="oldId"/>, or null when it was removed.</summary>
    public int? NewId(int oldId) => oldId >= 0 && oldId < _oldToNew.Length && _oldToNew[oldId] >= 0 ? _oldToNew[oldId] : null;

    /// <summary>The old id of <paramref name="newId"/>.</summary>
    public int OldId(int newId) => KeptOldIds[newId];

    /// <summary>The keep-everything map (identity), useful as a baseline.</summary>
    public static VocabularyMap Identity(int vocabSize) => new(Enumerable.Range(0, vocabSize).ToArray(), vocabSize);

    /// <summary>
    /// The rows of an embedding or LM-head matrix for the kept ids, in new-id order, padded with zero rows up to a
    /// multiple of <paramref name="padToMultiple"/> (padding ids are never produced by the tokenizer).
    /// </summary>
    /// <param name="weight">[V_old_or_more, D] matrix; it may have more rows than the tokenizer (padded checkpoints).</param>
    /// <param name="padToMultiple">Row count multiple (1 = no padding).</param>
    /// <returns>[V_new_padded, D], same dtype and device as <paramref name="weight"/>.</returns>
    /// <exception cref="ArgumentException">The matrix is not 2-D or has fewer rows than the largest kept id needs.</exception>
    public Tensor SelectRows(Tensor weight, int padToMultiple = 1)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.dim() != 2)
        {
            throw new ArgumentException($"Expected a 2-D [vocab, hidden] matrix, got shape [{string.Join(", ", weight.shape)}].", nameof(weight));
        }

        int maxId = KeptOldIds.Count == 0 ? -1 : KeptOldIds.Max();
        if (weight.shape[0] <= maxId)
        {
            throw new ArgumentException($"The matrix has {weight.shape[0]} rows but kept id {maxId} needs at least {maxId + 1}.", nameof(weight));
        }

        using var scope = NewDisposeScope();
        using Tensor index = tensor(KeptOldIds.Select(i => (long)i).ToArray(), dtype: ScalarType.Int64, device: weight.device); // [V_new]
        Tensor rows = weight.index_select(0, index); // [V_new, D]
        int padded = PaddedSize(padToMultiple);
        if (padded > NewVocabSize)
        {
            Tensor padding = zeros([padded - NewVocabSize, weight.shape[1]], dtype: weight.dtype, device: weight.device); // [P, D]
            rows = cat([rows, padding], 0); // [V_new_padded, D]
        }

        return rows.MoveToOuterDisposeScope();
    }

    /// <summary>The vocabulary size after padding up to a multiple of <paramref name="padToMultiple"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="padToMultiple"/> is not positive.</exception>
    public int PaddedSize(int padToMultiple = 1)
    {
        if (padToMultiple < 1)
        {
            throw new ArgumentException($"padToMultiple must be at least 1, got {padToMultiple}.", nameof(padToMultiple));
        }

        return (NewVocabSize + padToMultiple - 1) / padToMultiple * padToMultiple;
    }

    /// <summary>
    /// The config for the compressed vocabulary: vocab_size (padded as in <see cref="SelectRows"/>) and bos/eos/pad
    /// ids renumbered.
    /// </summary>
    /// <exception cref="ArgumentException">bos_token_id, eos_token_id or pad_token_id refers to a removed token.</exception>
    public LlamaConfig UpdateConfig(LlamaConfig config, int padToMultiple = 1)
    {
        ArgumentNullException.ThrowIfNull(config);
        int Remap(int id, string key) => NewId(id) ?? throw new ArgumentException($"{key} {id} refers to a token removed from the vocabulary.", nameof(config));
        return config with
        {
            VocabSize = PaddedSize(padToMultiple),
            BosTokenId = config.BosTokenId is int bos ? Remap(bos, "bos_token_id") : null,
            EosTokenIds = [.. config.EosTokenIds.Select(e => Remap(e, "eos_token_id"))],
            PadTokenId = config.PadTokenId is int pad ? Remap(pad, "pad_token_id") : null,
        };
    }

    /// <summary>The map as JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Writes <c>vocab_map.json</c> atomically.</summary>
    public void Save(string path) => AtomicFile.WriteAllText(path, ToJson());

    /// <summary>Reads a map written by <see cref="Save"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid map; the message names it.</exception>
    public static VocabularyMap Load(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<VocabularyMap>(File.ReadAllText(path), JsonOptions)
                ?? throw new InvalidDataException($"{path}: empty vocabulary map.");
        }
        catch (Exception e) when (e is JsonException or ArgumentException)
        {
            throw new InvalidDataException($"{path}: not a valid vocabulary map ({e.Message}).", e);
        }
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = false };
}
