using System.CommandLine;
using ModelSurgery.Inference.Configuration;

namespace ModelSurgery.Benchmarks;

/// <summary>
/// The model-shape options every benchmark on a random-weight Llama takes (<c>--hidden</c>, <c>--layers</c>,
/// <c>--heads</c>, <c>--ffn</c>, <c>--vocab</c>), declared once; each command gives its own defaults.
/// </summary>
internal sealed class ModelShapeOptions
{
    private readonly Option<int> _hidden;
    private readonly Option<int> _layers;
    private readonly Option<int> _heads;
    private readonly Option<int> _ffn;
    private readonly Option<int> _vocab;

    /// <summary>Declares the options with a command's defaults.</summary>
    public ModelShapeOptions(int hidden, int layers, int heads, int ffn, int vocab)
    {
        _hidden = new Option<int>("--hidden") { DefaultValueFactory = _ => hidden, Description = "Hidden size D." };
        _layers = new Option<int>("--layers") { DefaultValueFactory = _ => layers, Description = "Decoder layers L." };
        _heads = new Option<int>("--heads") { DefaultValueFactory = _ => heads, Description = "Attention heads (as many key/value heads)." };
        _ffn = new Option<int>("--ffn") { DefaultValueFactory = _ => ffn, Description = "MLP intermediate size." };
        _vocab = new Option<int>("--vocab") { DefaultValueFactory = _ => vocab, Description = "Vocabulary size." };
        foreach (Option<int> option in new[] { _hidden, _layers, _heads, _ffn, _vocab })
        {
            Positive(option);
        }
    }

    /// <summary>Makes the parser refuse a value below one, naming the option (no stack trace).</summary>
    public static void Positive(Option<int> option)
    {
        ArgumentNullException.ThrowIfNull(option);
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() < 1)
            {
                result.AddError($"{option.Name} must be at least 1; got {result.GetValueOrDefault<int>()}.");
            }
        });
    }

    /// <summary>Adds the options to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        foreach (Option option in new Option[] { _hidden, _layers, _heads, _ffn, _vocab })
        {
            command.Options.Add(option);
        }
    }

    /// <summary>The config the parsed options describe; <paramref name="shape"/> sets what the command adds (context, head tying, tokens).</summary>
    public LlamaConfig Config(ParseResult parsed, Func<LlamaConfig, LlamaConfig> shape)
    {
        ArgumentNullException.ThrowIfNull(parsed);
        ArgumentNullException.ThrowIfNull(shape);
        return shape(new LlamaConfig
        {
            VocabSize = parsed.GetValue(_vocab),
            HiddenSize = parsed.GetValue(_hidden),
            IntermediateSize = parsed.GetValue(_ffn),
            NumHiddenLayers = parsed.GetValue(_layers),
            NumAttentionHeads = parsed.GetValue(_heads),
            NumKeyValueHeads = parsed.GetValue(_heads),
        });
    }
}
