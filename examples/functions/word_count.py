"""A toolvault function: count the words, sentences and most common words of a text."""

import collections
import re
from typing import Any


def main(text: str, top: int = 3) -> dict[str, Any]:
    """Counts the words and sentences of a text and finds its most common words.

    Args:
        text: The text to count.
        top: How many of the most common words to list.
    """
    words = re.findall(r"[a-z0-9']+", text.lower())
    sentences = [s for s in re.split(r"[.!?]+", text) if s.strip()]
    return {
        "words": len(words),
        "sentences": len(sentences),
        "characters": len(text),
        "most_common": [
            {"word": word, "count": count}
            for word, count in collections.Counter(words).most_common(top)
        ],
    }
