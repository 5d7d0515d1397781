"""The ladder's fixed, reproducible prompt set: seeded random words of a requested length.

Words are three-letter English words, each one token (with its leading space) in the common
BPE and SentencePiece vocabularies and four characters, which is also what a chars/4 token
estimate assumes, so `--prompt-tokens N` means about N tokens on any server. Each prompt
starts with its own index, so no two share a prefix and no server's prompt cache can
answer one from another. Prompts live only in memory: the report records the seed, the
count and a hash, never the text.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

_WORDS = [
    "the",
    "and",
    "for",
    "are",
    "but",
    "not",
    "you",
    "all",
    "any",
    "can",
    "had",
    "her",
    "was",
    "one",
    "our",
    "out",
    "day",
    "get",
    "has",
    "him",
    "his",
    "how",
    "man",
    "new",
    "now",
    "old",
    "see",
    "two",
    "way",
    "who",
    "boy",
    "did",
    "its",
    "let",
    "put",
    "say",
    "she",
    "too",
    "use",
    "art",
    "bag",
    "bed",
    "big",
    "box",
    "bus",
    "car",
    "cat",
    "cup",
    "dog",
    "ear",
    "egg",
    "eye",
    "fan",
    "fox",
    "fun",
    "gas",
    "hat",
    "ice",
    "jar",
    "key",
    "leg",
    "map",
    "mud",
    "net",
    "oil",
    "pen",
    "pig",
    "pot",
    "rat",
    "red",
    "sea",
    "sky",
    "sun",
    "tea",
    "toe",
    "top",
    "toy",
    "van",
    "war",
    "web",
    "wet",
    "win",
    "yes",
    "zoo",
]

INSTRUCTION = "Continue this list of words:"  # about 6 tokens, counted in the length


@dataclass(frozen=True, slots=True)
class PromptSet:
    seed: int
    tokens: int
    prompts: tuple[str, ...]

    @property
    def sha256(self) -> str:
        """A fingerprint of the exact texts, so two runs can show they sent the same prompts."""
        digest = hashlib.sha256()
        for prompt in self.prompts:
            digest.update(prompt.encode())
            digest.update(b"\x00")
        return digest.hexdigest()

    def __getitem__(self, index: int) -> str:
        return self.prompts[index % len(self.prompts)]


def make_prompts(seed: int, tokens: int, count: int = 256) -> PromptSet:
    """`count` prompts of about `tokens` tokens each, the same for the same arguments."""
    if tokens < 8:
        raise ValueError(f"prompt length must be at least 8 tokens, got {tokens}")
    if count < 1:
        raise ValueError(f"prompt count must be at least 1, got {count}")
    rng = random.Random(seed)
    words = tokens - 8  # instruction + the index number
    prompts = tuple(
        f"{index} {INSTRUCTION} " + " ".join(rng.choice(_WORDS) for _ in range(words))
        for index in range(count)
    )
    return PromptSet(seed, tokens, prompts)
