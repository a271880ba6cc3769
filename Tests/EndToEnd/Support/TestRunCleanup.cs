using ModelSurgery.Tests.Support;

namespace ModelSurgery.Tests;

/// <summary>Runs once after every test of the assembly (it sits in the root namespace): removes what test runs share.</summary>
[SetUpFixture]
public sealed class TestRunCleanup
{
    /// <summary>Deletes the local package feed and its packages in the NuGet cache, if a test packed it.</summary>
    [OneTimeTearDown]
    public void RemoveSharedPackageFeed() => LocalPackageFeed.RemoveIfPacked();
}
