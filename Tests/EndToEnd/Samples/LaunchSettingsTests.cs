using System.Text.Json;
using ModelSurgery.Tests.Support;

namespace ModelSurgery.Tests.Samples;

/// <summary>
/// <c>dotnet run</c> starts the samples that train with every thread on glibc's main arena: without
/// <c>MALLOC_ARENA_MAX=1</c> in the environment at process start, the quickstart's teacher trained about four times slower.
/// </summary>
public sealed class LaunchSettingsTests
{
    [TestCase("Samples/Quickstart")]
    [TestCase("Samples/Reproduction")]
    public void Dotnet_run_starts_the_sample_with_one_allocator_arena(string project)
    {
        string relative = Path.Combine(project, "Properties", "launchSettings.json");
        string path = Path.Combine(DotnetCli.FindRepositoryRoot(relative), relative);
        using JsonDocument settings = JsonDocument.Parse(File.ReadAllText(path));
        JsonProperty[] profiles = [.. settings.RootElement.GetProperty("profiles").EnumerateObject()];

        // One profile, so a plain `dotnet run` takes it.
        Assert.That(profiles, Has.Length.EqualTo(1), path);
        JsonElement profile = profiles[0].Value;
        Assert.That(profile.GetProperty("commandName").GetString(), Is.EqualTo("Project"), path);
        Assert.That(profile.GetProperty("environmentVariables").GetProperty("MALLOC_ARENA_MAX").GetString(), Is.EqualTo("1"), path);
    }
}
