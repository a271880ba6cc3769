using System.Text.Json.Serialization;
using ModelSurgery.Surgery.Scoring;

namespace ModelSurgery.Surgery.Planning;

/// <summary>
/// What one student layer inherits from one teacher layer. All index sets are teacher indices, strictly ascending; student
/// head/neuron j is the j-th kept teacher head/neuron. Because query heads are sorted and teacher query head h belongs to
/// KV head h / group size, the query heads come grouped under their KV heads, in the order of <see cref="KvHeads"/>.
/// </summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
public sealed record LayerPlan
{
    /// <summary>The teacher layer this student layer is cut from.</summary>
    [JsonPropertyName("teacher_layer")]
    [JsonPropertyOrder(0)]
    public required int TeacherLayer { get; init; }

    /// <summary>Kept KV heads (teacher KV-head indices, ascending).</summary>
    [JsonPropertyName("kv_heads")]
    [JsonPropertyOrder(1)]
    [JsonConverter(typeof(OneLineIntListConverter))]
    public required IReadOnlyList<int> KvHeads { get; init; }

    /// <summary>Kept query heads (teacher query-head indices, ascending, so grouped by KV head).</summary>
    [JsonPropertyName("query_heads")]
    [JsonPropertyOrder(2)]
    [JsonConverter(typeof(OneLineIntListConverter))]
    public required IReadOnlyList<int> QueryHeads { get; init; }

    /// <summary>Kept FFN neurons (teacher intermediate indices, ascending).</summary>
    [JsonPropertyName("neurons")]
    [JsonPropertyOrder(3)]
    [JsonConverter(typeof(OneLineIntListConverter))]
    public required IReadOnlyList<int> Neurons { get; init; }

    /// <summary>
    /// Rows of the teacher's q_proj weight (columns of its o_proj) that this layer keeps: for each kept query head h, rows
    /// h * headDim .. h * headDim + headDim - 1, in order.
    /// </summary>
    public int[] QueryRows(int headDim) => HeadRows(QueryHeads, headDim);

    /// <summary>Rows of the teacher's k_proj and v_proj weights that this layer keeps (each kept KV head's headDim rows).</summary>
    public int[] KvRows(int headDim) => HeadRows(KvHeads, headDim);

    /// <summary>Expands head indices into the rows they own in a [heads * headDim, ...] projection, in order.</summary>
    public static int[] HeadRows(IReadOnlyList<int> heads, int headDim)
    {
        ArgumentNullException.ThrowIfNull(heads);
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        var rows = new int[heads.Count * headDim];
        for (int i = 0; i < heads.Count; i++)
        {
            for (int d = 0; d < headDim; d++)
            {
                rows[(i * headDim) + d] = (heads[i] * headDim) + d;
            }
        }

        return rows;
    }

    /// <inheritdoc/>
    public bool Equals(LayerPlan? other) =>
        other is not null
        && TeacherLayer == other.TeacherLayer
        && KvHeads.SequenceEqual(other.KvHeads)
        && QueryHeads.SequenceEqual(other.QueryHeads)
        && Neurons.SequenceEqual(other.Neurons);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(TeacherLayer, KvHeads.Count, QueryHeads.Count, Neurons.Count);
}
