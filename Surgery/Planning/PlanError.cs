namespace ModelSurgery.Surgery.Planning;

/// <summary>One problem found in a <see cref="SurgeryPlan"/>.</summary>
/// <param name="Field">JSON path of the offending field, e.g. <c>layers[3].query_heads[2]</c>.</param>
/// <param name="Message">What is wrong with it.</param>
public sealed record PlanError(string Field, string Message)
{
    /// <summary><c>field: message</c>.</summary>
    public override string ToString() => $"{Field}: {Message}";
}

/// <summary>Formats plan errors into one exception message.</summary>
internal static class PlanErrors
{
    private const int MaxErrorsInMessage = 20;

    /// <summary>An <see cref="InvalidDataException"/> listing <paramref name="errors"/> found in the plan from <paramref name="source"/>.</summary>
    public static InvalidDataException ToException(string source, IReadOnlyList<PlanError> errors)
    {
        string shown = string.Join(Environment.NewLine, errors.Take(MaxErrorsInMessage).Select(e => "  " + e));
        string more = errors.Count > MaxErrorsInMessage ? $"{Environment.NewLine}  ... and {errors.Count - MaxErrorsInMessage} more" : string.Empty;
        return new InvalidDataException($"{source}: invalid surgery plan ({errors.Count} error{(errors.Count == 1 ? "" : "s")}):{Environment.NewLine}{shown}{more}");
    }
}
