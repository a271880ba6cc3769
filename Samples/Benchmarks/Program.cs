using System.CommandLine;
using ModelSurgery.Benchmarks;

// Benchmarks print measured figures; they are commands, never tests.
// No restart on one allocator arena here (unlike the tool): the benchmarks time their steps on the main thread, whose
// arena keeps large blocks anyway, and one arena shared by the worker threads made bf16 steps up to 1.6x slower.
// Before LibTorch loads: OpenMP threads that spin while waiting starve each other on small or busy machines.
ModelSurgery.Training.CpuThreading.PreferPassiveWaiting();
var root = new RootCommand("ModelSurgery benchmarks: each command prints what it measured on this machine.")
{
    IoBenchmark.Create(),
    IoBenchmark.CreateStreamingChild(),
    IoBenchmark.CreateLoadChild(),
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
