using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace ModelSurgery.Cli;

/// <summary>What an input path is, so the guard knows which files under a folder the command reads.</summary>
internal enum InputKind
{
    /// <summary>A file, or a folder whose every file may be read.</summary>
    Any,

    /// <summary>A checkpoint folder (or a file in one): config, weights, tokenizer and the files beside them.</summary>
    Model,

    /// <summary>A corpus file, folder or glob: the .txt, .jsonl and .json files below a folder.</summary>
    Corpus,
}

/// <summary>
/// The one place every command checks its outputs before writing: no output may be one of the command's inputs (full
/// paths compared after resolving symbolic links, folders that contain inputs included), a folder that already holds a
/// model or a training run is replaced only with <c>--force</c> (or continued with <c>--resume</c>), and a folder being
/// written is locked against a second run. Temp files left by killed writes (<c>.&lt;name&gt;.&lt;guid&gt;.tmp</c>) are
/// removed from the places written to.
/// </summary>
internal sealed partial class OutputGuard : IDisposable
{
    /// <summary>Name of the advisory lock file a run holds in its output folder.</summary>
    public const string LockFileName = ".modelsurgery.lock";

    // Files a model folder is made of; only these are replaced or cleared with --force.
    private static readonly string[] ModelFileNames =
    [
        "config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer.model",
        "tokenizer_config.json", "special_tokens_map.json", "vocab_map.json",
    ];

    private static readonly string[] CorpusExtensions = [".txt", ".jsonl", ".json"];

    // A temp file must be this old before it counts as orphaned: a live writer keeps touching its own.
    private static readonly TimeSpan StaleTempAge = TimeSpan.FromMinutes(1);

    private static readonly StringComparison PathComparison =
        OperatingSystem.IsLinux() ? StringComparison.Ordinal : StringComparison.OrdinalIgnoreCase;

    private readonly List<(string Path, string Canonical, string Option, InputKind Kind)> _inputs = [];
    private readonly List<FileStream> _locks = [];

    // Folders this guard created: removed again when the command wrote nothing into them (it failed first).
    private readonly List<string> _created = [];

    /// <summary>Registers an input (file, folder or glob); null is ignored.</summary>
    public OutputGuard Input(string? path, string option, InputKind kind = InputKind.Any)
    {
        if (!string.IsNullOrWhiteSpace(path))
        {
            // A glob reads files in the folder before its first wildcard.
            int wildcard = path.IndexOfAny(['*', '?']);
            string concrete = wildcard < 0 ? path : Path.GetDirectoryName(path[..wildcard]) is { Length: > 0 } d ? d : ".";
            _inputs.Add((path, Canonical(concrete), option, wildcard < 0 ? kind : InputKind.Corpus));
        }

        return this;
    }

    /// <summary>Registers several inputs given to one option.</summary>
    public OutputGuard Inputs(IEnumerable<string>? paths, string option, InputKind kind = InputKind.Any)
    {
        foreach (string path in paths ?? [])
        {
            Input(path, option, kind);
        }

        return this;
    }

    /// <summary>
    /// Checks an output file: it must not be an input, nor a file an input folder supplies. Orphaned temp files of
    /// earlier writes to it are removed.
    /// </summary>
    public OutputGuard File(string? path, string option)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            return this;
        }

        string output = Canonical(path);
        if (Directory.Exists(output))
        {
            throw new UsageException($"{option} {path} is a folder; give a file path.");
        }

        foreach ((string inputPath, string input, string inputOption, InputKind kind) in _inputs)
        {
            // A hard link is the input under another name: compared by file identity where the system tells it.
            bool same = string.Equals(output, input, PathComparison) || FileIdentity.SameFile(output, input);
            bool readFromFolder = Directory.Exists(input) && System.IO.File.Exists(output)
                && ((IsInside(output, input) && Reads(kind, input, output)) || FilesRead(kind, input).Any(f => FileIdentity.SameFile(f, output)));
            if (same || readFromFolder)
            {
                throw new UsageException(same
                    ? $"{option} {path} is the input given to {inputOption}; writing it would destroy the input. Choose another path."
                    : $"{option} {path} is a file of {inputOption} {inputPath}, which this command reads; writing it would change the input. Choose another path.");
            }
        }

        CleanStaleTemps(Path.GetDirectoryName(output)!, Path.GetFileName(output), recursive: false);
        return this;
    }

    /// <summary>
    /// Checks an output folder: it must not be, nor contain, an input, nor lie inside an input file's place; when it
    /// already holds a model or a training run, <paramref name="force"/> or <paramref name="resume"/> must be given.
    /// Takes the folder's lock (released on <see cref="Dispose"/>) and removes orphaned temp files below it.
    /// </summary>
    /// <param name="path">The folder.</param>
    /// <param name="option">The option or argument that named it, for messages.</param>
    /// <param name="force">--force was given: an existing model is replaced (its model files are removed first when <paramref name="clearModel"/>).</param>
    /// <param name="resume">--resume was given: an existing run is continued.</param>
    /// <param name="forceOption">How the command spells its replace option, for the message.</param>
    /// <param name="clearModel">With <paramref name="force"/>, remove the folder's model files before the write, so none of the old model's files (a tokenizer, an index) survives beside the new one.</param>
    public OutputGuard Folder(string? path, string option, bool force = false, bool resume = false, string forceOption = "--force", bool clearModel = false)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            return this;
        }

        string output = NotAnInputFolder(path, option);
        if (Directory.Exists(output))
        {
            string? held = HoldsRun(output) ? "a training run" : HoldsModel(output) ? "a model" : null;
            if (held is not null && !force && !resume)
            {
                throw new UsageException(held == "a training run"
                    ? $"{option} {path} already holds a training run; give --resume to continue it or {forceOption} to start over in it."
                    : $"{option} {path} already holds a model; give {forceOption} to replace it.");
            }
        }

        if (!Directory.Exists(output))
        {
            Directory.CreateDirectory(output);
            _created.Add(output);
        }

        Lock(output, option, path);
        CleanStaleTemps(output, name: null, recursive: true);
        if (force && clearModel)
        {
            foreach (string file in ModelFiles(output))
            {
                System.IO.File.Delete(file);
            }
        }

        return this;
    }

    /// <summary>
    /// Checks that an output folder is neither an input nor contains one, and nothing else (for writers that manage
    /// the folder themselves).
    /// </summary>
    /// <returns>The folder's canonical path.</returns>
    public string NotAnInputFolder(string path, string option)
    {
        string output = Canonical(path);
        if (System.IO.File.Exists(output))
        {
            throw new UsageException($"{option} {path} is a file; give a folder.");
        }

        foreach ((string inputPath, string input, string inputOption, _) in _inputs)
        {
            if (string.Equals(output, input, PathComparison) || IsInside(input, output))
            {
                throw new UsageException(string.Equals(output, input, PathComparison)
                    ? $"{option} {path} is the input given to {inputOption}; writing there would destroy the input. Choose another folder."
                    : $"{option} {path} contains {inputOption} {inputPath}; writing there could overwrite or remove the input. Choose another folder.");
            }
        }

        return output;
    }

    /// <summary>Releases the folder locks this guard holds.</summary>
    public void Dispose()
    {
        foreach (FileStream stream in _locks)
        {
            string name = stream.Name;
            stream.Dispose();
            TryDelete(name);
        }

        _locks.Clear();
        foreach (string folder in _created)
        {
            try
            {
                if (Directory.Exists(folder) && !Directory.EnumerateFileSystemEntries(folder).Any())
                {
                    Directory.Delete(folder);
                }
            }
            catch (IOException)
            {
            }
        }

        _created.Clear();
    }

    /// <summary>True when the folder holds a model: a config.json or safetensors weights.</summary>
    public static bool HoldsModel(string folder) =>
        System.IO.File.Exists(Path.Combine(folder, "config.json")) || Directory.EnumerateFiles(folder, "*.safetensors").Any();

    /// <summary>True when the folder holds a training run: metrics or checkpoints.</summary>
    public static bool HoldsRun(string folder) =>
        System.IO.File.Exists(Path.Combine(folder, "metrics.jsonl")) || Directory.Exists(Path.Combine(folder, "checkpoints"));

    /// <summary>
    /// The full path with every symbolic link along it resolved, so two spellings of one place compare equal. Parts
    /// that do not exist yet are kept as written.
    /// </summary>
    public static string Canonical(string path)
    {
        string full = Path.GetFullPath(path);
        for (int depth = 0; depth < 32; depth++)
        {
            string root = Path.GetPathRoot(full)!;
            string current = root;
            bool changed = false;
            foreach (string part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
            {
                string next = Path.Combine(current, part);
                var info = new FileInfo(next);
                if (info.LinkTarget is not null && info.ResolveLinkTarget(returnFinalTarget: true) is { } target)
                {
                    next = target.FullName;
                    changed = true;
                }

                current = next;
            }

            full = Path.TrimEndingDirectorySeparator(current);
            if (!changed)
            {
                break;
            }
        }

        return full;
    }

    private static bool IsInside(string path, string folder)
    {
        string prefix = Path.TrimEndingDirectorySeparator(folder) + Path.DirectorySeparatorChar;
        return path.StartsWith(prefix, PathComparison);
    }

    private static bool Reads(InputKind kind, string folder, string file) => kind switch
    {
        InputKind.Model => ModelFiles(folder).Any(f => string.Equals(Canonical(f), file, PathComparison) || FileIdentity.SameFile(f, file)) || file.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase),
        InputKind.Corpus => CorpusExtensions.Any(e => file.EndsWith(e, StringComparison.OrdinalIgnoreCase)),
        _ => true,
    };

    // The files a folder input supplies, for the hard-link check (only where file identity is known).
    private static IEnumerable<string> FilesRead(InputKind kind, string folder) => !OperatingSystem.IsLinux() ? [] : kind switch
    {
        InputKind.Model => ModelFiles(folder),
        InputKind.Corpus => Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Where(f => CorpusExtensions.Any(e => f.EndsWith(e, StringComparison.OrdinalIgnoreCase))),
        _ => Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories),
    };

    private static IEnumerable<string> ModelFiles(string folder) =>
        ModelFileNames.Select(n => Path.Combine(folder, n)).Where(System.IO.File.Exists)
            .Concat(Directory.EnumerateFiles(folder, "*.safetensors"));

    // The lock file holds the owner's pid and start time. A lock whose owner is gone (killed) is stale and taken over.
    private void Lock(string folder, string option, string path)
    {
        string lockPath = Path.Combine(folder, LockFileName);
        for (int attempt = 0; attempt < 2; attempt++)
        {
            try
            {
                var stream = new FileStream(lockPath, FileMode.CreateNew, FileAccess.Write, FileShare.Read);
                using var process = Process.GetCurrentProcess();
                byte[] owner = System.Text.Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessId} {process.StartTime.ToUniversalTime():O}\n"));
                stream.Write(owner);
                stream.Flush();
                _locks.Add(stream);
                return;
            }
            catch (IOException) when (System.IO.File.Exists(lockPath))
            {
                (int pid, string started)? owner = ReadOwner(lockPath);
                if (owner is { } o && IsAlive(o.pid, o.started))
                {
                    throw new UsageException($"{option} {path} is in use by another run (process {o.pid}, lock file {LockFileName}); wait for it to finish or choose another folder.");
                }

                // The owner died without releasing the lock: take it over.
                TryDelete(lockPath);
            }
        }

        throw new UsageException($"{option} {path}: cannot take the folder lock {LockFileName}.");
    }

    private static (int, string)? ReadOwner(string lockPath)
    {
        try
        {
            using var stream = new FileStream(lockPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(stream);
            string[] parts = reader.ReadToEnd().Split(' ', 2, StringSplitOptions.TrimEntries);
            return parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int pid) ? (pid, parts[1]) : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static bool IsAlive(int pid, string started)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            // A reused pid belongs to a process that started at another time.
            return !process.HasExited && process.StartTime.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture) == started;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception or NotSupportedException)
        {
            return false;
        }
    }

    // Removes .<name>.<32 hex>.tmp files nobody has written for a while and nobody holds open.
    private static void CleanStaleTemps(string folder, string? name, bool recursive)
    {
        if (!Directory.Exists(folder))
        {
            return;
        }

        DateTime before = DateTime.UtcNow - StaleTempAge;
        foreach (string file in Directory.EnumerateFiles(folder, "*.tmp", recursive ? SearchOption.AllDirectories : SearchOption.TopDirectoryOnly))
        {
            Match match = TempName().Match(Path.GetFileName(file));
            if (!match.Success || (name is not null && match.Groups[1].Value != name) || System.IO.File.GetLastWriteTimeUtc(file) > before)
            {
                continue;
            }

            try
            {
                using (new FileStream(file, FileMode.Open, FileAccess.ReadWrite, FileShare.None))
                {
                }

                System.IO.File.Delete(file);
            }
            catch (IOException)
            {
                // Held open by a live writer: not orphaned.
            }
            catch (UnauthorizedAccessException)
            {
                // Not ours to remove.
            }
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            System.IO.File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    [GeneratedRegex("^\\.(.+)\\.[0-9a-f]{32}\\.tmp$")]
    private static partial Regex TempName();
}
