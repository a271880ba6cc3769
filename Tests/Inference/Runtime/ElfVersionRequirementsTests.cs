using System.Buffers.Binary;
using System.Text;
using ModelSurgery.Inference.Runtime;
using ModelSurgery.Tests.Checkpoints;

namespace ModelSurgery.Tests.Inference;

/// <summary>
/// The ELF patch shared by the build task and <see cref="TorchSharpNative"/>, on ELF64 images built byte by byte here:
/// a string table and a <c>.gnu.version_r</c> section requiring libstdc++'s <c>GLIBCXX_3.4</c> and <c>GLIBCXX_3.4.32</c>.
/// </summary>
public sealed class ElfVersionRequirementsTests
{
    private const string Target = ElfVersionRequirements.TorchSharpGlibcxxVersion;

    [Test]
    public void Marking_weak_sets_only_the_flag_of_the_named_requirement_and_is_idempotent()
    {
        byte[] elf = SyntheticElf.Build(out int targetFlagsAt, out int otherFlagsAt);
        byte[] before = (byte[])elf.Clone();
        Assert.That(ElfVersionRequirements.RequiresStrongly(elf, Target), Is.True);

        Assert.That(ElfVersionRequirements.MarkWeak(elf, Target), Is.EqualTo(WeakenOutcome.MarkedWeak));

        int[] changed = [.. Enumerable.Range(0, elf.Length).Where(i => elf[i] != before[i])];
        Assert.That(changed, Is.EqualTo(new[] { targetFlagsAt }), "only the low byte of vna_flags of GLIBCXX_3.4.32 changes");
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(targetFlagsAt)), Is.EqualTo(0x2), "VER_FLG_WEAK");
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(otherFlagsAt)), Is.Zero, "GLIBCXX_3.4 stays strong");
        Assert.That(ElfVersionRequirements.RequiresStrongly(elf, Target), Is.False);
        Assert.That(ElfVersionRequirements.RequiresStrongly(elf, "GLIBCXX_3.4"), Is.True);

        byte[] once = (byte[])elf.Clone();
        Assert.That(ElfVersionRequirements.MarkWeak(elf, Target), Is.EqualTo(WeakenOutcome.AlreadyWeak));
        Assert.That(elf, Is.EqualTo(once));
    }

    [Test]
    public void A_version_that_is_not_required_exactly_is_left_alone()
    {
        byte[] elf = SyntheticElf.Build(out _, out _);
        byte[] before = (byte[])elf.Clone();

        // A prefix of a required name, and a name that is absent, are both "not required".
        Assert.That(ElfVersionRequirements.MarkWeak(elf, "GLIBCXX_3.4.3"), Is.EqualTo(WeakenOutcome.NotRequired));
        Assert.That(ElfVersionRequirements.MarkWeak(elf, "GLIBCXX_3.4.33"), Is.EqualTo(WeakenOutcome.NotRequired));
        Assert.That(ElfVersionRequirements.RequiresStrongly(elf, "GLIBCXX_3.4.33"), Is.False);
        Assert.That(elf, Is.EqualTo(before));
    }

    [Test]
    public void Files_that_are_not_little_endian_elf64_or_point_outside_themselves_are_invalid_data()
    {
        Assert.That(() => ElfVersionRequirements.MarkWeak(new byte[100], Target),
            Throws.TypeOf<InvalidDataException>().With.Message.Contains("not an ELF file"));

        byte[] elf32 = SyntheticElf.Build(out _, out _);
        elf32[4] = 1; // EI_CLASS = ELFCLASS32
        Assert.That(() => ElfVersionRequirements.MarkWeak(elf32, Target),
            Throws.TypeOf<InvalidDataException>().With.Message.Contains("ELF64"));

        byte[] truncated = SyntheticElf.Build(out _, out _)[..^40]; // cuts into the section header table at the end
        Assert.That(() => ElfVersionRequirements.MarkWeak(truncated, Target),
            Throws.TypeOf<InvalidDataException>().With.Message.Contains("past the end"));

        byte[] badLink = SyntheticElf.Build(out _, out _);
        BinaryPrimitives.WriteUInt32LittleEndian(badLink.AsSpan(SyntheticElf.VersionSectionHeader(badLink) + 0x28), 9);
        Assert.That(() => ElfVersionRequirements.MarkWeak(badLink, Target),
            Throws.TypeOf<InvalidDataException>().With.Message.Contains("links to section 9"));
    }

    [Test]
    public void Patching_a_file_rewrites_it_in_place_without_leftovers_and_names_a_bad_file()
    {
        using var directory = new TempDirectory();
        string path = directory.File("libsample.so");
        File.WriteAllBytes(path, SyntheticElf.Build(out int flagsAt, out _));

        Assert.That(ElfVersionRequirements.MarkWeak(path, Target), Is.EqualTo(WeakenOutcome.MarkedWeak));
        Assert.That(File.ReadAllBytes(path)[flagsAt], Is.EqualTo(0x2));
        Assert.That(ElfVersionRequirements.MarkWeak(path, Target), Is.EqualTo(WeakenOutcome.AlreadyWeak));
        Assert.That(directory.FileNames(), Is.EqualTo(new[] { "libsample.so" }));

        string text = directory.File("notes.txt");
        File.WriteAllText(text, "not a library, but long enough to hold an ELF header of sixty-four bytes.");
        Assert.That(() => ElfVersionRequirements.MarkWeak(text, Target),
            Throws.TypeOf<InvalidDataException>().With.Message.Contains("notes.txt"));
    }

    [Test]
    public void The_host_libstdcxx_is_found_and_knows_its_base_version()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.Ignore("libstdc++ is looked up on Linux only.");
        }

        Assert.That(ElfVersionRequirements.FindHostLibStdCxx(), Is.Not.Null.And.Contains("libstdc++.so.6"));
        Assert.That(ElfVersionRequirements.HostLibStdCxxProvides("GLIBCXX_3.4"), Is.True, "every libstdc++.so.6 defines GLIBCXX_3.4");
        Assert.That(ElfVersionRequirements.HostLibStdCxxProvides("GLIBCXX_99.0"), Is.False);
    }
}

/// <summary>A minimal little-endian ELF64 image with just the sections the version patch reads.</summary>
internal static class SyntheticElf
{
    private const int HeaderSize = 64;
    private const int SectionHeaderSize = 64;

    /// <summary>
    /// Section 1 is a string table, section 2 a <c>.gnu.version_r</c> with one <c>Elf64_Verneed</c> for libstdc++.so.6
    /// and two <c>Elf64_Vernaux</c>: GLIBCXX_3.4 then GLIBCXX_3.4.32, both strong. The section header table is last.
    /// </summary>
    public static byte[] Build(out int targetFlagsAt, out int otherFlagsAt)
    {
        byte[] strings = Encoding.ASCII.GetBytes("\0libstdc++.so.6\0GLIBCXX_3.4\0GLIBCXX_3.4.32\0");
        uint libraryName = 1, baseName = 16, targetName = 28;

        int stringsAt = HeaderSize;
        int needAt = (stringsAt + strings.Length + 3) & ~3;
        int needSize = 16 + 2 * 16;
        int sectionTable = (needAt + needSize + 7) & ~7;
        var elf = new byte[sectionTable + 3 * SectionHeaderSize];
        Span<byte> span = elf;

        // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT; then e_type = ET_DYN, e_machine = x86-64.
        "\x7F"u8.CopyTo(span);
        "ELF"u8.CopyTo(span[1..]);
        span[4] = 2;
        span[5] = 1;
        span[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(span[0x10..], 3);
        BinaryPrimitives.WriteUInt16LittleEndian(span[0x12..], 0x3E);
        BinaryPrimitives.WriteUInt64LittleEndian(span[0x28..], (ulong)sectionTable);
        BinaryPrimitives.WriteUInt16LittleEndian(span[0x34..], HeaderSize);
        BinaryPrimitives.WriteUInt16LittleEndian(span[0x3A..], SectionHeaderSize);
        BinaryPrimitives.WriteUInt16LittleEndian(span[0x3C..], 3);

        strings.CopyTo(span[stringsAt..]);

        // Elf64_Verneed: vn_version, vn_cnt, vn_file, vn_aux (relative), vn_next (0: last).
        BinaryPrimitives.WriteUInt16LittleEndian(span[needAt..], 1);
        BinaryPrimitives.WriteUInt16LittleEndian(span[(needAt + 2)..], 2);
        BinaryPrimitives.WriteUInt32LittleEndian(span[(needAt + 4)..], libraryName);
        BinaryPrimitives.WriteUInt32LittleEndian(span[(needAt + 8)..], 16);
        int baseAux = needAt + 16, targetAux = baseAux + 16;
        WriteAux(span[baseAux..], baseName, other: 2, next: 16);
        WriteAux(span[targetAux..], targetName, other: 3, next: 0);

        // Section headers: [0] null, [1] SHT_STRTAB, [2] SHT_GNU_verneed linked to [1] with one entry.
        WriteSection(span[(sectionTable + SectionHeaderSize)..], type: 3, offset: stringsAt, size: strings.Length, link: 0, info: 0);
        WriteSection(span[(sectionTable + 2 * SectionHeaderSize)..], type: 0x6ffffffe, offset: needAt, size: needSize, link: 1, info: 1);

        targetFlagsAt = targetAux + 4;
        otherFlagsAt = baseAux + 4;
        return elf;
    }

    /// <summary>The offset of the <c>.gnu.version_r</c> section header in an image from <see cref="Build"/>.</summary>
    public static int VersionSectionHeader(byte[] elf) => (int)BinaryPrimitives.ReadUInt64LittleEndian(elf.AsSpan(0x28)) + 2 * SectionHeaderSize;

    // Elf64_Vernaux: vna_hash, vna_flags (0: strong), vna_other, vna_name, vna_next.
    private static void WriteAux(Span<byte> at, uint name, ushort other, uint next)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(at, 0x0297F861);
        BinaryPrimitives.WriteUInt16LittleEndian(at[6..], other);
        BinaryPrimitives.WriteUInt32LittleEndian(at[8..], name);
        BinaryPrimitives.WriteUInt32LittleEndian(at[12..], next);
    }

    private static void WriteSection(Span<byte> at, uint type, int offset, int size, uint link, uint info)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(at[4..], type);
        BinaryPrimitives.WriteUInt64LittleEndian(at[0x18..], (ulong)offset);
        BinaryPrimitives.WriteUInt64LittleEndian(at[0x20..], (ulong)size);
        BinaryPrimitives.WriteUInt32LittleEndian(at[0x28..], link);
        BinaryPrimitives.WriteUInt32LittleEndian(at[0x2C..], info);
    }
}
