using System.Text;

namespace ModelSurgery.Tests.Vocabulary;

/// <summary>English text for counting, and different held-out text for round trips.</summary>
internal static class VocabularyTestText
{
    private static readonly string[] CorpusParagraphs =
    [
        "The river ran slowly past the old mill, where the miller and his daughter kept the wheel turning through the long summer. Every morning they carried sacks of grain from the cart to the stones, and every evening they swept the floor and counted the coins in a small wooden box.",
        "In the village there was a school with one teacher and twenty children. The teacher taught them to read, to write and to count, and on Fridays she read them stories about ships, islands and distant cities where the streets were paved with stone.",
        "A small model needs a small vocabulary. When most of the parameters sit in the embedding table, the network has little left for thinking, so the rare tokens are removed and the common ones are kept. The words that remain cover almost all of the text.",
        "The weather turned cold in October. Leaves fell from the trees in the park, and the children collected them in baskets. The baker sold warm bread and apple pies, and the smell of cinnamon drifted along the street every afternoon.",
        "Numbers appear in text as well: 12 apples, 365 days, 2024 pages, 7 seas and 1000 stars. Dates such as 14 March or 3 June are common, and so are prices like 5 dollars and 99 cents.",
        "She opened the letter and read it twice. It was from her brother, who had travelled north to work on the railway. He wrote that the trains were fast, the food was plain, and the nights were longer than he had ever known.",
    ];

    /// <summary>Held-out paragraphs: different words, punctuation, digits, a newline and a few non-ASCII characters.</summary>
    public static readonly string[] HeldOut =
    [
        "Quantum physicists argue about interpretations; engineers just build the machines. Yesterday's experiment measured 42 photons!",
        "Her grandmother's recipe (handwritten, faded) called for saffron, cardamom and a pinch of smoked paprika.\nNobody could read the last line.",
        "Zebras, giraffes and okapis gathered near the waterhole — a café-like scene under the acacia trees, naïve tourists watching from jeeps.",
        "    Indented code: for (int i = 0; i < n; i++) { total += values[i] * 3.5e-2; }  // done",
    ];

    /// <summary>About 8 KB of English.</summary>
    public static string Corpus()
    {
        var builder = new StringBuilder();
        for (int repeat = 0; repeat < 6; repeat++)
        {
            foreach (string paragraph in CorpusParagraphs)
            {
                builder.Append(paragraph).Append("\n\n");
            }
        }

        return builder.ToString();
    }

    /// <summary>The corpus paragraphs as separate documents.</summary>
    public static IEnumerable<string> Documents() => Enumerable.Repeat(CorpusParagraphs, 6).SelectMany(p => p);
}
