using System.Runtime.InteropServices;
using ModelSurgery.Inference.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Tests.Inference;

/// <summary>
/// The one-row bf16 linear that runs with LibTorch's oneDNN path switched off: same numbers as the plain path, the
/// process-global flag left as found, everything else untouched. The flag is global, so these tests do not run
/// alongside others. The weights are non-contiguous views, which the managed one-row kernel (see
/// <c>RowProjectionTests</c>) does not take, so one-row calls here reach the detour and the plain path.
/// </summary>
[NonParallelizable]
public sealed class CpuLinearTests
{
    private const long In = 768;
    private const long Out = 1000;

    private static readonly bool LinuxX64 = OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64;

    private static (Tensor Input, Tensor Weight, Tensor Bias) Operands(long rows, ScalarType dtype, int seed)
    {
        using var generator = new Generator((ulong)seed);
        Tensor input = torch.randn([rows, In], generator: generator).to_type(dtype); // [rows, in]
        // A column-major view: RowProjection leaves non-contiguous weights to LibTorch, so these calls reach the detour.
        Tensor weight = (torch.randn([In, Out], generator: generator) * 0.05).to_type(dtype).t(); // [out, in]
        Tensor bias = torch.randn([Out], generator: generator).to_type(dtype); // [out]
        return (input, weight, bias);
    }

    private static OneDnnSwitch Switch()
    {
        if (!LinuxX64)
        {
            Assert.Ignore("LibTorch's oneDNN flag is switched only on Linux x64.");
        }

        return OneDnnSwitch.Default ?? throw new AssertionException("libtorch_cpu's oneDNN flag functions were not found on Linux x64.");
    }

    [Test]
    public void The_switch_is_found_on_linux_x64_and_the_flag_starts_on()
    {
        Assert.That(CpuLinear.CanSwitchOneDnn, Is.EqualTo(LinuxX64));
        if (LinuxX64)
        {
            Assert.That(Switch().Enabled, Is.True, "LibTorch's default is oneDNN on");
        }
    }

    [Test]
    public void A_one_row_bf16_projection_equals_the_plain_path_within_bf16_rounding()
    {
        using var scope = NewDisposeScope();
        var (input, weight, bias) = Operands(1, ScalarType.BFloat16, seed: 3);
        Assert.That(CpuLinear.TakesDetour(input), Is.True);
        Assert.That(CpuLinear.TakesDetour(input.reshape(1, 1, In)), Is.True, "[1, 1, in], a decoding step's shape");

        Tensor detour = CpuLinear.Linear(input, weight, bias).to_type(ScalarType.Float64); // [1, out]
        Tensor plain = nn.functional.linear(input, weight, bias).to_type(ScalarType.Float64); // [1, out]

        // Each path rounds its result to bf16 (half an ulp of the magnitude, at most eps/2 of sum |x w| + |b|) after
        // summing In products in at least fp32 precision (at most In * eps32 of the same sum), so two correct paths
        // differ by at most twice that.
        Tensor magnitude = input.to_type(ScalarType.Float64).abs().matmul(weight.to_type(ScalarType.Float64).abs().t())
            + bias.to_type(ScalarType.Float64).abs(); // [1, out]
        double perUnit = 2 * ((torch.finfo(ScalarType.BFloat16).eps / 2) + (In * torch.finfo(ScalarType.Float32).eps));
        Tensor excess = (detour - plain).abs() - (magnitude * perUnit); // [1, out]
        Assert.That(excess.max().item<double>(), Is.LessThanOrEqualTo(0.0));
        Assert.That(Switch().Enabled, Is.True, "the flag is on again after the call");
    }

    [Test]
    public void The_flag_is_restored_when_the_projection_throws()
    {
        OneDnnSwitch oneDnn = Switch();
        using var scope = NewDisposeScope();
        var (input, weight, _) = Operands(1, ScalarType.BFloat16, seed: 5);
        Tensor wrongWidth = input[.., ..(int)(In - 1)]; // [1, in - 1]
        Assert.That(CpuLinear.TakesDetour(wrongWidth), Is.True);

        Assert.Throws<ExternalException>(() => CpuLinear.Linear(wrongWidth, weight));
        Assert.That(oneDnn.Enabled, Is.True);

        // The count went back to zero: the next call switches off and on again.
        oneDnn.Enter();
        Assert.That(oneDnn.Enabled, Is.False);
        oneDnn.Exit();
        Assert.That(oneDnn.Enabled, Is.True);
    }

    [Test]
    public void Nested_and_concurrent_calls_restore_the_flag_once_the_last_leaves()
    {
        OneDnnSwitch oneDnn = Switch();
        oneDnn.Enter();
        oneDnn.Enter();
        Assert.That(oneDnn.Enabled, Is.False);
        oneDnn.Exit();
        Assert.That(oneDnn.Enabled, Is.False, "an outer caller is still inside");
        oneDnn.Exit();
        Assert.That(oneDnn.Enabled, Is.True);
        Assert.Throws<InvalidOperationException>(oneDnn.Exit);

        Parallel.For(0, 64, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            using var scope = NewDisposeScope();
            var (input, weight, bias) = Operands(1, ScalarType.BFloat16, seed: 100 + i);
            CpuLinear.Linear(input, weight, bias);
        });
        Assert.That(oneDnn.Enabled, Is.True);
    }

    [Test]
    public void A_flag_the_caller_switched_off_stays_off()
    {
        OneDnnSwitch oneDnn = Switch();
        oneDnn.Enabled = false;
        try
        {
            using var scope = NewDisposeScope();
            var (input, weight, bias) = Operands(1, ScalarType.BFloat16, seed: 7);
            CpuLinear.Linear(input, weight, bias);
            Assert.That(oneDnn.Enabled, Is.False);
        }
        finally
        {
            oneDnn.Enabled = true;
        }
    }

    [TestCase(1L, ScalarType.Float32)]
    [TestCase(4L, ScalarType.Float32)]
    [TestCase(2L, ScalarType.BFloat16)]
    [TestCase(256L, ScalarType.BFloat16)]
    public void Fp32_and_multi_row_inputs_take_the_plain_path_bit_for_bit(long rows, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var (input, weight, bias) = Operands(rows, dtype, seed: 11);
        Assert.That(CpuLinear.TakesDetour(input), Is.False);
        Assert.That(CpuLinear.TakesDetour(input.reshape(rows, 1, In)), Is.False, "rows count every leading dimension");

        Tensor result = CpuLinear.Linear(input, weight, bias);
        Tensor plain = nn.functional.linear(input, weight, bias);
        Assert.That(result.dtype, Is.EqualTo(dtype));
        Assert.That(result.eq(plain).all().item<bool>(), Is.True);
    }

    [Test]
    public void Without_the_symbols_the_plain_linear_runs()
    {
        Assert.That(OneDnnSwitch.TryLoad(OneDnnSwitch.GlobalContextSymbol, "_ZNK2at7Context18noSuchFlagFunctionEv", OneDnnSwitch.SetEnabledSymbol), Is.Null);

        using var scope = NewDisposeScope();
        var (input, weight, bias) = Operands(1, ScalarType.BFloat16, seed: 13);
        Tensor fallback = CpuLinear.Linear(input, weight, bias, oneDnn: null);
        Assert.That(fallback.eq(nn.functional.linear(input, weight, bias)).all().item<bool>(), Is.True);
        Assert.That(CpuLinear.Linear(input, weight, null, oneDnn: null).eq(nn.functional.linear(input, weight)).all().item<bool>(), Is.True);
    }
}
