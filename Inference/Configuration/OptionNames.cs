using System.Collections.Concurrent;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace ModelSurgery.Inference.Configuration;

/// <summary>
/// The one spelling of each enum value that users type: the <see cref="JsonStringEnumMemberNameAttribute"/> on the
/// value (e.g. <c>top-scores</c>), else the value's name in lower case. Command-line options, recipe files and the
/// library's JSON all read and write these names, so a choice is spelled the same everywhere.
/// </summary>
public static class OptionNames
{
    private static readonly ConcurrentDictionary<Type, IReadOnlyList<(string Name, object Value)>> Cache = new();

    /// <summary>The user-facing name of <paramref name="value"/>.</summary>
    public static string Name<T>(T value)
        where T : struct, Enum =>
        Entries(typeof(T)).First(e => e.Value.Equals(value)).Name;

    /// <summary>Every user-facing name of <typeparamref name="T"/>, in declaration order.</summary>
    public static IReadOnlyList<string> Names<T>()
        where T : struct, Enum =>
        Names(typeof(T));

    /// <summary>Every user-facing name of the enum type <paramref name="enumType"/>, in declaration order.</summary>
    public static IReadOnlyList<string> Names(Type enumType) => [.. Entries(enumType).Select(e => e.Name)];

    /// <summary>Reads a user-facing name (case-insensitive).</summary>
    /// <param name="text">What the user typed.</param>
    /// <param name="field">The option, key or field the text came from; the error message starts with it.</param>
    /// <exception cref="FormatException">The text is not one of the names; the message names <paramref name="field"/> and lists the names.</exception>
    public static T Parse<T>(string? text, string field)
        where T : struct, Enum =>
        (T)Parse(typeof(T), text, field);

    private static object Parse(Type type, string? text, string field)
    {
        foreach ((string name, object value) in Entries(type))
        {
            if (string.Equals(name, text?.Trim(), StringComparison.OrdinalIgnoreCase))
            {
                return value;
            }
        }

        throw new FormatException($"{field}: '{text}' is not one of {string.Join(", ", Entries(type).Select(e => e.Name))}.");
    }

    private static IReadOnlyList<(string Name, object Value)> Entries(Type type) => Cache.GetOrAdd(type, static t =>
        [.. t.GetFields(BindingFlags.Public | BindingFlags.Static).Select(f =>
            (f.GetCustomAttribute<JsonStringEnumMemberNameAttribute>()?.Name ?? f.Name.ToLowerInvariant(), f.GetValue(null)!))]);

    /// <summary>
    /// A System.Text.Json converter for every enum that reads and writes these names; an unknown name fails with a
    /// message listing the names (no .NET type name).
    /// </summary>
    public sealed class JsonConverter : JsonConverterFactory
    {
        /// <inheritdoc/>
        public override bool CanConvert(Type typeToConvert) => typeToConvert.IsEnum;

        /// <inheritdoc/>
        public override System.Text.Json.Serialization.JsonConverter CreateConverter(Type typeToConvert, JsonSerializerOptions options) =>
            (System.Text.Json.Serialization.JsonConverter)Activator.CreateInstance(typeof(EnumConverter<>).MakeGenericType(typeToConvert))!;

        private sealed class EnumConverter<T> : JsonConverter<T>
            where T : struct, Enum
        {
            public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
            {
                if (reader.TokenType != JsonTokenType.String)
                {
                    throw new JsonException($"expected one of {string.Join(", ", Names<T>())} as a string.");
                }

                try
                {
                    return Parse<T>(reader.GetString(), "value");
                }
                catch (FormatException ex)
                {
                    throw new JsonException(ex.Message["value: ".Length..], ex);
                }
            }

            public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options) => writer.WriteStringValue(Name(value));
        }
    }
}
