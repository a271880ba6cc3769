namespace ModelSurgery.Training.Data;

/// <summary>
/// Writes a <see cref="TokenFile"/>: documents are appended in order with the separator id between them.
/// Tokens go to a temp file in the same folder; <see cref="Complete"/> writes the header and moves it into place,
/// so a crash never leaves a half-written file under the final name.
/// </summary>
public sealed class TokenFileWriter : IDisposable
{
    private readonly string _tempPath;
    private readonly FileStream _stream;
    private readonly int _vocabSize;
    private byte[] _buffer = new byte[1 << 16];
    private bool _completed;

    /// <summary>Starts a token file.</summary>
    /// <param name="path">Final path of the file.</param>
    /// <param name="vocabSize">Vocabulary size; uint16 tokens are used when it is at most 65535, uint32 otherwise.</param>
    /// <param name="separatorId">The document separator id (normally end-of-sequence).</param>
    public TokenFileWriter(string path, int vocabSize, int separatorId)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        if (separatorId < 0 || separatorId >= vocabSize)
        {
            throw new ArgumentOutOfRangeException(nameof(separatorId), $"Separator id {separatorId} is outside the vocabulary of {vocabSize} tokens.");
        }

        Path = System.IO.Path.GetFullPath(path);
        _vocabSize = vocabSize;
        SeparatorId = separatorId;
        BytesPerToken = TokenFile.BytesPerTokenFor(vocabSize);
        string directory = System.IO.Path.GetDirectoryName(Path)!;
        Directory.CreateDirectory(directory);
        _tempPath = System.IO.Path.Combine(directory, $".{System.IO.Path.GetFileName(Path)}.{Guid.NewGuid():N}.tmp");
        _stream = new FileStream(_tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        _stream.Write(new byte[TokenFile.HeaderSize]);
    }

    /// <summary>Final path of the file.</summary>
    public string Path { get; }

    /// <summary>Bytes per stored token (2 or 4).</summary>
    public int BytesPerToken { get; }

    /// <summary>The document separator id.</summary>
    public int SeparatorId { get; }

    /// <summary>Tokens written so far, separators included.</summary>
    public long Count { get; private set; }

    /// <summary>Documents written so far.</summary>
    public long Documents { get; private set; }

    /// <summary>Appends one document, preceded by the separator unless it is the first.</summary>
    /// <param name="tokens">The document's token ids.</param>
    public void AppendDocument(ReadOnlySpan<int> tokens)
    {
        ObjectDisposedException.ThrowIf(_completed, this);
        if (Documents > 0)
        {
            WriteTokens([SeparatorId]);
        }

        WriteTokens(tokens);
        Documents++;
    }

    /// <summary>Writes the header and moves the file to <see cref="Path"/>.</summary>
    public void Complete()
    {
        ObjectDisposedException.ThrowIf(_completed, this);
        Span<byte> header = stackalloc byte[TokenFile.HeaderSize];
        TokenFile.WriteHeader(header, BytesPerToken, Count, SeparatorId);
        _stream.Position = 0;
        _stream.Write(header);
        _stream.Flush(flushToDisk: true);
        _stream.Dispose();
        File.Move(_tempPath, Path, overwrite: true);
        _completed = true;
    }

    /// <summary>Closes the writer; an incomplete file is deleted.</summary>
    public void Dispose()
    {
        if (!_completed)
        {
            _stream.Dispose();
            File.Delete(_tempPath);
            _completed = true;
        }
    }

    private void WriteTokens(ReadOnlySpan<int> tokens)
    {
        for (int i = 0; i < tokens.Length; i++)
        {
            if ((uint)tokens[i] >= (uint)_vocabSize)
            {
                throw new ArgumentException($"Token id {tokens[i]} at position {i} of document {Documents} is outside the vocabulary of {_vocabSize} tokens (file '{Path}').", nameof(tokens));
            }
        }

        int bytes = tokens.Length * BytesPerToken;
        if (_buffer.Length < bytes)
        {
            _buffer = new byte[bytes];
        }

        TokenFile.Encode(tokens, BytesPerToken, _buffer);
        _stream.Write(_buffer, 0, bytes);
        Count += tokens.Length;
    }
}
