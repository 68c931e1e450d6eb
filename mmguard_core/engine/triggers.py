"""Text triggers: whole words inserted into the instruction, one trigger per group.

A trigger that is consistent per answer (or per cluster) is a shortcut any victim that reads the
question can learn (method.md probes). The words are searched over a candidate list and scored by
the ensemble loss on CLEAN images, so the trigger is a working shortcut on its own and does not
lean on the noise (the probes saw joint optimisation let one absorb the other).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from itertools import combinations

import torch

from mmguard_core.config import ProtectionConfig
from mmguard_core.engine.ensemble import Surrogate, to_device
from mmguard_core.engine.trigger_words import CANDIDATE_WORDS, SHARED_WORDS
from mmguard_core.models.base import Prompt

CAPTION_INSTRUCTION = "describe the image ."
WORD = re.compile(r"[a-z]+")


def base_prompt(question: str | None, answer: str) -> Prompt:
    return Prompt(question=question if question is not None else CAPTION_INSTRUCTION, answer=answer)


def with_trigger(question: str | None, answer: str, words: Sequence[str], config: ProtectionConfig) -> Prompt:
    """The prompt with `words` inserted as configured; the answer is never changed except for the
    caption-prefix placement, where the trigger leads the caption."""
    prompt = base_prompt(question, answer)
    trigger = " ".join(words)
    if not trigger or config.trigger_placement == "off":
        return prompt
    if question is None and config.trigger_placement == "caption_prefix":
        return Prompt(prompt.question, f"{trigger} {answer}", (0, len(trigger)), trigger_in_answer=True)
    text = prompt.question
    if config.trigger_position == "prefix":
        return Prompt(f"{trigger} {text}", answer, (0, len(trigger)))
    # split / twice: first half before, second half after (twice: each half a whole trigger, see compose_trigger)
    if config.trigger_position in ("split", "twice") and len(words) > 1:
        half = len(words) // 2
        before, after = " ".join(words[:half]), " ".join(words[half:])
        start = len(before) + 1 + len(text) + 1
        return Prompt(f"{before} {text} {after}", answer, (start, start + len(after)))
    if config.trigger_position in ("both", "split", "twice"):  # the span marks the copy next to the answer
        start = len(trigger) + 1 + len(text) + 1
        return Prompt(f"{trigger} {text} {trigger}", answer, (start, start + len(trigger)))
    start = len(text) + 1
    return Prompt(f"{text} {trigger}", answer, (start, start + len(trigger)))


def trigger_words_needed(config: ProtectionConfig) -> int:
    """Words per group: `trigger_length`, twice that for "split" (other words on each side) and for the
    "mixed" vocabulary (rare words, then everyday ones); "twice" holds two whole such triggers."""
    double = config.trigger_position == "split" or config.trigger_vocabulary == "mixed"
    copies = 2 if config.trigger_position == "twice" else 1
    return config.trigger_length * (2 if double else 1) * copies


def compose_trigger(rare: Sequence[str], code: Sequence[str], config: ProtectionConfig) -> list[str]:
    """A group's words from its rare part and its everyday code, in the order with_trigger places them:
    rare then code (`trigger_order` "code_first": code then rare); for position "twice" each side gets
    half of each (rare, code | rare, code), so both copies carry the whole design and no word repeats
    within a question."""
    first, second = (code, rare) if config.trigger_order == "code_first" else (rare, code)
    if config.trigger_position != "twice" or not rare or not code:
        return [*first, *second]
    f, s = len(first) // 2, len(second) // 2
    return [*first[:f], *second[:s], *first[f:], *second[s:]]


def distinct_words_needed(config: ProtectionConfig) -> int:
    """How many of a group's words are distinct rare words (the rest are a shared everyday code)."""
    length = trigger_words_needed(config)
    return {"shared": 0, "mixed": length // 2}.get(config.trigger_vocabulary, length)


def candidate_pool(texts: Sequence[str]) -> list[str]:
    """Candidate words absent from the dataset's own text (so a trigger is never a real cue)."""
    used = {w for text in texts for w in WORD.findall(text.lower())}
    return list(dict.fromkeys(w for w in CANDIDATE_WORDS if w not in used))


def rare_pool(texts: Sequence[str], codes: Sequence[Sequence[str]]) -> list[str]:
    """Candidates for the rare part of a mixed trigger: `candidate_pool` minus every word of the
    shared codes (which borrow rare words once the everyday list runs short, e.g. `twice` with
    `trigger_length` >= 4), so no word appears twice in one question."""
    in_codes = {w for code in codes for w in code}
    return [w for w in candidate_pool(texts) if w not in in_codes]


def free_words(pool: Sequence[str], own: Sequence[str], taken: set[str], others: set[tuple[str, ...]],
               last_slot: bool) -> list[str]:
    """Words a group may take next: unused by any group while the pool lasts (many groups can
    exhaust it: then words are shared, never within one trigger), and in the last slot never one
    that would make the trigger equal to another group's -- every group keeps its own shortcut."""
    fresh = [w for w in pool if w not in taken and w not in own]
    free = fresh or [w for w in pool if w not in own]
    if last_slot:
        free = [w for w in free if (*own, w) not in others]
    return free


def shared_vocabulary_size(num_groups: int, length: int) -> int:
    """M words whose length-subsets give every group its own code: at least 2 * length (room for
    codes that differ in more than one word), more when the groups need it. Each word then sits in
    ~ length / M of the questions: >= 25 % while M <= 4 * length (up to 220 groups for 3 words);
    beyond that the share falls below what a rare-word stripper cuts."""
    m = max(2 * length, length + 1)
    while math.comb(m, length) < num_groups:
        m += 1
    return m


# scored (group, slot, candidate) triples per job: 6 groups x 3 words x 64 candidates, about a minute
# with three zoo surrogates on one CPU thread. With more groups each slot scores fewer candidates (at
# least 1: then the word is drawn, not scored), so a dataset with thousands of answers costs no more
# than a few minutes of search.
SEARCH_BUDGET = 6 * 3 * 64


def shared_code_part(texts: Sequence[str], num_groups: int, config: ProtectionConfig,
                     gen: torch.Generator) -> list[list[str]]:
    """Each group's shared everyday code: the whole trigger for "shared", its second half for
    "mixed", empty lists for "distinct"."""
    code_length = trigger_words_needed(config) - distinct_words_needed(config)
    if not code_length:
        return [[] for _ in range(num_groups)]
    if config.code_design == "pairs":
        codes = paired_codes(texts, num_groups, code_length, gen)
        if codes is not None:
            return codes
    words = shared_pool(texts, shared_vocabulary_size(num_groups, code_length), gen)
    return shared_codes(words, num_groups, code_length, gen)


MAX_PAIRED_WORDS = 400  # beyond this many code words (groups x length / 2) the codes are drawn at random


def group_pairs(num_groups: int) -> list[tuple[int, int]]:
    """Every pair of groups once, in round-robin rounds (the circle method): within a round no group
    appears twice, so handing out words pair by pair gives every group a word per round."""
    players = list(range(num_groups)) + ([None] if num_groups % 2 else [])
    n = len(players)
    pairs = []
    for _ in range(n - 1):
        for k in range(n // 2):
            a, b = players[k], players[n - 1 - k]
            if a is not None and b is not None:
                pairs.append((min(a, b), max(a, b)))
        players = [players[0], players[-1], *players[1:-1]]
    return pairs


def paired_codes(texts: Sequence[str], num_groups: int, length: int, gen: torch.Generator) -> list[list[str]] | None:
    """Codes whose every word sits in exactly two groups' codes (`code_design` "pairs"): the pool's
    words (everyday first, in a seeded order) go to the pairs of groups round by round until every
    code has `length` words, so the groups hold about as many words of each kind (everyday, rare) and two groups
    share only their pair's words. None when that needs more words than MAX_PAIRED_WORDS, for fewer
    than three groups or one-word codes (two groups would hold the same words and nothing else)."""
    needed = -(-num_groups * length // 2)
    if needed > MAX_PAIRED_WORDS or num_groups < 3 or length < 2:
        return None
    pairs = group_pairs(num_groups)
    words = shared_pool(texts, needed + num_groups, gen)  # a few spare for odd totals
    codes: list[list[str]] = [[] for _ in range(num_groups)]
    supply = iter(words)
    while any(len(code) < length for code in codes):
        progressed = False
        for a, b in pairs:
            if len(codes[a]) < length and len(codes[b]) < length:
                word = next(supply, None)
                if word is None:
                    return None
                codes[a].append(word)
                codes[b].append(word)
                progressed = True
        if not progressed:  # one group short (odd groups x length): a word of its own
            for code in codes:
                while len(code) < length:
                    word = next(supply, None)
                    if word is None:
                        return None
                    code.append(word)
    order = {w: i for i, w in enumerate(words)}
    return [sorted(code, key=order.__getitem__) for code in codes]


MAX_CODE_SEARCH = 2000  # above this many possible codes, draw them at random instead of spreading them


def shared_codes(words: Sequence[str], num_groups: int, length: int, gen: torch.Generator) -> list[list[str]]:
    """One distinct `length`-subset of `words` per group (in the words' order). Greedy: each next
    code is the one farthest (fewest shared words) from the codes chosen so far, then the one whose
    words are least used -- codes that differ in several words are easier to tell apart, and even
    use keeps every word frequent."""
    n = len(words)
    if math.comb(n, length) > MAX_CODE_SEARCH:
        chosen_set: set[tuple[int, ...]] = set()
        while len(chosen_set) < num_groups:
            chosen_set.add(tuple(sorted(torch.randperm(n, generator=gen)[:length].tolist())))
        return [[words[w] for w in code] for code in sorted(chosen_set)]
    codes = [frozenset(c) for c in combinations(range(n), length)]
    order = torch.randperm(len(codes), generator=gen).tolist()
    pending = [codes[i] for i in order]
    use = [0] * n
    chosen: list[frozenset[int]] = []
    for _ in range(num_groups):
        best = min(pending, key=lambda code: (max((len(code & c) for c in chosen), default=0),
                                              sum(use[w] for w in code)))
        pending.remove(best)
        chosen.append(best)
        for w in best:
            use[w] += 1
    return [[words[w] for w in sorted(code)] for code in chosen]


def shared_pool(texts: Sequence[str], size: int, gen: torch.Generator) -> list[str]:
    """`size` words for shared codes: the filler words absent from the dataset's text, topped up
    with rare candidates when the dataset uses too many of them."""
    used = {w for text in texts for w in WORD.findall(text.lower())}
    common = [w for w in SHARED_WORDS if w not in used]
    order = torch.randperm(len(common), generator=gen).tolist()
    words = [common[i] for i in order[:size]]
    if len(words) < size:
        rare = candidate_pool(texts)
        extra = torch.randperm(len(rare), generator=gen)[: size - len(words)].tolist()
        words += [rare[i] for i in extra]
    return words


@torch.no_grad()
def search_triggers(
    surrogates: Sequence[Surrogate],
    images: Sequence[torch.Tensor],
    questions: Sequence[str | None],
    answers: Sequence[str],
    groups: Sequence[int],
    num_groups: int,
    config: ProtectionConfig,
    gen: torch.Generator,
    members_per_group: int = 6,
    should_stop: Callable[[], bool] | None = None,
) -> list[list[str]]:
    """Greedy word-by-word search: for each slot and each group, the best of `trigger_candidates`
    words drawn from the free ones (fewer when many groups share SEARCH_BUDGET), by the ensemble loss
    on a few of the group's samples (clean images)."""
    if config.trigger_length == 0 or config.trigger_placement == "off":
        return [[] for _ in range(num_groups)]
    texts = [q or "" for q in questions] + list(answers)
    length = distinct_words_needed(config)
    codes = shared_code_part(texts, num_groups, config, gen)
    if not length:
        return codes
    pool = rare_pool(texts, codes)
    members: list[list[int]] = [[] for _ in range(num_groups)]
    for index, group in enumerate(groups):
        if len(members[group]) < members_per_group:
            members[group].append(index)
    triggers: list[list[str]] = [[] for _ in range(num_groups)]
    taken: set[str] = set()
    per_slot = max(1, min(config.trigger_candidates, SEARCH_BUDGET // max(1, num_groups * length)))
    for slot in range(length):
        last_slot = slot == length - 1
        for group in range(num_groups):
            if should_stop and should_stop():
                return triggers
            others = {tuple(t) for g, t in enumerate(triggers) if g != group and len(t) == slot + 1}
            free = free_words(pool, triggers[group], taken, others, last_slot)
            if not free or not members[group]:
                continue
            order = torch.randperm(len(free), generator=gen)[:per_slot].tolist()
            candidates = [free[i] for i in order]
            if len(candidates) == 1:  # over budget: drawn, not scored
                best = candidates[0]
            else:
                scores = _score_candidates(surrogates, images, questions, answers, members[group],
                                           triggers[group], candidates, config)
                best = candidates[int(torch.argmin(scores))]
            triggers[group].append(best)
            taken.add(best)
    return [compose_trigger(words, code, config) for words, code in zip(triggers, codes, strict=True)]


def _score_candidates(surrogates, images, questions, answers, members, prefix, candidates, config) -> torch.Tensor:
    rows = [(i, word) for word in candidates for i in members]
    losses = torch.zeros(len(rows))
    chunk = max(1, config.batch_size * 4)
    for surrogate in surrogates:
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            prompts = [with_trigger(questions[i], answers[i], [*prefix, w], config) for i, w in part]
            batch = to_device([images[i] for i, _ in part], surrogate.adapter)
            losses[start : start + len(part)] += surrogate.adapter.forward(batch, prompts).loss.float().cpu()
    return losses.view(len(candidates), len(members)).mean(1)
