using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using TorchSharp;

namespace ModelSurgery.Inference.Checkpoints;

/// <summary>One file of a checkpoint.</summary>
/// <param name="Path">Full path of the safetensors file.</param>
/// <param name="ByteSize">Size of the file in bytes.</param>
public sealed record CheckpointShard(string Path, long ByteSize);

/// <summary>
/// Reads a Hugging Face safetensors checkpoint: a directory holding <c>model.safetensors</c> or shards listed in
/// <c>model.safetensors.index.json</c>, or a single <c>.safetensors</c> file. Opening reads and validates only the headers;
/// tensors are read on demand by name and routed to their shard. Reads are thread-safe.
/// </summary>
public sealed class CheckpointReader : IDisposable
{
    /// <summary>File name of a single-file checkpoint.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>File name of the index of a sharded checkpoint.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly SafetensorsFile[] _files;
    private readonly Dictionary<string, SafetensorsFile> _fileByTensor;

    private CheckpointReader(string location, SafetensorsFile[] files, Dictionary<string, SafetensorsFile> fileByTensor)
    {
        Location = location;
        _files = files;
        _fileByTensor = fileByTensor;
        TensorNames = files.SelectMany(f => f.TensorNames).ToArray();
        Shards = files.Select(f => new CheckpointShard(f.Path, f.FileLength)).ToArray();
        TotalTensorBytes = files.Sum(f => f.TotalTensorBytes);
        Metadata = files.Length > 0 ? files[0].Metadata : new Dictionary<string, string>();
    }

    /// <summary>The directory or file the checkpoint was opened from.</summary>
    public string Location { get; }

    /// <summary>Every tensor name: shard by shard, in the order of their data.</summary>
    public IReadOnlyList<string> TensorNames { get; }

    /// <summary>The safetensors files, in shard order.</summary>
    public IReadOnlyList<CheckpointShard> Shards { get; }

    /// <summary>Bytes copied out to callers so far, over all shards (<see cref="SafetensorsFile.BytesNeeded"/>).</summary>
    public long BytesNeeded => _files.Sum(f => f.BytesNeeded);

    /// <summary>Whole-page bytes asked of storage so far, over all shards (<see cref="SafetensorsFile.BytesFetched"/>).</summary>
    public long BytesFetched => _files.Sum(f => f.BytesFetched);

    /// <summary>Sum of the byte lengths of all tensors.</summary>
    public long TotalTensorBytes { get; }

    /// <summary>The <c>__metadata__</c> map of the first shard (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>
    /// Opens a checkpoint directory (<c>model.safetensors.index.json</c> first, else <c>model.safetensors</c>) or a single
    /// <c>.safetensors</c> file, validating every header and, for a sharded checkpoint, the index against the shards.
    /// </summary>
    /// <exception cref="FileNotFoundException">Neither a checkpoint file nor a directory holding one.</exception>
    /// <exception cref="InvalidDataException">A header or the index breaks a rule; the message names the file and the rule.</exception>
    public static CheckpointReader Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = System.IO.Path.GetFullPath(path);
        if (File.Exists(full))
        {
            return FromFiles(full, [full], null);
        }

        if (!Directory.Exists(full))
        {
            throw new FileNotFoundException($"Checkpoint '{path}' does not exist.", full);
        }

        string index = System.IO.Path.Combine(full, IndexFileName);
        if (File.Exists(index))
        {
            return OpenSharded(full, index);
        }

        string single = System.IO.Path.Combine(full, SingleFileName);
        if (File.Exists(single))
        {
            return FromFiles(full, [single], null);
        }

        throw new FileNotFoundException(
            $"Checkpoint directory '{path}' holds neither {IndexFileName} nor {SingleFileName}.", single);
    }

    /// <summary>Whether the checkpoint holds a tensor called <paramref name="name"/>.</summary>
    public bool Contains(string name) => _fileByTensor.ContainsKey(name);

    /// <summary>The header entry of <paramref name="name"/>, if present.</summary>
    public bool TryGetInfo(string name, [MaybeNullWhen(false)] out SafetensorsTensorInfo info)
    {
        info = null;
        return _fileByTensor.TryGetValue(name, out var file) && file.TryGetInfo(name, out info);
    }

    /// <summary>The header entry of <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    public SafetensorsTensorInfo GetInfo(string name) => FileOf(name).GetInfo(name);

    /// <summary>Path of the shard that holds <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    public string ShardOf(string name) => FileOf(name).Path;

    /// <inheritdoc cref="SafetensorsFile.ReadTensor"/>
    public torch.Tensor ReadTensor(string name) => Finite(name, FileOf(name).ReadTensor(name));

    /// <summary>
    /// Reads a whole tensor into <paramref name="destination"/>, a contiguous CPU tensor of the stored dtype and shape (a
    /// model's parameter, say), with no tensor in between, and checks its values as <see cref="ReadTensor"/> does.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is not on the CPU, not contiguous, or of another dtype or shape.</exception>
    /// <exception cref="InvalidDataException">The tensor holds NaN or infinite values; <paramref name="destination"/> then holds them too.</exception>
    public void ReadTensorInto(string name, torch.Tensor destination)
    {
        FileOf(name).ReadTensorInto(name, destination);
        if (!TensorChecks.IsFinite(destination))
        {
            throw NotFinite(name);
        }
    }

    /// <summary>Whether <see cref="ReadTensorInto"/> can fill <paramref name="destination"/> with the tensor <paramref name="name"/>.</summary>
    public bool CanReadInto(string name, torch.Tensor destination)
    {
        ArgumentNullException.ThrowIfNull(destination);
        return TryGetInfo(name, out var info) && SafetensorsFile.CanReadInto(info, destination);
    }

    /// <inheritdoc cref="SafetensorsFile.ReadSlice"/>
    public torch.Tensor ReadSlice(string name, int dim, long start, long length) => Finite(name, FileOf(name).ReadSlice(name, dim, start, length));

    /// <inheritdoc cref="SafetensorsFile.ReadIndices"/>
    public torch.Tensor ReadIndices(string name, int dim, IReadOnlyList<long> indices) => Finite(name, FileOf(name).ReadIndices(name, dim, indices));

    /// <inheritdoc cref="SafetensorsFile.ReadSubmatrix"/>
    public torch.Tensor ReadSubmatrix(string name, IReadOnlyList<long> rows, IReadOnlyList<long> columns) => Finite(name, FileOf(name).ReadSubmatrix(name, rows, columns));

    /// <inheritdoc cref="SafetensorsFile.ReadRowsInto"/>
    /// <remarks>The values are checked like every read, so the dtype must be one <see cref="TensorChecks.ChecksRawBytes"/> accepts.</remarks>
    /// <exception cref="InvalidDataException">The values read hold NaN or infinity.</exception>
    /// <exception cref="NotSupportedException">The tensor is of an 8-bit float dtype, whose raw values are not checked; nothing is read.</exception>
    public long ReadRowsInto(string name, IReadOnlyList<long> rows, IReadOnlyList<long>? columns, Span<byte> destination)
    {
        SafetensorsFile file = FileOf(name);
        SafetensorsDType dtype = file.GetInfo(name).DType;
        if (!TensorChecks.ChecksRawBytes(dtype))
        {
            throw new NotSupportedException($"{file.Path}: tensor '{name}' is {dtype.ToHeaderString()}, and the raw values of 8-bit float dtypes are not checked, so they are not read this way.");
        }

        long length = file.ReadRowsInto(name, rows, columns, destination);
        if (!TensorChecks.IsFinite(dtype, destination[..(int)length]))
        {
            throw new InvalidDataException($"{file.Path}: tensor '{name}' holds NaN or infinite values; the checkpoint is damaged.");
        }

        return length;
    }

    // Every tensor read through the reader is checked: NaN or infinite weights stop the command that reads them
    // (inference, scoring, building, export) instead of flowing into its results.
    private torch.Tensor Finite(string name, torch.Tensor tensor)
    {
        if (!TensorChecks.IsFinite(tensor))
        {
            tensor.Dispose();
            throw NotFinite(name);
        }

        return tensor;
    }

    private InvalidDataException NotFinite(string name) =>
        new($"{ShardOf(name)}: tensor '{name}' holds NaN or infinite values; the checkpoint is damaged.");

    /// <inheritdoc cref="SafetensorsFile.PrefetchRows"/>
    public void PrefetchRows(string name, IReadOnlyList<long> rows) => FileOf(name).PrefetchRows(name, rows);

    /// <inheritdoc cref="SafetensorsFile.ReadBytes"/>
    public void ReadBytes(string name, long byteOffset, Span<byte> destination) => FileOf(name).ReadBytes(name, byteOffset, destination);

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var file in _files)
        {
            file.Dispose();
        }
    }

    /// <inheritdoc />
    public override string ToString() => $"{Location} ({TensorNames.Count} tensors in {_files.Length} file(s), {TotalTensorBytes} bytes)";

    private SafetensorsFile FileOf(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _fileByTensor.TryGetValue(name, out var file)
            ? file
            : throw new KeyNotFoundException($"Tensor '{name}' is not in checkpoint '{Location}'.");
    }

    private static CheckpointReader OpenSharded(string directory, string indexPath)
    {
        var weightMap = ReadWeightMap(indexPath);
        var shardNames = weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();
        var paths = shardNames.Select(shard => System.IO.Path.Combine(directory, shard)).ToArray();
        foreach (var (shard, shardPath) in shardNames.Zip(paths))
        {
            if (!File.Exists(shardPath))
            {
                throw new InvalidDataException($"Invalid checkpoint index '{indexPath}': shard '{shard}' does not exist.");
            }
        }

        return FromFiles(directory, paths, (indexPath, weightMap));
    }

    private static CheckpointReader FromFiles(string location, string[] paths, (string Path, Dictionary<string, string> Map)? index)
    {
        var files = new List<SafetensorsFile>();
        try
        {
            var fileByTensor = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            foreach (string path in paths)
            {
                var file = SafetensorsFile.Open(path);
                files.Add(file);
                foreach (string name in file.TensorNames)
                {
                    if (!fileByTensor.TryAdd(name, file))
                    {
                        throw new InvalidDataException(
                            $"Invalid checkpoint '{location}': tensor '{name}' appears in both '{fileByTensor[name].Path}' and '{path}'.");
                    }
                }
            }

            if (index is var (indexPath, map))
            {
                CheckIndex(indexPath, map, fileByTensor);
            }

            return new CheckpointReader(location, files.ToArray(), fileByTensor);
        }
        catch
        {
            foreach (var file in files)
            {
                file.Dispose();
            }

            throw;
        }
    }

    /// <summary>The index and the shards must agree exactly: every mapped tensor is in its shard, every shard tensor is mapped there.</summary>
    private static void CheckIndex(string indexPath, Dictionary<string, string> map, Dictionary<string, SafetensorsFile> fileByTensor)
    {
        foreach (var (name, shard) in map)
        {
            if (!fileByTensor.TryGetValue(name, out var file))
            {
                throw new InvalidDataException($"Invalid checkpoint index '{indexPath}': weight_map maps tensor '{name}' to shard '{shard}', which does not hold it.");
            }

            string actual = System.IO.Path.GetFileName(file.Path);
            if (actual != shard)
            {
                throw new InvalidDataException($"Invalid checkpoint index '{indexPath}': weight_map maps tensor '{name}' to shard '{shard}', but it is in shard '{actual}'.");
            }
        }

        foreach (var (name, file) in fileByTensor)
        {
            if (!map.ContainsKey(name))
            {
                throw new InvalidDataException(
                    $"Invalid checkpoint index '{indexPath}': tensor '{name}' of shard '{System.IO.Path.GetFileName(file.Path)}' is missing from weight_map.");
            }
        }
    }

    private static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(indexPath));
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"Invalid checkpoint index '{indexPath}': not valid JSON ({ex.Message}).", ex);
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("weight_map", out var weightMap)
                || weightMap.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"Invalid checkpoint index '{indexPath}': expected a JSON object with a 'weight_map' object.");
            }

            var map = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var entry in weightMap.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                {
                    throw new InvalidDataException($"Invalid checkpoint index '{indexPath}': weight_map entry '{entry.Name}' must be a shard file name string.");
                }

                string shard = entry.Value.GetString()!;
                // Shards live next to the index; anything else could read files outside the checkpoint.
                if (shard.Length == 0 || shard != System.IO.Path.GetFileName(shard) || shard is "." or "..")
                {
                    throw new InvalidDataException($"Invalid checkpoint index '{indexPath}': weight_map entry '{entry.Name}' names '{shard}', which is not a plain file name.");
                }

                if (!map.TryAdd(entry.Name, shard))
                {
                    throw new InvalidDataException($"Invalid checkpoint index '{indexPath}': weight_map lists tensor '{entry.Name}' more than once.");
                }
            }

            return map;
        }
    }
}
