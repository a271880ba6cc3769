using ModelSurgery.Inference.IO;

namespace ModelSurgery.Tests.Inference.IO;

/// <summary>Telling a rotational disk from the mount table and the block-device tree, on copies laid out as Linux lays them out.</summary>
public sealed class StorageDeviceTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("storage-device").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static readonly string[] MountInfo =
    [
        "26 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        "21 26 0:20 / /proc rw,relatime - proc proc rw",
        "40 26 8:1 / /data rw,relatime - ext4 /dev/sda1 rw",
        "41 40 8:16 / /data/fast rw,relatime - ext4 /dev/sdb rw",
        "42 26 8:32 / /mnt/my\\040disk rw,relatime - ext4 /dev/sdc rw",
        "43 26 0:45 / /mnt/ram rw,relatime - tmpfs tmpfs rw",
    ];

    [TestCase("/work/model/a.safetensors", "254:0")]
    [TestCase("/data/model.safetensors", "8:1")]
    [TestCase("/data/fast/model.safetensors", "8:16")]
    [TestCase("/data/fastest/model.safetensors", "8:1")]
    [TestCase("/data", "8:1")]
    [TestCase("/mnt/my disk/model.safetensors", "8:32")]
    [TestCase("/mnt/ram/model.safetensors", null)]
    public void The_device_is_that_of_the_longest_mount_point_above_the_path(string path, string? device) =>
        Assert.That(StorageDevice.DeviceOf(path, MountInfo), Is.EqualTo(device));

    [Test]
    public void A_later_mount_on_the_same_point_hides_the_earlier_one() =>
        Assert.That(StorageDevice.DeviceOf("/data/x", [.. MountInfo, "50 40 9:0 / /data rw - xfs /dev/md0 rw"]), Is.EqualTo("9:0"));

    /// <summary>
    /// A disk's entry links to its folder, which holds <c>queue/rotational</c>; a partition's links to a folder inside its
    /// disk's, without a queue of its own.
    /// </summary>
    [Test]
    public void Disks_and_partitions_report_their_disk_queue_flag()
    {
        string devices = Path.Combine(_dir, "devices");
        WriteFlag(Path.Combine(devices, "vda"), "0");
        WriteFlag(Path.Combine(devices, "sda"), "1");
        Directory.CreateDirectory(Path.Combine(devices, "sda", "sda1"));
        WriteFlag(Path.Combine(devices, "sdb"), "0");
        string block = Path.Combine(_dir, "block");
        Directory.CreateDirectory(block);
        Directory.CreateSymbolicLink(Path.Combine(block, "254:0"), Path.Combine("..", "devices", "vda"));
        Directory.CreateSymbolicLink(Path.Combine(block, "8:1"), Path.Combine("..", "devices", "sda", "sda1"));
        Directory.CreateSymbolicLink(Path.Combine(block, "8:16"), Path.Combine("..", "devices", "sdb"));
        string mountInfo = Path.Combine(_dir, "mountinfo");
        File.WriteAllLines(mountInfo, MountInfo);

        // A model file under /work that links to a blob under /data (on the rotational partition).
        string link = Path.Combine(_dir, "model.safetensors");
        File.CreateSymbolicLink(link, "/data/blobs/0123abcd");
        string realMounts = Path.Combine(_dir, "mountinfo-with-temp");
        File.WriteAllLines(realMounts, [.. MountInfo, $"60 26 254:0 / {_dir} rw - ext4 /dev/vda rw"]);

        Assert.Multiple(() =>
        {
            Assert.That(StorageDevice.IsRotational("/work/a.safetensors", mountInfo, block), Is.False);
            Assert.That(StorageDevice.IsRotational("/data/a.safetensors", mountInfo, block), Is.True, "a partition reads its disk's flag");
            Assert.That(StorageDevice.IsRotational("/data/fast/a.safetensors", mountInfo, block), Is.False);
            Assert.That(StorageDevice.IsRotational("/mnt/my disk/a.safetensors", mountInfo, block), Is.Null, "no entry for the device");
            Assert.That(StorageDevice.IsRotational("/mnt/ram/a.safetensors", mountInfo, block), Is.Null, "no block device");
            Assert.That(StorageDevice.IsRotational("/work/a.safetensors", Path.Combine(_dir, "missing"), block), Is.Null, "no mount table");
            Assert.That(StorageDevice.IsRotational(link, realMounts, block), Is.True, "a link is judged by its target");
        });
    }

    private static void WriteFlag(string deviceFolder, string flag)
    {
        Directory.CreateDirectory(Path.Combine(deviceFolder, "queue"));
        File.WriteAllText(Path.Combine(deviceFolder, "queue", "rotational"), flag + "\n");
    }
}
