using System.CommandLine;

namespace ModelSurgery.Cli.Commands;

/// <summary>Every subcommand of the tool.</summary>
internal static class CommandCatalog
{
    public static IEnumerable<Command> Create(CliContext context)
    {
        yield return InspectCommand.Create(context);
        yield return SynthCommand.Create(context);
        yield return GenerateCommand.Create(context);
        yield return PerplexityCommand.Create(context);
        yield return Llama2CCommands.CreateImport(context);
        yield return Llama2CCommands.CreateExport(context);
        yield return EvalCommand.Create(context);
        yield return SurgeryCommands.CreateScore(context);
        yield return SurgeryCommands.CreatePlan(context);
        yield return SurgeryCommands.CreateBuild(context);
        yield return SurgeryCommands.CreatePrune(context);
        yield return VocabCommands.Create(context);
        yield return TokenizeCommand.Create(context);
        yield return TrainCommand.Create(context);
        yield return DistillCommand.Create(context);
        yield return CacheTeacherCommand.Create(context);
        yield return ExportJobCommand.Create(context);
        yield return RunCommand.Create(context);
    }
}
