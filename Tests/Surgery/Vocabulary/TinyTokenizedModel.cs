using ModelSurgery.Inference.Configuration;
using ModelSurgery.Inference.Modeling;
using ModelSurgery.Inference.Tokenization;
using ModelSurgery.Surgery.Vocabulary;
using ModelSurgery.Tests.Modeling;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Vocabulary;

/// <summary>
/// A tiny Llama checkpoint with a real byte-level BPE tokenizer.json: the first 1000 GPT-2 ranks (closed under merges)
/// plus &lt;|endoftext|&gt; as id 1000, which is also bos and eos.
/// </summary>
internal static class TinyTokenizedModel
{
    public const int VocabSize = 1001;

    public const int EndOfText = 1000;

    public static LlamaConfig Config(bool tied) =>
        TinyModels.Config(tied: tied) with { VocabSize = VocabSize, BosTokenId = EndOfText, EosTokenIds = [EndOfText] };

    /// <summary>Saves the model and its tokenizer into <paramref name="directory"/>; the caller disposes the model.</summary>
    public static async Task<LlamaForCausalLM> SaveAsync(string directory, bool tied = false, long seed = 7)
    {
        LlamaForCausalLM model = TinyModels.Create(Config(tied), seed);
        await ModelCheckpoint.SaveAsync(model, directory);
        HuggingFaceTokenizerJson.FromTiktoken(TokenizerLoadingTests.Gpt2Subset(1000)).Save(Path.Combine(directory, "tokenizer.json"));
        return model;
    }

    /// <summary>Writes the counting corpus as JSONL with the text under <paramref name="field"/>.</summary>
    public static string WriteCorpus(string directory, string field = "text")
    {
        string path = Path.Combine(directory, "corpus.jsonl");
        File.WriteAllLines(path, VocabularyTestText.Documents().Select(d => System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, string> { [field] = d })));
        return path;
    }

    /// <summary>
    /// Largest difference between the student's logits (new ids, first <see cref="VocabularyMap.NewVocabSize"/> columns)
    /// and the teacher's logits on the same text (old ids), restricted to the kept ids.
    /// </summary>
    public static double MaxKeptLogitDifference(LlamaForCausalLM teacher, LlamaForCausalLM student, VocabularyMap map, IReadOnlyList<int> newIds)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Tensor studentIds = tensor(newIds.Select(i => (long)i).ToArray()).unsqueeze(0); // [1, T]
        Tensor teacherIds = tensor(newIds.Select(i => (long)map.OldId(i)).ToArray()).unsqueeze(0); // [1, T]
        Tensor kept = tensor(map.KeptOldIds.Select(i => (long)i).ToArray()); // [V_new]
        Tensor expected = teacher.forward(teacherIds).squeeze(0).index_select(1, kept); // [T, V_new]
        Tensor actual = student.forward(studentIds).squeeze(0).narrow(1, 0, map.NewVocabSize); // [T, V_new]
        return TinyModels.MaxAbsDiff(actual, expected);
    }
}
