using Microsoft.Extensions.Logging;

namespace ModelSurgery.Surgery.Vocabulary;

/// <summary>Log messages of the vocabulary tools.</summary>
internal static partial class VocabularyLog
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Counting token frequencies over {Files} corpus files")]
    public static partial void CountingFiles(ILogger logger, int files);

    [LoggerMessage(Level = LogLevel.Information, Message = "Counted {Tokens} tokens in {Documents} documents ({Bytes} bytes) at {Rate:F1} MB/s; {Seen} of {Vocab} ids seen")]
    public static partial void Counted(ILogger logger, long tokens, long documents, long bytes, double rate, int seen, int vocab);

    [LoggerMessage(Level = LogLevel.Information, Message = "Compressed {Source} from {OldSize} to {NewSize} tokens ({Closure} added for merge closure), covering {Coverage:P2} of the counted corpus; wrote {Output}")]
    public static partial void Compressed(ILogger logger, string source, int oldSize, int newSize, int closure, double coverage, string output);
}
