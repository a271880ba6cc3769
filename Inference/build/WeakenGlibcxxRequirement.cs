// Marks one GLIBCXX symbol-version requirement of an ELF64 shared library weak, only where the host's libstdc++
// lacks that version. One source, compiled twice:
//  - at build time by RoslynCodeTaskFactory (Inference/build/ModelSurgery.Inference.targets), which compiles this whole
//    file against .NET Standard; the MSBuild task at the end patches the copy of libLibTorchSharp.so in the output;
//  - into ModelSurgery.Inference (MODELSURGERY_INFERENCE defined, task left out), where TorchSharpNative patches a
//    private copy at run time for hosts such as notebooks whose native files come straight from the NuGet cache.
// So the code here uses only .NET Standard 2.0 APIs.
#nullable enable
using System;
using System.Diagnostics;
using System.IO;
using System.Text;
#if !MODELSURGERY_INFERENCE
using Microsoft.Build.Framework;
using ModelSurgery.Inference.Runtime;
#endif

namespace ModelSurgery.Inference.Runtime
{
    /// <summary>What <see cref="ElfVersionRequirements.MarkWeak(byte[], string)"/> found and did.</summary>
    public enum WeakenOutcome
    {
        /// <summary>The library does not require the version at all; nothing changed.</summary>
        NotRequired,

        /// <summary>The requirement was already weak; nothing changed.</summary>
        AlreadyWeak,

        /// <summary>The requirement was strong and is now weak.</summary>
        MarkedWeak,
    }

    /// <summary>
    /// GNU symbol-version requirements (<c>.gnu.version_r</c>) of little-endian ELF64 shared libraries, and the host's
    /// libstdc++.
    /// <para>
    /// TorchSharp 0.107.0 ships <c>libLibTorchSharp.so</c> built with GCC 13, which lists <c>GLIBCXX_3.4.32</c> for one
    /// symbol (<c>std::ios_base_library_init</c>) that it references only to pull in the newer libstdc++ and never
    /// binds. Hosts with an older libstdc++ (Debian 12, Ubuntu 22.04) refuse to load the library. Marking that one
    /// requirement weak (<c>VER_FLG_WEAK</c> in its <c>Elf64_Vernaux</c> entry) turns the refusal into nothing: the
    /// dynamic loader accepts a weak version the host lacks.
    /// </para>
    /// </summary>
    public static class ElfVersionRequirements
    {
        /// <summary>The version TorchSharp 0.107.0's native library asks for and older hosts lack.</summary>
        public const string TorchSharpGlibcxxVersion = "GLIBCXX_3.4.32";

        private const uint ShtGnuVerneed = 0x6ffffffe;
        private const ushort VerFlagWeak = 0x2;

        /// <summary>
        /// Sets <c>VER_FLG_WEAK</c> on the requirement named <paramref name="version"/> in the ELF image
        /// <paramref name="elf"/>, in place.
        /// </summary>
        /// <param name="elf">The bytes of a little-endian ELF64 file; changed only when the result is <see cref="WeakenOutcome.MarkedWeak"/>.</param>
        /// <param name="version">A version name such as <c>GLIBCXX_3.4.32</c>.</param>
        /// <returns>Whether the requirement was absent, already weak, or marked weak now.</returns>
        /// <exception cref="InvalidDataException">The bytes are not a little-endian ELF64 file, or its version tables point outside it.</exception>
        public static WeakenOutcome MarkWeak(byte[] elf, string version)
        {
            int flagsAt = FindRequirementFlags(elf, version);
            if (flagsAt < 0)
            {
                return WeakenOutcome.NotRequired;
            }

            ushort flags = ReadUInt16(elf, flagsAt);
            if ((flags & VerFlagWeak) != 0)
            {
                return WeakenOutcome.AlreadyWeak;
            }

            flags |= VerFlagWeak;
            elf[flagsAt] = (byte)flags;
            elf[flagsAt + 1] = (byte)(flags >> 8);
            return WeakenOutcome.MarkedWeak;
        }

        /// <summary>
        /// Marks the requirement weak in the file at <paramref name="path"/>, replacing the file through a temporary
        /// file in the same folder so that no reader ever sees half of it. An unchanged file is not rewritten.
        /// </summary>
        /// <param name="path">A little-endian ELF64 shared library.</param>
        /// <param name="version">A version name such as <c>GLIBCXX_3.4.32</c>.</param>
        /// <returns>Whether the requirement was absent, already weak, or marked weak now.</returns>
        /// <exception cref="InvalidDataException">The file is not a little-endian ELF64 file; the message names it.</exception>
        public static WeakenOutcome MarkWeak(string path, string version)
        {
            byte[] elf = File.ReadAllBytes(path);
            WeakenOutcome outcome;
            try
            {
                outcome = MarkWeak(elf, version);
            }
            catch (InvalidDataException ex)
            {
                throw new InvalidDataException(path + ": " + ex.Message, ex);
            }

            if (outcome == WeakenOutcome.MarkedWeak)
            {
                string temporary = path + ".patching";
                File.WriteAllBytes(temporary, elf);
                File.Replace(temporary, path, null);
            }

            return outcome;
        }

        /// <summary>Whether the ELF image requires <paramref name="version"/> without the weak flag (so a host that lacks it refuses to load it).</summary>
        /// <param name="elf">The bytes of a little-endian ELF64 file.</param>
        /// <param name="version">A version name such as <c>GLIBCXX_3.4.32</c>.</param>
        /// <returns>True when the requirement is present and strong.</returns>
        /// <exception cref="InvalidDataException">The bytes are not a little-endian ELF64 file, or its version tables point outside it.</exception>
        public static bool RequiresStrongly(byte[] elf, string version)
        {
            int flagsAt = FindRequirementFlags(elf, version);
            return flagsAt >= 0 && (ReadUInt16(elf, flagsAt) & VerFlagWeak) == 0;
        }

        /// <summary>
        /// Whether the host's 64-bit <c>libstdc++.so.6</c> defines <paramref name="version"/>. False where there is no
        /// libstdc++ to look at (then there is nothing to load TorchSharp with either).
        /// </summary>
        /// <param name="version">A version name such as <c>GLIBCXX_3.4.32</c>.</param>
        /// <returns>True when the host library carries the version name.</returns>
        public static bool HostLibStdCxxProvides(string version)
        {
            string? library = FindHostLibStdCxx();
            return library != null && ContainsAscii(File.ReadAllBytes(library), version + "\0");
        }

        /// <summary>The path of the host's <c>libstdc++.so.6</c> (from <c>ldconfig -p</c>, else the usual folders), or null.</summary>
        /// <returns>An existing file, or null when none is found.</returns>
        public static string? FindHostLibStdCxx()
        {
            try
            {
                var info = new ProcessStartInfo("ldconfig", "-p") { RedirectStandardOutput = true, UseShellExecute = false };
                using (Process? process = Process.Start(info))
                {
                    if (process != null)
                    {
                        string output = process.StandardOutput.ReadToEnd();
                        process.WaitForExit();
                        foreach (string line in output.Split('\n'))
                        {
                            // "libstdc++.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libstdc++.so.6"
                            if (!line.TrimStart().StartsWith("libstdc++.so.6 ", StringComparison.Ordinal))
                            {
                                continue;
                            }

                            int arrow = line.IndexOf("=> ", StringComparison.Ordinal);
                            if (arrow < 0 || (Environment.Is64BitProcess && line.IndexOf("64", StringComparison.Ordinal) < 0))
                            {
                                continue;
                            }

                            string candidate = line.Substring(arrow + 3).Trim();
                            if (File.Exists(candidate))
                            {
                                return candidate;
                            }
                        }
                    }
                }
            }
            catch (Exception ex) when (ex is System.ComponentModel.Win32Exception || ex is InvalidOperationException)
            {
                // ldconfig is not on PATH: fall back to the usual locations below.
            }

            foreach (string folder in new[] { "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib" })
            {
                string candidate = Path.Combine(folder, "libstdc++.so.6");
                if (File.Exists(candidate))
                {
                    return candidate;
                }
            }

            return null;
        }

        // The offset of the vna_flags field of the Elf64_Vernaux entry named version, or -1 when there is none.
        private static int FindRequirementFlags(byte[] elf, string version)
        {
            if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            {
                throw new InvalidDataException("not an ELF file (no \\x7fELF magic)");
            }

            if (elf[4] != 2 || elf[5] != 1)
            {
                throw new InvalidDataException("not a little-endian ELF64 file (EI_CLASS " + elf[4] + ", EI_DATA " + elf[5] + ")");
            }

            int sectionTable = ToOffset(elf, ReadUInt64(elf, 0x28), "e_shoff");
            int sectionSize = ReadUInt16(elf, 0x3A);
            int sectionCount = ReadUInt16(elf, 0x3C);
            if (sectionCount > 0 && sectionSize < 0x40)
            {
                throw new InvalidDataException("section header size " + sectionSize + " is below the 64 bytes of Elf64_Shdr");
            }

            for (int s = 0; s < sectionCount; s++)
            {
                int header = Checked(elf, (long)sectionTable + (long)s * sectionSize, 0x40, "section header " + s);
                if (ReadUInt32(elf, header + 4) != ShtGnuVerneed)
                {
                    continue;
                }

                int entries = ToOffset(elf, ReadUInt64(elf, header + 0x18), ".gnu.version_r sh_offset");
                int link = (int)ReadUInt32(elf, header + 0x28);
                int needCount = (int)ReadUInt32(elf, header + 0x2C);
                if (link >= sectionCount)
                {
                    throw new InvalidDataException(".gnu.version_r links to section " + link + " of " + sectionCount);
                }

                int linkHeader = Checked(elf, (long)sectionTable + (long)link * sectionSize, 0x40, "section header " + link);
                int strings = ToOffset(elf, ReadUInt64(elf, linkHeader + 0x18), "version string table sh_offset");

                // Elf64_Verneed: vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32.
                // Elf64_Vernaux: vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32.
                long need = entries;
                for (int n = 0; n < needCount; n++)
                {
                    int needAt = Checked(elf, need, 16, "Elf64_Verneed " + n);
                    int auxCount = ReadUInt16(elf, needAt + 2);
                    long aux = needAt + (long)ReadUInt32(elf, needAt + 8);
                    for (int a = 0; a < auxCount; a++)
                    {
                        int auxAt = Checked(elf, aux, 16, "Elf64_Vernaux " + a + " of Elf64_Verneed " + n);
                        long nameAt = strings + (long)ReadUInt32(elf, auxAt + 8);
                        if (NameEquals(elf, nameAt, version))
                        {
                            return auxAt + 4;
                        }

                        aux += ReadUInt32(elf, auxAt + 12);
                    }

                    need += ReadUInt32(elf, needAt + 12);
                }
            }

            return -1;
        }

        private static bool NameEquals(byte[] elf, long start, string name)
        {
            int at = Checked(elf, start, 1, "version name");
            for (int i = 0; i < name.Length; i++)
            {
                if (at + i >= elf.Length || elf[at + i] != (byte)name[i])
                {
                    return false;
                }
            }

            return at + name.Length < elf.Length && elf[at + name.Length] == 0;
        }

        private static int ToOffset(byte[] elf, ulong value, string field)
        {
            if (value >= (ulong)elf.Length)
            {
                throw new InvalidDataException(field + " " + value + " points past the end of the file (" + elf.Length + " bytes)");
            }

            return (int)value;
        }

        private static int Checked(byte[] elf, long offset, int size, string what)
        {
            if (offset < 0 || offset + size > elf.Length)
            {
                throw new InvalidDataException(what + " at offset " + offset + " runs past the end of the file (" + elf.Length + " bytes)");
            }

            return (int)offset;
        }

        private static ushort ReadUInt16(byte[] data, int at) => (ushort)(data[at] | (data[at + 1] << 8));

        private static uint ReadUInt32(byte[] data, int at) => (uint)(data[at] | (data[at + 1] << 8) | (data[at + 2] << 16) | (data[at + 3] << 24));

        private static ulong ReadUInt64(byte[] data, int at) => ReadUInt32(data, at) | ((ulong)ReadUInt32(data, at + 4) << 32);

        private static bool ContainsAscii(byte[] haystack, string needle)
        {
            byte[] pattern = Encoding.ASCII.GetBytes(needle);
            for (int i = 0; i + pattern.Length <= haystack.Length; i++)
            {
                int j = 0;
                while (j < pattern.Length && haystack[i + j] == pattern[j])
                {
                    j++;
                }

                if (j == pattern.Length)
                {
                    return true;
                }
            }

            return false;
        }
    }
}

#if !MODELSURGERY_INFERENCE
/// <summary>MSBuild task: marks <see cref="Version"/> weak in each of <see cref="Files"/> unless the host's libstdc++ has it.</summary>
public sealed class ModelSurgeryWeakenGlibcxxRequirement : Microsoft.Build.Utilities.Task
{
    /// <summary>The shared libraries to patch in place (build or publish output, never the NuGet cache).</summary>
    [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();

    /// <summary>The version requirement to mark weak.</summary>
    [Required] public string Version { get; set; } = "";

    /// <inheritdoc />
    public override bool Execute()
    {
        if (ElfVersionRequirements.HostLibStdCxxProvides(Version))
        {
            Log.LogMessage(MessageImportance.Low, "The host libstdc++ provides {0}; libLibTorchSharp.so left as shipped.", Version);
            return true;
        }

        foreach (ITaskItem item in Files)
        {
            string path = item.GetMetadata("FullPath");
            try
            {
                WeakenOutcome outcome = ElfVersionRequirements.MarkWeak(path, Version);
                Log.LogMessage(MessageImportance.Normal, "{0}: {1} {2}", path, Version, outcome);
            }
            catch (Exception ex) when (ex is IOException || ex is InvalidDataException || ex is UnauthorizedAccessException)
            {
                Log.LogWarning("Could not mark {0} weak in {1}: {2}", Version, path, ex.Message);
            }
        }

        return !Log.HasLoggedErrors;
    }
}
#endif
