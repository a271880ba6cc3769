using System.Runtime.InteropServices;

namespace ModelSurgery.Training;

/// <summary>What <see cref="CpuThreading.PreferPassiveWaiting"/> did.</summary>
public enum PassiveWaitingOutcome
{
    /// <summary>The wait policy was set; the OpenMP runtime will read it when libtorch loads.</summary>
    Applied,

    /// <summary><c>OMP_WAIT_POLICY</c> was already set by the caller's environment and was left as it was.</summary>
    KeptExistingSetting,

    /// <summary>libtorch (and its OpenMP runtime) is already loaded, so a new setting would not be read; nothing changed.</summary>
    TooLate,

    /// <summary>The platform's OpenMP runtime is not configured this way here (not Linux); nothing changed.</summary>
    Unsupported,
}

/// <summary>
/// Process-wide settings of the OpenMP runtime that libtorch's CPU kernels run on.
/// <para>
/// By default idle OpenMP workers spin for a while before sleeping. When the cores are shared with other busy
/// processes, a spinning worker holds a core that the worker it waits for needs, and every one of the thousands of
/// small parallel operations of a training step pays for it: measured on a shared 2-core machine, a Llama training step
/// ran 4 to 5 times slower and the AdamW update alone took over a second instead of under 0.1 s. Passive waiting puts
/// idle workers to sleep at once, which costs a few microseconds per operation on an idle machine.
/// </para>
/// </summary>
public static class CpuThreading
{
    /// <summary>The environment variable the OpenMP runtime reads its wait policy from.</summary>
    public const string WaitPolicyVariable = "OMP_WAIT_POLICY";

    /// <summary>
    /// Sets <c>OMP_WAIT_POLICY=PASSIVE</c> unless the environment already chooses a policy. Call it first thing in a
    /// program's entry point, before any TorchSharp call: the OpenMP runtime reads the variable once, when libtorch loads.
    /// </summary>
    /// <returns>What was done; only <see cref="PassiveWaitingOutcome.Applied"/> changes the process.</returns>
    public static PassiveWaitingOutcome PreferPassiveWaiting()
    {
        if (!OperatingSystem.IsLinux())
        {
            return PassiveWaitingOutcome.Unsupported;
        }

        if (!string.IsNullOrEmpty(Environment.GetEnvironmentVariable(WaitPolicyVariable)))
        {
            return PassiveWaitingOutcome.KeptExistingSetting;
        }

        if (IsOpenMpRuntimeLoaded())
        {
            return PassiveWaitingOutcome.TooLate;
        }

        // Environment.SetEnvironmentVariable only changes .NET's copy on Unix; the native runtime reads the C environment.
        if (NativeMethods.setenv(WaitPolicyVariable, "PASSIVE", 0) != 0)
        {
            return PassiveWaitingOutcome.Unsupported;
        }

        Environment.SetEnvironmentVariable(WaitPolicyVariable, "PASSIVE");
        return PassiveWaitingOutcome.Applied;
    }

    /// <summary>Whether libtorch's CPU library or an OpenMP runtime is mapped into this process (Linux: /proc/self/maps).</summary>
    /// <returns>True once TorchSharp has loaded its native libraries.</returns>
    public static bool IsOpenMpRuntimeLoaded()
    {
        const string maps = "/proc/self/maps";
        if (!File.Exists(maps))
        {
            return false;
        }

        foreach (string line in File.ReadLines(maps))
        {
            if (line.Contains("libgomp", StringComparison.Ordinal)
                || line.Contains("libiomp", StringComparison.Ordinal)
                || line.Contains("libtorch_cpu", StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }

    private static class NativeMethods
    {
        /// <summary>libc <c>setenv</c>; the strings are passed as NUL-terminated ASCII bytes.</summary>
        public static int setenv(string name, string value, int overwrite) =>
            SetEnvironment(NulTerminated(name), NulTerminated(value), overwrite);

        [DllImport("libc", EntryPoint = "setenv")]
        private static extern int SetEnvironment(byte[] name, byte[] value, int overwrite);

        private static byte[] NulTerminated(string text) => System.Text.Encoding.ASCII.GetBytes(text + "\0");
    }
}
