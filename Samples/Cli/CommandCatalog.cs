using System.CommandLine;

namespace ModelSurgery.Cli.Commands;

/// <summary>Every subcommand of the tool.</summary>
internal static class CommandCatalog
{
    public static IEnumerable<Command> Create(CliContext context)
    {
        yield return InspectCommand.Create(context);
    }
}
