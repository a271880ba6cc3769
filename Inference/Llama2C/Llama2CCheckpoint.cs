using System.Buffers.Binary;
using System.Runtime.InteropServices;
using ModelSurgery.Inference.Configuration;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Llama2C;

/// <summary>
/// Reads and writes the <c>.bin</c> checkpoints of Andrej Karpathy's llama2.c (the legacy format, version 1 fp32 and, for
/// reading, version 2 Q8_0). Tensors are exchanged under Hugging Face names; W_q and W_k are converted between llama2.c's
/// interleaved RoPE rows and Hugging Face's <c>rotate_half</c> rows (see <see cref="RopePermutation"/>).
/// </summary>
public static class Llama2CCheckpoint
{
    /// <summary>The tensors of a llama2.c file, by their llama2.c role.</summary>
    private enum Part
    {
        TokenEmbedding,
        RmsAtt,
        Wq,
        Wk,
        Wv,
        Wo,
        RmsFfn,
        W1,
        W2,
        W3,
        RmsFinal,
        FreqCisReal,
        FreqCisImag,
        Classifier,
    }

    /// <summary>Reads the header of a llama2.c checkpoint without reading the tensors.</summary>
    /// <exception cref="InvalidDataException">The header is truncated, has an unknown version or inconsistent sizes; the message names the file.</exception>
    public static Llama2CHeader ReadHeader(string path)
    {
        using var stream = OpenRead(path);
        return ReadHeader(stream, path);
    }

    /// <summary>
    /// Reads a llama2.c checkpoint: the header becomes a <see cref="LlamaConfig"/> and the tensors fp32 CPU tensors under
    /// Hugging Face names, with W_q and W_k permuted to the <c>rotate_half</c> layout. Version 2 (Q8_0) weights are dequantized.
    /// </summary>
    /// <param name="path">The <c>.bin</c> file.</param>
    /// <returns>The weights; dispose them when done.</returns>
    /// <exception cref="InvalidDataException">The file is malformed: unknown version, inconsistent sizes, or a size that does not match the header exactly.</exception>
    public static Llama2CWeights Read(string path)
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("llama2.c checkpoints are little-endian; reading them needs a little-endian machine.");
        }

        using var stream = OpenRead(path);
        Llama2CHeader header = ReadHeader(stream, path);
        long expected = ExpectedFileBytes(header, path);
        if (stream.Length != expected)
        {
            throw new InvalidDataException(
                $"{path}: file is {stream.Length} bytes but its {header.Version} header (dim {header.Dim}, hidden_dim {header.HiddenDim}, n_layers {header.NumLayers}, n_heads {header.NumHeads}, n_kv_heads {header.NumKvHeads}, vocab_size {header.VocabSize}, seq_len {header.SeqLen}, shared classifier {header.SharedClassifier}) describes {expected} bytes.");
        }

        stream.Position = HeaderBytes(header.Version);
        LlamaConfig config = header.ToConfig();
        var read = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (Part part in FileOrder(header))
            {
                for (int layer = 0; layer < Repeats(part, header); layer++)
                {
                    long[] shape = Shape(part, header);
                    Tensor tensor = header.Version == Llama2CVersion.Version2 && IsQuantized(part)
                        ? ReadQ80(stream, shape, header.GroupSize)
                        : ReadFp32(stream, shape);
                    string? name = HfName(part, layer, config);
                    if (name is null)
                    {
                        tensor.Dispose(); // the RoPE tables: recomputed from the sizes, not stored in Hugging Face checkpoints
                        continue;
                    }

                    read[name] = part switch
                    {
                        Part.Wq => PermuteAndDispose(tensor, header.NumHeads, RopePermutation.InterleavedToRotateHalf),
                        Part.Wk => PermuteAndDispose(tensor, header.NumKvHeads, RopePermutation.InterleavedToRotateHalf),
                        _ => tensor,
                    };
                }
            }

            var ordered = new List<(string Name, Tensor Tensor)>();
            foreach (TensorSpec spec in LlamaTensorLayout.Tensors(config))
            {
                ordered.Add((spec.Name, read[spec.Name]));
            }

            return new Llama2CWeights(header, config, ordered);
        }
        catch
        {
            foreach (Tensor tensor in read.Values)
            {
                tensor.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// Writes a model as a llama2.c checkpoint, atomically (a temp file in the same folder, then a rename). W_q and W_k are
    /// permuted back from the <c>rotate_half</c> layout to llama2.c's interleaved layout; the legacy format also gets the RoPE
    /// tables, computed in fp32 exactly as llama2.c's <c>precompute_freqs_cis</c> does.
    /// </summary>
    /// <param name="path">The <c>.bin</c> file to create or replace.</param>
    /// <param name="config">The model; it must be a plain llama (no biases, no rope_scaling, rope_theta 10000, rms_norm_eps 1e-5, head_dim = hidden_size / heads).</param>
    /// <param name="readTensor">
    /// Returns the tensor of a Hugging Face name (any float dtype and device). Tensors it creates during the call are disposed
    /// after they are written; tensors that existed before (for example those of a <see cref="Llama2CWeights"/>) are left alone.
    /// </param>
    /// <param name="version"><see cref="Llama2CVersion.Legacy"/> or <see cref="Llama2CVersion.Version1"/>.</param>
    /// <exception cref="ArgumentException">The config cannot be stored in llama2.c, the version is not writable, or a tensor has the wrong shape; the message names it.</exception>
    public static void Write(string path, LlamaConfig config, Func<string, Tensor> readTensor, Llama2CVersion version)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(readTensor);
        if (version is not (Llama2CVersion.Legacy or Llama2CVersion.Version1))
        {
            throw new ArgumentException($"llama2.c version {version} cannot be written (supported: Legacy, Version1).", nameof(version));
        }

        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("llama2.c checkpoints are little-endian; writing them needs a little-endian machine.");
        }

        Llama2CHeader header = Llama2CHeader.FromConfig(config, version);
        string temp = path + ".tmp";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 20))
            {
                WriteHeader(stream, header);
                foreach (Part part in FileOrder(header))
                {
                    for (int layer = 0; layer < Repeats(part, header); layer++)
                    {
                        using var scope = NewDisposeScope();
                        Tensor data = part switch
                        {
                            Part.FreqCisReal or Part.FreqCisImag => FreqCis(header, real: part == Part.FreqCisReal),
                            _ => SourceTensor(part, layer, header, config, readTensor),
                        };
                        WriteFp32(stream, data);
                    }
                }
            }

            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>
    /// The RoPE table llama2.c's legacy format stores, computed in fp32 exactly as <c>model.py</c>'s
    /// <c>precompute_freqs_cis(head_size, seq_len)</c>: freqs = 1 / theta^(arange(0, hs, 2) / hs), angles = outer(t, freqs).
    /// </summary>
    private static Tensor FreqCis(Llama2CHeader header, bool real)
    {
        int headSize = header.HeadSize;
        using Tensor exponents = arange(0, headSize, 2, ScalarType.Int64).to_type(ScalarType.Float32) / headSize; // [hs/2]
        using Tensor powers = pow(Llama2CHeader.RopeTheta, exponents); // [hs/2]
        using Tensor freqs = powers.reciprocal(); // [hs/2]
        using Tensor positions = arange(0, header.SeqLen, 1, ScalarType.Int64); // [T]
        using Tensor angles = outer(positions, freqs); // [T, hs/2]
        return real ? angles.cos() : angles.sin(); // [T, hs/2]
    }

    private static Tensor SourceTensor(Part part, int layer, Llama2CHeader header, LlamaConfig config, Func<string, Tensor> readTensor)
    {
        string name = HfName(part, layer, config) ?? throw new InvalidOperationException($"{part} has no Hugging Face tensor.");
        Tensor source = readTensor(name) ?? throw new ArgumentException($"readTensor returned null for '{name}'.", nameof(readTensor));
        long[] expected = Shape(part, header);
        if (!source.shape.SequenceEqual(expected))
        {
            throw new ArgumentException(
                $"tensor '{name}' has shape [{string.Join(", ", source.shape)}], expected [{string.Join(", ", expected)}].", nameof(readTensor));
        }

        Tensor fp32 = source.to_type(ScalarType.Float32).cpu(); // [out, in]
        return part switch
        {
            Part.Wq => RopePermutation.RotateHalfToInterleaved(fp32, header.NumHeads),
            Part.Wk => RopePermutation.RotateHalfToInterleaved(fp32, header.NumKvHeads),
            _ => fp32,
        };
    }

    private static FileStream OpenRead(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 20);
    }

    private static Llama2CHeader ReadHeader(Stream stream, string path)
    {
        Span<byte> prefix = stackalloc byte[Llama2CHeader.LegacyHeaderBytes];
        ReadHeaderBytes(stream, prefix, path);
        Llama2CHeader header;
        if (BinaryPrimitives.ReadUInt32LittleEndian(prefix) == Llama2CHeader.Magic)
        {
            Span<byte> full = stackalloc byte[Llama2CHeader.VersionedHeaderBytes];
            prefix.CopyTo(full);
            ReadHeaderBytes(stream, full[prefix.Length..], path);
            int version = ReadInt(full, 1);
            if (version is not (1 or 2))
            {
                throw new InvalidDataException($"{path}: unsupported llama2.c checkpoint version {version} (supported: legacy, 1, 2).");
            }

            // magic, version, 7 sizes, then a shared-classifier byte at offset 36 and (version 2) the int32 group size after it.
            header = new Llama2CHeader(
                (Llama2CVersion)version,
                ReadInt(full, 2), ReadInt(full, 3), ReadInt(full, 4), ReadInt(full, 5), ReadInt(full, 6), ReadInt(full, 7), ReadInt(full, 8),
                SharedClassifier: full[36] != 0,
                GroupSize: version == 2 ? BinaryPrimitives.ReadInt32LittleEndian(full[37..]) : 0);
        }
        else
        {
            // The legacy sign flag: a negative vocab_size means the classifier is stored separately.
            int vocab = ReadInt(prefix, 5);
            header = new Llama2CHeader(
                Llama2CVersion.Legacy,
                ReadInt(prefix, 0), ReadInt(prefix, 1), ReadInt(prefix, 2), ReadInt(prefix, 3), ReadInt(prefix, 4),
                vocab == int.MinValue ? 0 : Math.Abs(vocab),
                ReadInt(prefix, 6),
                SharedClassifier: vocab > 0,
                GroupSize: 0);
        }

        string? problem = header.FindProblem();
        return problem is null ? header : throw new InvalidDataException($"{path}: invalid llama2.c header: {problem}.");

        static int ReadInt(ReadOnlySpan<byte> bytes, int index) => BinaryPrimitives.ReadInt32LittleEndian(bytes[(index * sizeof(int))..]);
    }

    private static void ReadHeaderBytes(Stream stream, Span<byte> buffer, string path)
    {
        if (stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false) != buffer.Length)
        {
            throw new InvalidDataException($"{path}: file is too short for a llama2.c header ({stream.Length} bytes).");
        }
    }

    private static void WriteHeader(Stream stream, Llama2CHeader header)
    {
        int[] sizes = [header.Dim, header.HiddenDim, header.NumLayers, header.NumHeads, header.NumKvHeads, header.VocabSize, header.SeqLen];
        byte[] bytes = new byte[HeaderBytes(header.Version)];
        int offset = 0;
        if (header.Version == Llama2CVersion.Legacy)
        {
            sizes[5] = header.SharedClassifier ? header.VocabSize : -header.VocabSize;
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(bytes, Llama2CHeader.Magic);
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4), (int)header.Version);
            offset = 8;
        }

        foreach (int size in sizes)
        {
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(offset), size);
            offset += sizeof(int);
        }

        if (header.Version != Llama2CVersion.Legacy)
        {
            bytes[offset] = header.SharedClassifier ? (byte)1 : (byte)0; // the rest of the 256 bytes stays zero
        }

        stream.Write(bytes);
    }

    private static int HeaderBytes(Llama2CVersion version) =>
        version == Llama2CVersion.Legacy ? Llama2CHeader.LegacyHeaderBytes : Llama2CHeader.VersionedHeaderBytes;

    /// <summary>The exact size of a file with this header, following the layouts of llama2.c's export.py.</summary>
    private static long ExpectedFileBytes(Llama2CHeader header, string path)
    {
        try
        {
            return SumFileBytes(header, path);
        }
        catch (OverflowException ex)
        {
            throw new InvalidDataException($"{path}: the header's sizes describe more than {long.MaxValue} bytes.", ex);
        }
    }

    private static long SumFileBytes(Llama2CHeader header, string path)
    {
        long bytes = HeaderBytes(header.Version);
        foreach (Part part in FileOrder(header))
        {
            long elements = Shape(part, header).Aggregate(1L, (a, b) => checked(a * b));
            long perTensor = checked(elements * sizeof(float));
            if (header.Version == Llama2CVersion.Version2 && IsQuantized(part))
            {
                if (elements % header.GroupSize != 0)
                {
                    throw new InvalidDataException($"{path}: {part} has {elements} elements, not a multiple of the Q8_0 group size {header.GroupSize}.");
                }

                perTensor = elements + (elements / header.GroupSize * sizeof(float)); // int8 values, then one fp32 scale per group
            }

            bytes = checked(bytes + (perTensor * Repeats(part, header)));
        }

        return bytes;
    }

    /// <summary>The order of the tensors in the file (llama2.c export.py: legacy_export, version1_export, version2_export).</summary>
    private static Part[] FileOrder(Llama2CHeader header)
    {
        Part[] order = header.Version switch
        {
            Llama2CVersion.Legacy =>
            [
                Part.TokenEmbedding, Part.RmsAtt, Part.Wq, Part.Wk, Part.Wv, Part.Wo, Part.RmsFfn, Part.W1, Part.W2, Part.W3,
                Part.RmsFinal, Part.FreqCisReal, Part.FreqCisImag,
            ],
            _ =>
            [
                Part.RmsAtt, Part.RmsFfn, Part.RmsFinal, Part.TokenEmbedding, Part.Wq, Part.Wk, Part.Wv, Part.Wo, Part.W1, Part.W2, Part.W3,
            ],
        };
        return header.SharedClassifier ? order : [.. order, Part.Classifier];
    }

    private static bool IsQuantized(Part part) => part is not (Part.RmsAtt or Part.RmsFfn or Part.RmsFinal);

    private static int Repeats(Part part, Llama2CHeader header) =>
        part is Part.TokenEmbedding or Part.RmsFinal or Part.FreqCisReal or Part.FreqCisImag or Part.Classifier ? 1 : header.NumLayers;

    /// <summary>Shape of one tensor of <paramref name="part"/> (one layer's slice for per-layer parts), PyTorch [out, in].</summary>
    private static long[] Shape(Part part, Llama2CHeader h) => part switch
    {
        Part.TokenEmbedding or Part.Classifier => [h.VocabSize, h.Dim],
        Part.RmsAtt or Part.RmsFfn or Part.RmsFinal => [h.Dim],
        Part.Wq => [(long)h.NumHeads * h.HeadSize, h.Dim],
        Part.Wk or Part.Wv => [h.KvDim, h.Dim],
        Part.Wo => [h.Dim, (long)h.NumHeads * h.HeadSize],
        Part.W1 or Part.W3 => [h.HiddenDim, h.Dim],
        Part.W2 => [h.Dim, h.HiddenDim],
        Part.FreqCisReal or Part.FreqCisImag => [h.SeqLen, h.HeadSize / 2],
        _ => throw new ArgumentOutOfRangeException(nameof(part), part, null),
    };

    /// <summary>The Hugging Face name of a part, or null for the RoPE tables, which Hugging Face checkpoints do not store.</summary>
    private static string? HfName(Part part, int layer, LlamaConfig config)
    {
        switch (part)
        {
            case Part.TokenEmbedding: return LlamaTensorLayout.EmbedTokens;
            case Part.RmsFinal: return LlamaTensorLayout.FinalNorm;
            case Part.Classifier: return LlamaTensorLayout.LmHead;
            case Part.FreqCisReal or Part.FreqCisImag: return null;
        }

        // LlamaTensorLayout lists each bias-free layer as: input norm, q, k, v, o, post-attention norm, gate, up, down;
        // llama2.c's attention_norm, wq, wk, wv, wo, ffn_norm, w1, w3, w2 in that order.
        List<TensorSpec> specs = [.. LlamaTensorLayout.Tensors(config).Where(s => s.Layer == layer)];
        if (specs.Count != 9)
        {
            throw new InvalidOperationException($"expected 9 tensors per bias-free llama layer, the layout lists {specs.Count}.");
        }

        int index = part switch
        {
            Part.RmsAtt => 0,
            Part.Wq => 1,
            Part.Wk => 2,
            Part.Wv => 3,
            Part.Wo => 4,
            Part.RmsFfn => 5,
            Part.W1 => 6,
            Part.W3 => 7,
            Part.W2 => 8,
            _ => throw new ArgumentOutOfRangeException(nameof(part), part, null),
        };
        return specs[index].Name;
    }

    private static Tensor ReadFp32(Stream stream, long[] shape)
    {
        float[] values = new float[checked((int)shape.Aggregate(1L, (a, b) => a * b))];
        stream.ReadExactly(MemoryMarshal.AsBytes(values.AsSpan()));
        return tensor(values, shape, ScalarType.Float32);
    }

    /// <summary>Reads one Q8_0 tensor (all int8 values, then one fp32 scale per group) and dequantizes it: value = q * scale.</summary>
    private static Tensor ReadQ80(Stream stream, long[] shape, int groupSize)
    {
        int elements = checked((int)shape.Aggregate(1L, (a, b) => a * b));
        byte[] quantized = new byte[elements];
        stream.ReadExactly(quantized);
        float[] scales = new float[elements / groupSize];
        stream.ReadExactly(MemoryMarshal.AsBytes(scales.AsSpan()));
        float[] values = new float[elements];
        for (int i = 0; i < elements; i++)
        {
            values[i] = (sbyte)quantized[i] * scales[i / groupSize];
        }

        return tensor(values, shape, ScalarType.Float32);
    }

    private static void WriteFp32(Stream stream, Tensor data)
    {
        // No using: the conversions may return the caller's own tensor; the caller's dispose scope owns what they create.
        Tensor contiguous = data.to_type(ScalarType.Float32).cpu().contiguous();
        float[] values = contiguous.data<float>().ToArray();
        stream.Write(MemoryMarshal.AsBytes(values.AsSpan()));
    }

    private static Tensor PermuteAndDispose(Tensor weight, int heads, Func<Tensor, int, Tensor> permute)
    {
        using (weight)
        {
            return permute(weight, heads);
        }
    }
}
