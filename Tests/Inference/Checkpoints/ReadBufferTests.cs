using ModelSurgery.Inference.Checkpoints;

namespace ModelSurgery.Tests.Checkpoints;

public sealed unsafe class ReadBufferTests
{
    [TestCase(0L)]
    [TestCase(1L)]
    [TestCase(SafetensorsFile.RowBlockBytes)]
    [TestCase(SafetensorsFile.RowBlockBytes + 1)]
    public void A_buffer_an_array_can_hold_is_managed_and_holds_every_byte(long length)
    {
        using var buffer = ReadBuffer.Rent(length);

        Assert.That(buffer.IsNative, Is.False);
        Assert.That(buffer.Length, Is.EqualTo(length));
        for (long i = 0; i < length; i++)
        {
            buffer.Pointer[i] = (byte)(i * 31);
        }

        for (long i = 0; i < length; i++)
        {
            Assert.That(buffer.Pointer[i], Is.EqualTo((byte)(i * 31)), $"byte {i}");
        }
    }

    [Test]
    public void A_row_longer_than_any_array_gets_native_memory_addressable_to_its_last_byte()
    {
        // A row of more than 2 GiB (a matrix with over a billion bf16 columns) is read whole by a sub-matrix read; renting
        // an array for it overflowed. Only the pages written here are committed.
        long length = (long)Array.MaxLength + (1L << 20) + 3;
        using var buffer = ReadBuffer.Rent(length);

        Assert.That(buffer.IsNative, Is.True);
        Assert.That(buffer.Length, Is.EqualTo(length));
        buffer.Pointer[0] = 0x5A;
        buffer.Pointer[int.MaxValue] = 0xA5;
        buffer.Pointer[length - 1] = 0x3C;
        Assert.That((buffer.Pointer[0], buffer.Pointer[int.MaxValue], buffer.Pointer[length - 1]), Is.EqualTo(((byte)0x5A, (byte)0xA5, (byte)0x3C)));
    }

    [Test]
    public void A_negative_length_is_refused() =>
        Assert.That(() => ReadBuffer.Rent(-1), Throws.TypeOf<ArgumentOutOfRangeException>());
}
