using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace ModelSurgery.Inference.Runtime;

/// <summary>
/// <c>nn.functional.linear</c> with two CPU-specific paths for a single row (decoding one token,
/// <c>[1, in] x [out, in]ᵀ</c>): fp32 and bf16 rows with contiguous weights of their dtype run in a managed
/// matrix-vector kernel that reads the weights in place (<see cref="RowProjection"/>); other one-row bf16 calls run with
/// LibTorch's oneDNN (mkldnn) path switched off, so that LibTorch's own bf16 matrix-vector kernel computes them.
/// </summary>
/// <remarks>
/// <para>
/// Why the kernel: LibTorch's one-row fp32 <c>linear</c> for the [32000, 768] head streamed its weights at about 15 GB/s
/// on a 2-core AVX-512 machine whose tensor copy moved 17-20 GB/s; the kernel reads them at about 33 GB/s (the cache-hot
/// projections of a layer faster still), and in bf16 it reads the head at about 37 GB/s against LibTorch's 26 GB/s.
/// Decoding reads every weight once per token, so this is most of a token's time.
/// </para>
/// <para>
/// Why: LibTorch 2.x sends every bf16 CPU matmul to oneDNN, which for one row is about 4 times slower per byte of
/// weights than LibTorch's own bf16 gemv (measured on an AVX-512 BF16 CPU: a [32000, 768] bf16 head took 4.56 ms,
/// 10.8 GB/s, through oneDNN and 1.22 ms, 40.4 GB/s, without). Decoding reads every weight once per token, so this is
/// the difference between bf16 decoding being slower than fp32 and being faster. Matmuls of many rows (prompt passes,
/// training) keep oneDNN, which is the faster path there.
/// </para>
/// <para>
/// How: TorchSharp does not expose <c>torch.backends.mkldnn.enabled</c>, so the switch calls the C++ functions
/// <c>at::globalContext()</c>, <c>at::Context::userEnabledMkldnn()</c> and <c>at::Context::setUserEnabledMkldnn(bool)</c>
/// that <c>libtorch_cpu.so</c> exports (Itanium-mangled names, so Linux x64 only). Where they cannot be found (another
/// OS, another LibTorch build) the detour is skipped and the plain <c>linear</c> runs.
/// </para>
/// <para>
/// The flag is process-global, not per thread: while one thread decodes a row, a bf16 matmul on another thread also
/// runs without oneDNN (correct, only perhaps slower). Calls are reference-counted, so nested and concurrent calls leave
/// the flag as the first one found it once the last one returns, also when the matmul throws; a flag the caller had
/// switched off stays off.
/// </para>
/// </remarks>
public static class CpuLinear
{
    /// <summary>
    /// Inputs with at most this many rows (the product of all dimensions but the last) take the detour. One, because
    /// LibTorch's own bf16 kernel is a matrix-vector product: for the [32000, 768] head on a 2-core AVX-512 BF16 machine
    /// it took 1.42 ms against oneDNN's 2.66 ms for one row, but 6.5 ms against 2.6 ms for 4 rows and 35 ms against
    /// 7.4 ms for 16.
    /// </summary>
    public const long MaxRowsWithoutOneDnn = 1;

    /// <summary>Whether this process can switch oneDNN off around a call (the LibTorch symbols were found).</summary>
    public static bool CanSwitchOneDnn => OneDnnSwitch.Default is not null;

    /// <summary>
    /// <c>y = x Wᵀ + b</c> over the last dimension, as <c>nn.functional.linear</c>; a one-row CPU input the managed kernel
    /// handles runs there, and another bf16 CPU input of at most <see cref="MaxRowsWithoutOneDnn"/> rows is computed with
    /// oneDNN switched off (see the remarks of <see cref="CpuLinear"/>).
    /// </summary>
    /// <param name="input">[..., in].</param>
    /// <param name="weight">[out, in].</param>
    /// <param name="bias">[out], or null.</param>
    /// <returns>[..., out], as <c>nn.functional.linear</c> returns it.</returns>
    public static Tensor Linear(Tensor input, Tensor weight, Tensor? bias = null) => Linear(input, weight, bias, OneDnnSwitch.Default);

    /// <summary>The same with an explicit switch; null runs the plain <c>linear</c> (the fallback where the symbols are missing).</summary>
    internal static Tensor Linear(Tensor input, Tensor weight, Tensor? bias, OneDnnSwitch? oneDnn)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(weight);
        if (RowProjection.Applies(input, weight, bias))
        {
            return RowProjection.Compute(input, weight, bias, torch.get_num_threads());
        }

        if (oneDnn is null || !TakesDetour(input))
        {
            return nn.functional.linear(input, weight, bias);
        }

        oneDnn.Enter();
        try
        {
            return nn.functional.linear(input, weight, bias);
        }
        finally
        {
            oneDnn.Exit();
        }
    }

    /// <summary>Whether <paramref name="input"/> is one for which oneDNN is switched off: bf16, on the CPU, few rows.</summary>
    internal static bool TakesDetour(Tensor input)
    {
        if (input.dtype != ScalarType.BFloat16 || input.device_type != DeviceType.CPU || input.dim() == 0)
        {
            return false;
        }

        long rows = 1;
        for (int i = 0; i < input.dim() - 1; i++)
        {
            rows *= input.shape[i];
        }

        return rows <= MaxRowsWithoutOneDnn;
    }
}

/// <summary>
/// LibTorch's global oneDNN flag (<c>torch.backends.mkldnn.enabled</c>) reached through <c>libtorch_cpu.so</c>'s
/// exported C++ functions, switched off while at least one caller is inside <see cref="Enter"/> / <see cref="Exit"/>.
/// </summary>
internal sealed unsafe class OneDnnSwitch
{
    /// <summary>Mangled names of <c>at::globalContext()</c>, <c>at::Context::userEnabledMkldnn() const</c>, <c>at::Context::setUserEnabledMkldnn(bool)</c>.</summary>
    internal const string GlobalContextSymbol = "_ZN2at13globalContextEv";
    internal const string GetEnabledSymbol = "_ZNK2at7Context17userEnabledMkldnnEv";
    internal const string SetEnabledSymbol = "_ZN2at7Context20setUserEnabledMkldnnEb";

    private static readonly Lazy<OneDnnSwitch?> Loaded = new(() => TryLoad(GlobalContextSymbol, GetEnabledSymbol, SetEnabledSymbol));

    private readonly Lock _gate = new();
    private readonly nint _context;
    private readonly delegate* unmanaged<nint, byte> _getEnabled;
    private readonly delegate* unmanaged<nint, byte, void> _setEnabled;
    private int _depth;
    private bool _switchedOff;

    private OneDnnSwitch(nint context, delegate* unmanaged<nint, byte> getEnabled, delegate* unmanaged<nint, byte, void> setEnabled)
    {
        _context = context;
        _getEnabled = getEnabled;
        _setEnabled = setEnabled;
    }

    /// <summary>The switch of the LibTorch this process loaded, or null where its symbols are not found.</summary>
    public static OneDnnSwitch? Default => Loaded.Value;

    /// <summary>LibTorch's flag as it is now.</summary>
    public bool Enabled
    {
        get
        {
            lock (_gate)
            {
                return _getEnabled(_context) != 0;
            }
        }
        set
        {
            lock (_gate)
            {
                _setEnabled(_context, value ? (byte)1 : (byte)0);
            }
        }
    }

    /// <summary>Looks the three symbols up in the loaded <c>libtorch_cpu</c>; null when any is missing or the platform is not Linux x64.</summary>
    internal static OneDnnSwitch? TryLoad(string globalContextSymbol, string getEnabledSymbol, string setEnabledSymbol)
    {
        // The names are the Itanium C++ ABI's and the member functions take the object as their first argument, which
        // holds for the System V x64 calling convention; elsewhere leave LibTorch alone.
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return null;
        }

        // Bind to the libtorch_cpu TorchSharp already loaded (a dlopen by soname returns that one), else to the one
        // next to TorchSharp, found as TorchSharp finds it.
        _ = torch.get_num_threads();
        if (!NativeLibrary.TryLoad("libtorch_cpu.so", out nint library)
            && !NativeLibrary.TryLoad("torch_cpu", typeof(torch).Assembly, null, out library))
        {
            return null;
        }

        if (!NativeLibrary.TryGetExport(library, globalContextSymbol, out nint globalContext)
            || !NativeLibrary.TryGetExport(library, getEnabledSymbol, out nint getEnabled)
            || !NativeLibrary.TryGetExport(library, setEnabledSymbol, out nint setEnabled))
        {
            return null;
        }

        nint context = ((delegate* unmanaged<nint>)globalContext)();
        return context == 0 ? null : new OneDnnSwitch(context, (delegate* unmanaged<nint, byte>)getEnabled, (delegate* unmanaged<nint, byte, void>)setEnabled);
    }

    /// <summary>Switches oneDNN off if this is the outermost caller and it is on; pair with <see cref="Exit"/>.</summary>
    public void Enter()
    {
        lock (_gate)
        {
            if (_depth++ == 0)
            {
                _switchedOff = _getEnabled(_context) != 0;
                if (_switchedOff)
                {
                    _setEnabled(_context, 0);
                }
            }
        }
    }

    /// <summary>Restores the flag <see cref="Enter"/> found once the last caller leaves.</summary>
    public void Exit()
    {
        lock (_gate)
        {
            if (_depth == 0)
            {
                throw new InvalidOperationException("OneDnnSwitch.Exit without a matching Enter.");
            }

            if (--_depth == 0 && _switchedOff)
            {
                _setEnabled(_context, 1);
                _switchedOff = false;
            }
        }
    }
}
