using System.CommandLine;
using ModelSurgery.Benchmarks;

// Benchmarks print measured figures; they are commands, never tests.
// First of all, as the tool does: threads other than the main one then reuse freed blocks of 64 MiB or more.
ModelSurgery.Inference.Runtime.NativeAllocator.RestartOnOneArena();
// Before LibTorch loads: OpenMP threads that spin while waiting starve each other on small or busy machines.
ModelSurgery.Training.CpuThreading.PreferPassiveWaiting();
var root = new RootCommand("ModelSurgery benchmarks: each command prints what it measured on this machine.")
{
    IoBenchmark.Create(),
    IoBenchmark.CreateStreamingChild(),
    TrainBenchmark.Create(),
    GenerateBenchmark.Create(),
    DecodeProfileBenchmark.Create(),
    EvalBenchmark.Create(),
    SurgeryBenchmark.Create(),
    SurgeryBenchmark.CreateScoreChild(),
    SurgeryBenchmark.CreateBuildChild(),
    TokenizerParityBenchmark.Create(),
};
return await root.Parse(args).InvokeAsync();
