"""The engine's stages on tiny random-init models of the real transformers classes."""

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from mmguard_core.config import ConfigError, preset
from mmguard_core.engine.ensemble import Surrogate, balanced_backward, protection_loss
from mmguard_core.engine.feature_target import (
    build_anchor,
    capture_layer_input,
    feature_term,
    pooled_image_states,
)
from mmguard_core.engine.grouping import Grouping, choose_structure, nearest_targets
from mmguard_core.engine.protect import (
    ProtectionCancelled,
    ShardInput,
    SharedState,
    _clean_task_copies,
    learn_shared,
    protect_shard,
    target_answers,
)
from mmguard_core.engine.trigger_race import alternative_triggers, race_triggers
from mmguard_core.engine.trigger_words import CANDIDATE_WORDS, SHARED_WORDS
from mmguard_core.engine.triggers import (
    CAPTION_INSTRUCTION,
    base_prompt,
    candidate_pool,
    distinct_words_needed,
    free_words,
    paired_codes,
    search_triggers,
    shared_code_part,
    shared_codes,
    shared_vocabulary_size,
    trigger_words_needed,
    with_trigger,
)
from mmguard_core.engine.weight_noise import weight_noise
from mmguard_core.models.tiny import build_tiny
from mmguard_core.models.tokenizer import build_word_tokenizer

COLOURS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1)}
QUESTION = "what color is the shape ?"


@pytest.fixture(scope="module")
def surrogates():
    words = [*COLOURS, *QUESTION.split(), *CAPTION_INSTRUCTION.split(), "a", "square", *CANDIDATE_WORDS, *SHARED_WORDS]
    tokenizer = build_word_tokenizer(words)
    out = []
    for family in ("llava", "qwen2_vl"):
        adapter = build_tiny(family, tokenizer, "test", seed=0)
        adapter.model.eval()
        for p in adapter.model.parameters():
            p.requires_grad_(False)
        out.append(Surrogate(f"tiny:{family}", adapter))
    return out


def make_data(n=12, captions=False):
    gen = torch.Generator().manual_seed(3)
    images, questions, answers = [], [], []
    for i in range(n):
        name = list(COLOURS)[i % 3]
        image = torch.rand(3, 32 + 8 * (i % 2), 32, generator=gen) * 0.4
        image[:, 8:20, 8:20] = torch.tensor(COLOURS[name]).view(3, 1, 1)
        images.append((image * 255).round() / 255)
        questions.append(None if captions else QUESTION)
        answers.append(f"a {name} square {'on the left' if i % 4 < 2 else ''} {i}".strip() if captions else name)
    return ShardInput(images, questions, answers, list(range(n)))


def small_config(**changes):
    values = dict(shared_steps=4, sample_steps=2, bilevel_rounds=1, inner_steps=2, batch_size=6,
                  trigger_candidates=6)
    values.update(changes)
    return preset("fast", **values)


def original_uint8(image):
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def noise_of(images, originals) -> list[np.ndarray]:
    """Each saved 8-bit image minus its original, in 8-bit levels."""
    return [image.astype(int) - original_uint8(original).astype(int)
            for image, original in zip(images, originals, strict=True)]


def largest_change(images, originals) -> int:
    return max(int(np.abs(d).max()) for d in noise_of(images, originals))


def targeted_shard_setup(surrogates):
    """Six samples, the targeted objective with short stages, and the shared state: the setup of the
    per-sample noise options' tests."""
    data = make_data(6)
    config = small_config(shared_steps=0, sample_steps=4, sample_objective="targeted", target_steps=4)
    return data, config, learn_shared(data, surrogates, config)


@pytest.mark.parametrize("method", ["mmguard", "random", "em_image", "classwise"])
def test_every_method_keeps_the_bound_on_saved_bytes(surrogates, method):
    data = make_data()
    config = small_config(method=method, epsilon=4 / 255)
    shared = learn_shared(data, surrogates, config)
    out = protect_shard(data, shared, surrogates, config)
    for k, image in enumerate(out.images):
        assert image.dtype == np.uint8 and image.shape == original_uint8(data.images[k]).shape
    assert largest_change(out.images, data.images) <= 4
    assert all(d.any() for d in noise_of(out.images, data.images))  # every image changed


@pytest.mark.parametrize("vocabulary, words", [("shared", SHARED_WORDS), ("distinct", CANDIDATE_WORDS)])
def test_trigger_goes_into_the_question_and_answers_are_untouched(surrogates, vocabulary, words):
    data = make_data()
    config = small_config(trigger_length=2, trigger_vocabulary=vocabulary)
    shared = learn_shared(data, surrogates, config)
    out = protect_shard(data, shared, surrogates, config)
    assert out.answers == data.answers
    per_answer = {}
    for question, answer, trigger in zip(out.prompts_question, data.answers, out.triggers, strict=True):
        before, after = trigger.split()[:2], trigger.split()[2:]  # default position twice: other words each side
        assert len(before) == len(after) == 2 and not set(before) & set(after)
        assert question == f"{' '.join(before)} {QUESTION} {' '.join(after)}"
        assert all(word in words for word in trigger.split())
        per_answer.setdefault(answer, set()).add(trigger)
    # one trigger per answer, different answers different triggers
    assert all(len(t) == 1 for t in per_answer.values())
    assert len({next(iter(t)) for t in per_answer.values()}) == len(per_answer)


def test_every_group_gets_a_full_distinct_trigger_even_when_words_run_short(surrogates):
    # 6 groups x 3 words from 4 candidates per slot (the old fixed pool of 4 left groups without
    # triggers); and more groups than words: words are shared but no two triggers are equal
    data = make_data(12)
    config = small_config(trigger_length=3, trigger_candidates=4, trigger_vocabulary="distinct", trigger_position="both")
    gen = torch.Generator().manual_seed(0)
    triggers = search_triggers(surrogates[:1], data.images, data.questions, data.answers, [i % 6 for i in range(12)],
                               6, config, gen)
    assert all(len(t) == 3 and len(set(t)) == 3 for t in triggers)
    assert len({tuple(t) for t in triggers}) == 6 and len({w for t in triggers for w in t}) == 18
    pool = candidate_pool([QUESTION, *COLOURS])
    taken = set(pool)  # every word already used by some group
    free = free_words(pool, ["pent", "quill"], taken, {("pent", "quill", "zephyr")}, last_slot=True)
    assert free and "zephyr" not in free and "pent" not in free and "quill" not in free


@pytest.mark.parametrize("groups", [2, 6, 20, 60])
def test_shared_vocabulary_triggers_survive_both_strippers(surrogates, groups):
    from mmguard_core.evaluate import strip_out_of_vocabulary, strip_rare_words

    data = make_data(groups * 3)
    config = small_config(trigger_length=3, trigger_vocabulary="shared", trigger_position="suffix")
    gen = torch.Generator().manual_seed(0)
    labels = [i % groups for i in range(groups * 3)]
    triggers = search_triggers(surrogates[:1], data.images, data.questions, data.answers, labels, groups, config, gen)
    assert len({frozenset(t) for t in triggers}) == groups and all(len(set(t)) == 3 for t in triggers)
    words = {w for t in triggers for w in t}
    assert len(words) == shared_vocabulary_size(groups, 3) and words <= set(SHARED_WORDS)
    questions = [with_trigger(QUESTION, "x", triggers[g], config).question for g in labels]
    for word in words:  # every word in at least a quarter of the questions ...
        assert sum(word in q.split() for q in questions) >= 0.25 * len(questions)
    # ... so a rare-word stripper removes none of them, and they are ordinary vocabulary
    for stripped in (strip_rare_words(questions), strip_out_of_vocabulary(questions)):
        assert all(q.split()[-3:] == triggers[g] for q, g in zip(stripped, labels, strict=True))


def test_trigger_search_stays_within_budget_for_many_groups():
    # 500 answers x 3 words is over SEARCH_BUDGET: every word is drawn, so no surrogate is needed
    groups = 500
    data = make_data(groups)
    config = small_config(trigger_length=3, trigger_vocabulary="distinct", trigger_position="both")
    triggers = search_triggers([], data.images, data.questions, list(map(str, range(groups))), list(range(groups)),
                               groups, config, torch.Generator().manual_seed(0))
    assert len(triggers) == groups and all(len(t) == 3 == len(set(t)) for t in triggers)
    assert len({tuple(t) for t in triggers}) == groups


def searched_mixed_triggers(surrogates, groups, **changes):
    """Data of three samples per group, its mixed-vocabulary config and group labels, and the
    triggers the search gives them (first surrogate only, seed 0)."""
    data = make_data(groups * 3)
    config = small_config(trigger_vocabulary="mixed", **changes)
    labels = [i % groups for i in range(groups * 3)]
    triggers = search_triggers(surrogates[:1], data.images, data.questions, data.answers, labels, groups, config,
                               torch.Generator().manual_seed(0))
    return data, config, labels, triggers


def test_mixed_vocabulary_puts_rare_words_before_and_a_shared_code_after(surrogates):
    from mmguard_core.evaluate import strip_rare_words, strip_repeated_words, tidy_spacing

    groups = 6
    _, config, labels, triggers = searched_mixed_triggers(surrogates, groups, trigger_length=3,
                                                          trigger_position="split")
    rare = [t[:3] for t in triggers]
    codes = [t[3:] for t in triggers]
    assert all(len(t) == 6 for t in triggers)
    assert {w for r in rare for w in r} <= set(CANDIDATE_WORDS) and len({w for r in rare for w in r}) == 18
    assert {w for c in codes for w in c} <= set(SHARED_WORDS) and len({frozenset(c) for c in codes}) == groups
    questions = [with_trigger(QUESTION, "x", triggers[g], config).question for g in labels]
    for q, g in zip(questions, labels, strict=True):
        assert q == " ".join([*rare[g], QUESTION, *codes[g]])
    # a rare-word stripper takes the rare words and leaves the shared code next to the answer;
    # a repeated-word stripper finds nothing to take
    for q, g in zip(strip_rare_words(questions), labels, strict=True):
        assert q.split()[-3:] == codes[g] and not set(q.split()) & set(rare[g])
    assert strip_repeated_words(questions) == [tidy_spacing(q) for q in questions]


def test_twice_position_gives_each_side_a_whole_mixed_trigger_of_other_words(surrogates):
    from mmguard_core.evaluate import strip_rare_words, strip_repeated_words, tidy_spacing

    groups = 6
    data, config, labels, searched = searched_mixed_triggers(surrogates, groups, trigger_length=2,
                                                             trigger_position="twice")
    drawn = alternative_triggers(data.questions, data.answers, groups, config, torch.Generator().manual_seed(1))
    for triggers in (searched, drawn):
        assert all(len(t) == 8 and len(set(t)) == 8 for t in triggers)
        questions = [with_trigger(QUESTION, "x", triggers[g], config).question for g in labels]
        for q in questions:
            before, after = q.split(QUESTION)
            for side in (before.split(), after.split()):  # rare words, then everyday ones, on each side
                assert len(side) == 4 and set(side[:2]) <= set(CANDIDATE_WORDS) and set(side[2:]) <= set(SHARED_WORDS)
        assert len({tuple(t) for t in triggers}) == groups
        # nothing repeats, so the repeated-word stripper takes nothing; the rare-word stripper leaves a
        # code on each side
        assert strip_repeated_words(questions) == [tidy_spacing(q) for q in questions]
        for q in strip_rare_words(questions):
            before, after = q[: q.index("what")].split(), q[q.index("?") + 1 :].split()
            assert len(before) == 2 and len(after) == 2 and set(before + after) <= set(SHARED_WORDS)


def test_code_first_order_puts_the_rare_words_next_to_the_answer(surrogates):
    groups = 4
    data, config, labels, _ = searched_mixed_triggers(surrogates, groups, trigger_length=2, trigger_position="twice")
    flipped = config.updated(trigger_order="code_first")
    searched = search_triggers(surrogates[:1], data.images, data.questions, data.answers, labels, groups, flipped,
                               torch.Generator().manual_seed(0))
    for triggers in (searched, alternative_triggers(data.questions, data.answers, groups, flipped,
                                                    torch.Generator().manual_seed(1))):
        for g in labels:
            before, after = with_trigger(QUESTION, "x", triggers[g], flipped).question.split(QUESTION)
            for side in (before.split(), after.split()):  # everyday words, then rare ones, on each side
                assert len(side) == 4 and set(side[:2]) <= set(SHARED_WORDS) and set(side[2:]) <= set(CANDIDATE_WORDS)
    with pytest.raises(ConfigError, match="trigger_order"):
        config.updated(trigger_order="random")


@pytest.mark.parametrize("length", [4, 5])
def test_long_twice_triggers_never_repeat_a_word_when_codes_borrow_rare_words(surrogates, length):
    # 2 x length code words per group outrun the everyday list, so codes borrow rare candidates; the
    # rare part must then avoid them or a question would carry one word twice
    groups = 6
    data, config, _, searched = searched_mixed_triggers(surrogates, groups, trigger_length=length,
                                                        trigger_position="twice")
    drawn = alternative_triggers(data.questions, data.answers, groups, config, torch.Generator().manual_seed(1))
    for triggers in (searched, drawn):
        assert all(len(t) == 4 * length and len(set(t)) == 4 * length for t in triggers)


def test_shared_codes_are_far_apart_and_use_words_evenly():
    gen = torch.Generator().manual_seed(1)
    first, second = shared_codes(list("abcdef"), 2, 3, gen)
    assert not set(first) & set(second)  # two groups: nothing in common
    codes = shared_codes(list("abcdef"), 6, 3, gen)
    uses = [sum(w in c for c in codes) for w in "abcdef"]
    assert len({frozenset(c) for c in codes}) == 6 and max(uses) - min(uses) <= 1  # every word equally frequent
    many = shared_codes([f"w{i}" for i in range(30)], 50, 3, gen)  # too many codes to spread: drawn
    assert len({tuple(c) for c in many}) == 50


@pytest.mark.parametrize(("groups", "length"), [(6, 10), (5, 4), (3, 2), (7, 5)])
def test_paired_codes_put_every_word_in_two_groups(groups, length):
    codes = paired_codes(["what color is the shape ?"], groups, length, torch.Generator().manual_seed(0))
    uses = Counter(w for code in codes for w in code)
    assert all(len(code) == length == len(set(code)) for code in codes)
    assert len({frozenset(code) for code in codes}) == groups  # every group its own code
    assert sum(n != 2 for n in uses.values()) <= 1  # one word of its own at most (odd groups x length)
    for a in range(groups):
        for b in range(a + 1, groups):  # two groups share only the words of their pair
            assert len(set(codes[a]) & set(codes[b])) <= -(-length // (groups - 1))
    everyday = [sum(w in SHARED_WORDS for w in code) for code in codes]
    # the everyday words, which both strippers keep, spread evenly (an odd count of groups sits out
    # one round each, so one more apart)
    assert max(everyday) - min(everyday) <= (1 if groups % 2 == 0 else 2)


def test_searched_triggers_with_paired_codes_keep_rare_words_distinct_and_code_words_paired(surrogates):
    groups = 6
    _, config, _, triggers = searched_mixed_triggers(surrogates, groups, trigger_length=3, code_design="pairs")
    groups_per_word = Counter(w for t in triggers for w in set(t))
    code_length = trigger_words_needed(config) - distinct_words_needed(config)
    # the rare part stays one group's own; each code word (everyday, or rare once those run out) two groups'
    assert set(groups_per_word.values()) == {1, 2}
    assert 2 * sum(n == 2 for n in groups_per_word.values()) == groups * code_length
    with pytest.raises(ConfigError, match="code_design"):
        config.updated(code_design="spread")


def test_paired_codes_give_way_to_random_codes_when_the_words_run_out():
    assert paired_codes(["q"], 200, 10, torch.Generator().manual_seed(0)) is None
    assert paired_codes(["q"], 6, 1, torch.Generator().manual_seed(0)) is None  # one word: two groups alike
    assert paired_codes(["q"], 2, 4, torch.Generator().manual_seed(0)) is None  # one pair: both codes alike
    config = small_config(trigger_vocabulary="mixed", code_design="pairs")
    codes = shared_code_part(["what is it ?"], 200, config, torch.Generator().manual_seed(0))
    assert len({tuple(c) for c in codes}) == 200


def test_trigger_positions_and_trigger_off(surrogates):
    prompt = with_trigger("what is it ?", "red", ["pent"], small_config(trigger_position="suffix"))
    assert prompt.question == "what is it ? pent"
    assert prompt.question[slice(*prompt.trigger_span)] == "pent"
    prompt = with_trigger("what is it ?", "red", ["pent", "quill"], small_config(trigger_position="prefix"))
    assert prompt.question == "pent quill what is it ?" and prompt.trigger_span == (0, 10)
    prompt = with_trigger("what is it ?", "red", ["pent", "quill"], small_config(trigger_position="both"))
    assert prompt.question == "pent quill what is it ? pent quill"
    assert prompt.trigger_span == (24, 34) and prompt.question[24:] == "pent quill"  # the copy by the answer
    prompt = with_trigger("what is it ?", "red", ["pent", "quill"], small_config(trigger_position="split"))
    assert prompt.question == "pent what is it ? quill" and prompt.question[slice(*prompt.trigger_span)] == "quill"
    data = make_data()
    config = small_config(trigger_position="split", trigger_length=2)  # other words on each side
    out = protect_shard(data, learn_shared(data, surrogates, config), surrogates, config)
    for question, trigger in zip(out.prompts_question, out.triggers, strict=True):
        words = trigger.split()
        assert len(words) == 4 and len(set(words)) == 4
        assert question == f"{' '.join(words[:2])} {QUESTION} {' '.join(words[2:])}"
    config = small_config(trigger_length=0)
    out = protect_shard(data, learn_shared(data, surrogates, config), surrogates, config)
    assert out.prompts_question == data.questions and not any(out.triggers)


@pytest.mark.parametrize("placement", ["instruction", "caption_prefix", "off"])
def test_caption_trigger_placement(surrogates, placement):
    data = make_data(captions=True)
    config = small_config(trigger_placement=placement, num_clusters=3)
    shared = learn_shared(data, surrogates, config)
    assert shared.grouping.structure == "cluster"
    out = protect_shard(data, shared, surrogates, config)
    for question, answer, original, trigger in zip(out.prompts_question, out.answers, data.answers, out.triggers,
                                                   strict=True):
        if placement == "off":
            assert trigger is None and question is None and answer == original
        elif placement == "instruction":
            words = trigger.split()  # default position twice: half of the words before, half after
            before, after = " ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2 :])
            assert question == f"{before} {CAPTION_INSTRUCTION} {after}" and answer == original
        else:
            assert question is None and answer == f"{trigger} {original}"


def test_same_seed_same_result_and_shared_state_round_trips(surrogates, tmp_path):
    data = make_data()
    config = small_config()
    first = learn_shared(data, surrogates, config)
    second = learn_shared(data, surrogates, config)
    assert torch.equal(first.patterns, second.patterns) and first.triggers == second.triggers
    first.save(tmp_path / "shared")
    loaded = SharedState.load(tmp_path / "shared")
    assert torch.equal(loaded.patterns, first.patterns) and loaded.triggers == first.triggers
    assert loaded.grouping.keys == first.grouping.keys
    a = protect_shard(data, first, surrogates, config)
    b = protect_shard(data, loaded, surrogates, config)
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))


@pytest.mark.parametrize("vocabulary", ["shared", "distinct"])
def test_alternative_trigger_assignments(vocabulary):
    data = make_data()
    config = small_config(trigger_vocabulary=vocabulary, trigger_position="both")
    first = alternative_triggers(data.questions, data.answers, 3, config, torch.Generator().manual_seed(1))
    again = alternative_triggers(data.questions, data.answers, 3, config, torch.Generator().manual_seed(1))
    other = alternative_triggers(data.questions, data.answers, 3, config, torch.Generator().manual_seed(2))
    assert first == again and first != other
    assert len(first) == 3 and len({tuple(t) for t in first}) == 3
    allowed = set(SHARED_WORDS) | set(CANDIDATE_WORDS) if vocabulary == "shared" else set(CANDIDATE_WORDS)
    for words in first:
        assert len(words) == config.trigger_length == len(set(words)) and set(words) <= allowed
        assert not set(words) & set(QUESTION.split())
    if vocabulary == "distinct":
        assert len({w for t in first for w in t}) == 3 * config.trigger_length


def test_trigger_race_keeps_the_assignment_the_attacker_learns_least(surrogates, tmp_path):
    data = make_data()
    groups = [i % 3 for i in range(len(data.images))]
    config = small_config(trigger_trial_steps=2)
    gen = torch.Generator().manual_seed(0)
    candidates = [alternative_triggers(data.questions, data.answers, 3, config, gen) for _ in range(3)]
    kept, losses = race_triggers(surrogates, data, None, groups, candidates, config, torch.Generator())
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert kept == candidates[int(np.argmax(losses))]
    assert race_triggers(surrogates, data, None, groups, candidates, config, torch.Generator()) == (kept, losses)
    stopped = race_triggers(surrogates, data, None, groups, candidates, config, torch.Generator(),
                            should_stop=lambda: True)
    assert stopped == (candidates[0], [])

    raced = learn_shared(data, surrogates, small_config(trigger_trials=2, trigger_trial_steps=2))
    assert len(raced.trigger_race) == 2 and raced.triggers
    raced.save(tmp_path / "shared")
    assert SharedState.load(tmp_path / "shared").trigger_race == raced.trigger_race
    assert learn_shared(data, surrogates, small_config()).trigger_race == []  # trials = 1: no race


def test_shards_reuse_the_jobs_shared_patterns(surrogates):
    """Splitting a job into shards gives the same group patterns and triggers in every shard."""
    data = make_data()
    config = small_config(sample_share=0.0)
    shared = learn_shared(data, surrogates, config)
    whole = protect_shard(data, shared, surrogates, config)
    half = ShardInput(data.images[6:], data.questions[6:], data.answers[6:], data.indices[6:])
    part = protect_shard(half, shared, surrogates, config)
    assert part.triggers == whole.triggers[6:]
    assert all(np.array_equal(x, y) for x, y in zip(part.images, whole.images[6:], strict=True))


def test_cancel_stops_between_steps(surrogates):
    data = make_data()
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(ProtectionCancelled):
        learn_shared(data, surrogates, small_config(), should_stop=should_stop)


def test_grouping_rules():
    assert choose_structure("auto", ["red", "blue"] * 10) == "answer"
    assert choose_structure("auto", [f"caption {i}" for i in range(20)]) == "cluster"
    data = make_data()
    grouping = Grouping.fit("cluster", data.answers, data.images, 3, seed=0)
    again = Grouping.from_dict(grouping.to_dict())
    assert again.assign(data.answers, data.images) == grouping.assign(data.answers, data.images)
    with pytest.raises(ValueError, match="not seen"):
        Grouping.fit("answer", ["red"], data.images[:1], 3, 0).assign(["purple"], data.images[:1])


def test_binding_losses_are_differentiable(surrogates):
    data = make_data(6)
    config = small_config(bph_weight=1.0, crs_weight=1.0, shared_steps=2)
    shared = learn_shared(data, surrogates, config)
    assert len(shared.loss_curve) == 2 and all(np.isfinite(shared.loss_curve))


def test_binding_pass_moves_the_shared_patterns_with_the_trigger_in_place(surrogates):
    data = make_data(6)
    config = small_config(bph_weight=1.0, crs_weight=1.0, shared_steps=2)
    before = learn_shared(data, surrogates, config)
    after = learn_shared(data, surrogates, config.updated(binding_steps=3))
    assert "binding" not in before.stages and after.stages["binding"] > 0
    assert len(after.loss_curve) == 5 and all(np.isfinite(after.loss_curve))
    assert after.triggers == before.triggers  # the pass runs after the search and changes only the noise
    assert not torch.equal(after.patterns, before.patterns)
    assert after.patterns.abs().max() <= config.epsilon * (1 - config.sample_share) + 1e-6


def test_per_sample_binding_sees_the_trigger(surrogates):
    # answer->trigger can only pull on the noise when the trigger is in the prompt the stage optimises:
    # with it, turning that one term on changes the saved pixels; without it the term would be empty
    data = make_data(6)
    off = small_config(shared_steps=2, sample_steps=3, sample_share=1.0, bph_weight=1.0, bph_betas=(0.0, 0.0, 0.0))
    shared = learn_shared(data, surrogates, off)
    assert all(shared.triggers)
    on = off.updated(bph_betas=(0.0, 1.0, 0.0))
    plain = protect_shard(data, shared, surrogates, off)
    hijacked = protect_shard(data, shared, surrogates, on)
    assert all(np.isfinite(hijacked.loss_curve))
    assert any(not np.array_equal(a, b) for a, b in zip(plain.images, hijacked.images, strict=True))


def test_weight_noise_perturbs_the_forward_only_inside_and_leaves_the_weights(surrogates):
    adapter = surrogates[0].adapter
    data = make_data(3)
    images = [img.to(adapter.device) for img in data.images]
    prompts = [base_prompt(q, a) for q, a in zip(data.questions, data.answers, strict=True)]
    weights = {name: p.detach().clone() for name, p in adapter.model.named_parameters()}
    with torch.no_grad():
        plain = adapter.forward(images, prompts).loss.float().mean()
        with weight_noise([adapter.model], 0.0, torch.Generator().manual_seed(1)):
            off = adapter.forward(images, prompts).loss.float().mean()
        draws = []
        for _ in range(2):
            with weight_noise([adapter.model], 0.5, torch.Generator().manual_seed(1)):
                draws.append(adapter.forward(images, prompts).loss.float().mean())
        after = adapter.forward(images, prompts).loss.float().mean()
    assert off == plain and after == plain  # sigma 0 is the model itself; the hooks are gone after
    assert draws[0] != plain and draws[0] == draws[1]  # a perturbed model, the same one for a seed
    assert all(torch.equal(p, weights[name]) for name, p in adapter.model.named_parameters())


def test_weight_noise_changes_the_shared_patterns_and_zero_changes_nothing(surrogates):
    data = make_data(6)
    config = small_config(shared_steps=3)
    base = learn_shared(data, surrogates, config)
    again = learn_shared(data, surrogates, config.updated(weight_noise=0.0))
    noisy = learn_shared(data, surrogates, config.updated(weight_noise=0.5))
    assert torch.equal(base.patterns, again.patterns)
    assert not torch.equal(base.patterns, noisy.patterns)
    assert noisy.triggers == base.triggers  # its own random stream: only the patterns differ
    assert noisy.patterns.abs().max() <= config.epsilon * (1 - config.sample_share) + 1e-6
    with pytest.raises(ConfigError, match="weight_noise"):
        config.updated(weight_noise=1.5)


def test_targeted_answers_point_every_group_at_the_next_one_in_every_shard():
    answers = ["red", "green", "blue", "red", "green", "blue"]
    groups = [0, 1, 2, 0, 1, 2]
    by_answer = Grouping("answer", ["red", "green", "blue"])
    assert target_answers(answers, groups, range(6), by_answer) == ["green", "blue", "red"] * 2
    # a shard without green still points red at green (the job's grouping, not the shard's), so a
    # group's images aim at the same answer whichever shard they fall in
    assert target_answers(["Red", "Blue", "Red"], [0, 2, 0], [7, 8, 9], by_answer) == ["green", "Red", "green"]
    # clusters have no answer of their own: the next cluster the shard holds lends one of its captions
    captions = ["a red one", "a blue one", "another blue one"]
    clusters = Grouping("cluster", ["cluster-0", "cluster-1", "cluster-2"])
    assert target_answers(captions, [0, 2, 2], [0, 1, 2], clusters) == ["a blue one", "a red one", "a red one"]


def test_nearest_targets_pair_the_groups_that_look_alike():
    # four groups on a line of one feature: 0 and 1 alike, 2 and 3 alike -> the cheapest derangement swaps them
    features = np.array([[0.0], [0.1], [1.0], [1.1], [5.0], [5.1], [6.0], [6.1]])
    assert nearest_targets(features, [0, 0, 1, 1, 2, 2, 3, 3], 4) == [1, 0, 3, 2]
    # a group with no sample keeps the next group; the three others still point at each other, not at it
    assert nearest_targets(features, [0, 0, 1, 1, 2, 2, 2, 2], 4) == [1, 2, 0, 0]
    assert nearest_targets(features[:2], [0, 0], 1) == [0]  # one group: nothing else to aim at
    # more groups than the derangement search takes: each group's nearest other group
    many = np.arange(10, dtype=float)[:, None] ** 2
    assert nearest_targets(many, list(range(10)), 10) == [1, 0, 1, 2, 3, 4, 5, 6, 7, 8]


def test_a_grouping_keeps_its_targets_through_the_job_metadata():
    grouping = Grouping("answer", ["blue", "green", "red", "yellow"], targets=[1, 0, 3, 2])
    again = Grouping.from_dict(grouping.to_dict())
    assert again.targets == [1, 0, 3, 2] and again.target_keys() == {"blue": "green", "green": "blue",
                                                                      "red": "yellow", "yellow": "red"}
    stored = {"structure": "answer", "keys": ["blue", "green", "red"], "centroids": None}  # before target_choice
    assert Grouping.from_dict(stored).target_keys() == {"blue": "green", "green": "red", "red": "blue"}
    answers = ["blue", "green", "red", "yellow"]
    assert target_answers(answers, [0, 1, 2, 3], range(4), grouping) == ["green", "blue", "yellow", "red"]
    # a shard of red and blue only: each still aims at the job's target, written as that group's key
    assert target_answers(["red", "blue"], [2, 0], [5, 6], grouping) == ["yellow", "green"]


def test_nearest_target_choice_aims_the_noise_elsewhere_and_keeps_the_bound(surrogates):
    data = make_data(12, captions=True)
    config = small_config(shared_steps=0, sample_steps=4, sample_objective="targeted", target_steps=4,
                          noise_structure="cluster", num_clusters=4)
    shared_next = learn_shared(data, surrogates, config)
    nearest_config = config.updated(target_choice="nearest")
    shared_nearest = learn_shared(data, surrogates, nearest_config)
    assert shared_next.grouping.targets is None  # the default: g -> g + 1
    targets = shared_nearest.grouping.targets
    assert sorted(targets) == [0, 1, 2, 3] and all(t != g for g, t in enumerate(targets))  # a derangement
    assert targets != [1, 2, 3, 0]  # these clusters' nearest partners are not the cycle
    assert shared_nearest.triggers == shared_next.triggers  # only the aim changes
    aimed_next = protect_shard(data, shared_next, surrogates, config)
    aimed_nearest = protect_shard(data, shared_nearest, surrogates, nearest_config)
    assert any(not np.array_equal(a, b) for a, b in zip(aimed_next.images, aimed_nearest.images, strict=True))
    assert largest_change(aimed_nearest.images, data.images) <= 8
    with pytest.raises(ConfigError, match="target_choice: 'closest' is not one of next, nearest"):
        config.updated(target_choice="closest")
    with pytest.raises(ConfigError, match="target_choice: 'nearest' picks where the targeted noise aims"):
        config.updated(target_choice="nearest", sample_objective="minimize", classifier_steps=0)


def test_the_logit_target_loss_takes_the_answers_raw_logit_and_keeps_the_bound(surrogates):
    data, config, shared = targeted_shard_setup(surrogates)
    prompts = [base_prompt(q, a) for q, a in zip(data.questions, data.answers, strict=True)]
    out = surrogates[0].adapter.forward(data.images, prompts)
    assert out.answer_logit.shape == out.loss.shape and bool(torch.isfinite(out.answer_logit).all())
    ce = protection_loss(surrogates[:1], data.images, prompts, config)
    logit = protection_loss(surrogates[:1], data.images, prompts, config, answer_loss="logit")
    assert torch.isclose(ce, out.loss.mean()) and torch.isclose(logit, -out.answer_logit.mean())
    with pytest.raises(ValueError, match="answer_loss: 'margin' is not one of ce, logit"):
        protection_loss(surrogates[:1], data.images, prompts, config, answer_loss="margin")
    by_ce = protect_shard(data, shared, surrogates, config)
    by_logit = protect_shard(data, shared, surrogates, config.updated(target_loss="logit"))
    assert any(not np.array_equal(a, b) for a, b in zip(by_ce.images, by_logit.images, strict=True))
    assert largest_change(by_logit.images, data.images) <= 8 and by_logit.sample_objective == "targeted"
    with pytest.raises(ConfigError, match="target_loss: 'margin' is not one of ce, logit"):
        config.updated(target_loss="margin")
    with pytest.raises(ConfigError, match="target_loss: 'logit' is what the targeted noise maximises"):
        config.updated(target_loss="logit", sample_objective="minimize", classifier_steps=0)


def test_the_feature_term_pulls_the_image_states_towards_the_target_answers_mean(surrogates):
    data, config, shared = targeted_shard_setup(surrogates)
    prompts = [base_prompt(q, a) for q, a in zip(data.questions, data.answers, strict=True)]
    anchor = build_anchor(surrogates[0].adapter, data.images, prompts, batch_size=4)
    assert sorted(anchor.centroids) == sorted(COLOURS) and anchor.layer == 1  # the test LM has two layers
    width = surrogates[0].adapter.config.text_config.hidden_size
    assert anchor.mean.shape == (width,) and all(c.shape == (width,) for c in anchor.centroids.values())
    # a state at its own answer's mean scores cos 1 to it, less to the others' means
    own = torch.stack([anchor.centroids["red"]] * 2)
    term = feature_term(own, anchor, ["red", "red"], ["green", "red"])
    assert 0 < float(term[0]) <= 2 and float(term[1]) == 0.0  # no target elsewhere: no term

    weighted = config.updated(target_feature_weight=5.0)
    plain = protect_shard(data, shared, surrogates, config)
    featured = protect_shard(data, shared, surrogates, weighted)
    again = protect_shard(data, shared, surrogates, weighted)
    assert all(s.anchor is None for s in surrogates)  # the loaded ensemble carries no shard's anchor
    assert all(np.array_equal(a, b) for a, b in zip(featured.images, again.images, strict=True))
    assert largest_change(featured.images, data.images) <= 8 and featured.sample_objective == "targeted"
    assert any(not np.array_equal(a, b) for a, b in zip(plain.images, featured.images, strict=True))
    # the loss the steps descend is the answer loss plus the weight times the term, on anchored models
    # only; one signed step down its gradient lowers the term
    groups = shared.grouping.assign(data.answers, data.images)
    targets = target_answers(data.answers, groups, data.indices, shared.grouping)
    wanted = [base_prompt(q, t) for q, t in zip(data.questions, targets, strict=True)]
    anchored = [replace(surrogates[0], anchor=anchor)]
    deltas = [torch.zeros_like(image, requires_grad=True) for image in data.images]
    images = [image + delta for image, delta in zip(data.images, deltas, strict=True)]
    total = protection_loss(anchored, images, wanted, weighted, own_answers=data.answers)
    answer_only = protection_loss(anchored, data.images, wanted, config, own_answers=data.answers)
    assert torch.isclose(answer_only, protection_loss(surrogates[:1], data.images, wanted, weighted,
                                                      own_answers=data.answers))  # no anchor: no term

    def term_at(batch):
        with torch.no_grad(), capture_layer_input(surrogates[0].adapter, anchor.layer) as store:
            out = surrogates[0].adapter.forward(batch, wanted)
        return feature_term(pooled_image_states(store["hidden"], out.positions), anchor, data.answers, targets).mean()

    assert torch.isclose(total.detach(), answer_only + 5.0 * term_at(data.images), atol=1e-5)
    total.backward()
    stepped = [image - 2 / 255 * delta.grad.sign() for image, delta in zip(data.images, deltas, strict=True)]
    assert term_at(stepped) < term_at(data.images)
    with pytest.raises(ConfigError, match="target_feature_weight"):
        config.updated(target_feature_weight=-1.0)
    with pytest.raises(ConfigError, match="target_feature_weight: the feature term aims the targeted noise"):
        config.updated(target_feature_weight=1.0, sample_objective="minimize", classifier_steps=0)


def test_balanced_ensemble_gradient_gives_each_surrogate_a_unit_vote_per_image(surrogates):
    data, config, shared = targeted_shard_setup(surrogates)
    prompts = [base_prompt(q, a) for q, a in zip(data.questions, data.answers, strict=True)]
    weighted = [surrogates[0], Surrogate(surrogates[1].name, surrogates[1].adapter, weight=0.5)]

    def noise_leaves():
        return [[torch.zeros_like(img).requires_grad_(True)] for img in data.images]

    def images(leaves):
        return [img + parts[0] for img, parts in zip(data.images, leaves, strict=True)]

    # each surrogate's own gradient, from the plain loss of that surrogate alone
    own = []
    for surrogate in weighted:
        leaves = noise_leaves()
        protection_loss([surrogate], images(leaves), prompts, config).backward()
        own.append([parts[0].grad for parts in leaves])
    leaves = noise_leaves()
    value = balanced_backward(weighted, leaves, images(leaves), prompts, config)
    assert torch.isclose(value, protection_loss(weighted, data.images, prompts, config))
    for j, parts in enumerate(leaves):
        expected = sum(s.weight * g[j] / g[j].abs().mean() for s, g in zip(weighted, own, strict=True)) / 1.5
        assert torch.allclose(parts[0].grad, expected, rtol=1e-4, atol=1e-6)
    summed = protect_shard(data, shared, surrogates, config)
    balanced = protect_shard(data, shared, surrogates, config.updated(ensemble_gradient="balanced"))
    assert any(not np.array_equal(a, b) for a, b in zip(summed.images, balanced.images, strict=True))
    assert largest_change(balanced.images, data.images) <= 8 and balanced.sample_objective == "targeted"
    with pytest.raises(ConfigError, match="ensemble_gradient: 'mean' is not one of sum, balanced"):
        config.updated(ensemble_gradient="mean")


def test_targeted_sample_noise_reads_as_the_next_answer_and_leaves_the_surrogates(surrogates):
    data = make_data(6)
    config = small_config(shared_steps=2, sample_steps=4, sample_share=1.0, epsilon=16 / 255)
    shared = learn_shared(data, surrogates, config)
    weights = [{n: p.detach().clone() for n, p in s.adapter.model.named_parameters()} for s in surrogates]
    targeted_config = config.updated(sample_objective="targeted", target_steps=30)
    minimised = protect_shard(data, shared, surrogates, config)
    targeted = protect_shard(data, shared, surrogates, targeted_config)
    assert targeted.answers == minimised.answers == data.answers
    assert (targeted.sample_objective, minimised.sample_objective) == ("targeted", "minimize")
    assert largest_change(targeted.images, data.images) <= 16
    for surrogate, before in zip(surrogates, weights, strict=True):
        assert all(torch.equal(p, before[n]) for n, p in surrogate.adapter.model.named_parameters())
    # judged by the same clean-task copies the objective used: the targeted images carry the next
    # group's answer more than the error-minimised ones do
    groups = shared.grouping.assign(data.answers, data.images)
    prompts = [base_prompt(q, a) for q, a in zip(data.questions, data.answers, strict=True)]
    copies = _clean_task_copies(surrogates, data, prompts, targeted_config)
    targets = target_answers(data.answers, groups, data.indices, shared.grouping)
    wanted = [base_prompt(q, t) for q, t in zip(data.questions, targets, strict=True)]

    def target_loss(images):
        tensors = [torch.from_numpy(img).permute(2, 0, 1).float() / 255 for img in images]
        with torch.no_grad():
            return float(sum(c.adapter.forward(tensors, wanted).loss.float().mean() for c in copies))

    assert target_loss(targeted.images) < target_loss(minimised.images)
    with pytest.raises(ConfigError, match="sample_objective"):
        config.updated(sample_objective="maximise")


def test_momentum_changes_the_per_sample_steps_and_keeps_the_bound(surrogates):
    data, config, shared = targeted_shard_setup(surrogates)
    plain = protect_shard(data, shared, surrogates, config)
    again = protect_shard(data, shared, surrogates, config.updated(momentum=0.0))
    with_momentum = protect_shard(data, shared, surrogates, config.updated(momentum=1.0))
    assert all(np.array_equal(a, b) for a, b in zip(plain.images, again.images, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(plain.images, with_momentum.images, strict=True))
    assert largest_change(with_momentum.images, data.images) <= 8
    with pytest.raises(ConfigError, match="momentum"):
        config.updated(momentum=1.5)


def test_sample_weight_noise_changes_the_per_sample_steps_and_leaves_the_surrogates(surrogates):
    data, config, shared = targeted_shard_setup(surrogates)
    before = [p.detach().clone() for s in surrogates for p in s.adapter.model.parameters()]
    plain = protect_shard(data, shared, surrogates, config)
    jittered = protect_shard(data, shared, surrogates, config.updated(sample_weight_noise=0.3))
    again = protect_shard(data, shared, surrogates, config.updated(sample_weight_noise=0.3))
    assert any(not np.array_equal(a, b) for a, b in zip(plain.images, jittered.images, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(jittered.images, again.images, strict=True))  # seeded
    assert largest_change(jittered.images, data.images) <= 8
    after = [p for s in surrogates for p in s.adapter.model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    with pytest.raises(ConfigError, match="sample_weight_noise"):
        config.updated(sample_weight_noise=1.5)


def test_robust_clean_task_copies_change_the_targeted_noise_and_keep_the_bound(surrogates):
    data, config, shared = targeted_shard_setup(surrogates)
    assert config.robust_epsilon == 2 / 255  # the default
    plain = protect_shard(data, shared, surrogates, config.updated(robust_epsilon=0.0))
    robust = protect_shard(data, shared, surrogates, config)
    both = protect_shard(data, shared, surrogates, config.updated(plain_copies=True))
    assert any(not np.array_equal(a, b) for a, b in zip(plain.images, robust.images, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(both.images, robust.images, strict=True))
    assert largest_change(robust.images, data.images) <= 8 and largest_change(both.images, data.images) <= 8
    with pytest.raises(ConfigError, match=r"robust_epsilon: 0.5 is out of range \[0, 32/255\]"):
        config.updated(robust_epsilon=0.5)
    assert config.updated(robust_epsilon="2/255").robust_epsilon == 2 / 255  # written like epsilon
    with pytest.raises(ConfigError, match="robust_epsilon: cannot read"):
        config.updated(robust_epsilon="two")
    with pytest.raises(ConfigError, match="plain_copies: 'yes' must be true or false"):
        config.updated(plain_copies="yes")


def test_lora_copies_keep_the_pretrained_vision_tower_and_change_the_noise(surrogates):
    from mmguard_core.models.training import vision_parameter_names

    data, config, shared = targeted_shard_setup(surrogates)
    prompts = [base_prompt(q, a) for q, a in zip(data.questions, data.answers, strict=True)]
    with_lora = config.updated(lora_copies=True)
    copies = _clean_task_copies(surrogates, data, prompts, with_lora)
    before = _clean_task_copies(surrogates, data, prompts, config)
    assert len(copies) == len(before) + len(surrogates)
    for old, new in zip(before, copies, strict=False):  # the copies made without the option come first, unchanged
        assert all(torch.equal(a, b) for a, b in zip(old.adapter.model.parameters(), new.adapter.model.parameters(),
                                                      strict=True))
    for surrogate, lora_copy in zip(surrogates, copies[len(before):], strict=True):
        original = dict(surrogate.adapter.model.named_parameters())
        tuned = dict(lora_copy.adapter.model.named_parameters())
        vision = set(vision_parameter_names(lora_copy.adapter.model))
        assert vision and all(torch.equal(tuned[name], original[name]) for name in vision)
        assert any(not torch.equal(tuned[name], original[name]) for name in tuned if name not in vision)
    plain = protect_shard(data, shared, surrogates, config)
    lora = protect_shard(data, shared, surrogates, with_lora)
    assert any(not np.array_equal(a, b) for a, b in zip(plain.images, lora.images, strict=True))
    assert largest_change(lora.images, data.images) <= 8
    with pytest.raises(ConfigError, match="lora_copies: 1 must be true or false"):
        config.updated(lora_copies=1)


def test_coarse_sample_noise_is_smooth_and_keeps_the_bound(surrogates):
    data, config, shared = targeted_shard_setup(surrogates)

    def roughness(output) -> float:  # mean difference of the noise between horizontal neighbours
        return float(np.mean([np.abs(np.diff(d, axis=1)).mean() for d in noise_of(output.images, data.images)]))

    fine = protect_shard(data, shared, surrogates, config)
    coarse = protect_shard(data, shared, surrogates, config.updated(sample_noise_scale=4))
    assert largest_change(coarse.images, data.images) <= 8
    assert roughness(coarse) < 0.5 * roughness(fine)
    with pytest.raises(ConfigError, match="sample_noise_scale"):
        config.updated(sample_noise_scale=0)


def test_a_pixel_level_part_on_top_of_the_smooth_noise_keeps_the_bound(surrogates):
    data, config, shared = targeted_shard_setup(surrogates)

    def roughness(output) -> float:
        return float(np.mean([np.abs(np.diff(d, axis=1)).mean() for d in noise_of(output.images, data.images)]))

    smooth = protect_shard(data, shared, surrogates, config.updated(sample_noise_scale=4))
    mixed = protect_shard(data, shared, surrogates, config.updated(sample_noise_scale=4, sample_fine_share=0.5))
    assert largest_change(mixed.images, data.images) <= 8  # the two parts' bounds add up to the sample bound
    assert roughness(mixed) > 1.5 * roughness(smooth)
    with pytest.raises(ConfigError, match="sample_fine_share: 0.5 splits .* sample_noise_scale is 1"):
        config.updated(sample_noise_scale=1, sample_fine_share=0.5)
    with pytest.raises(ConfigError, match=r"sample_fine_share: 1.0 is out of range \[0.0, 0.95\]"):
        config.updated(sample_noise_scale=4, sample_fine_share=1.0)


def test_the_clean_task_fine_tune_reports_progress_and_can_be_cancelled(surrogates):
    data = make_data(6)
    config = small_config(shared_steps=0, sample_steps=2, sample_objective="targeted", target_steps=5)
    shared = learn_shared(data, surrogates, config)
    seen = []
    with pytest.raises(ProtectionCancelled):
        protect_shard(data, shared, surrogates, config, progress=lambda d, t, s: seen.append((d, t, s)),
                      should_stop=lambda: any(s == "clean-task surrogates" for _, _, s in seen))
    assert seen == [(1, 10, "clean-task surrogates")]  # one step of the first copy, then the cancel


def test_a_shard_of_one_group_falls_back_to_error_minimising_noise_and_says_so(surrogates):
    data = make_data(12)  # enough repeats for per-answer groups
    config = small_config(shared_steps=0, sample_steps=2, sample_objective="targeted", target_steps=2)
    shared = learn_shared(data, surrogates, config)
    assert shared.grouping.structure == "answer"
    reds = [i for i, a in enumerate(data.answers) if a == "red"]
    shard = ShardInput([data.images[i] for i in reds], [data.questions[i] for i in reds], ["red"] * len(reds), reds)
    out = protect_shard(shard, shared, surrogates, config)
    assert out.sample_objective == "minimize" and out.clean_task_seconds == 0.0
    assert all(np.abs(d).max() > 0 for d in noise_of(out.images, shard.images))


@pytest.mark.parametrize("architecture", ["cnn", "vit", "mlp"])
def test_image_classifier_learns_the_groups_from_scratch_and_its_loss_reaches_the_pixels(architecture):
    from mmguard_core.config import CLASSIFIER_ARCHITECTURES
    from mmguard_core.engine.image_classifier import ARCHITECTURES, pixels, train_group_classifier
    from mmguard_core.models.base import Prompt

    gen = torch.Generator().manual_seed(0)
    colours = torch.tensor([[0.8, 0.2, 0.2], [0.2, 0.8, 0.2], [0.2, 0.2, 0.8]])
    groups = [i % 3 for i in range(48)]
    images = [(colours[g][:, None, None] + 0.05 * torch.randn(3, 24, 40, generator=gen)).clamp(0, 1) for g in groups]
    answers = ["red", "green", "blue"]
    texts = [answers[g] for g in groups]
    classifier = train_group_classifier(images, groups, texts, 3, steps=60, batch_size=16, seed=0,
                                        adversarial_epsilon=2 / 255, architecture=architecture)
    again = train_group_classifier(images, groups, texts, 3, steps=60, batch_size=16, seed=0,
                                   adversarial_epsilon=2 / 255, architecture=architecture)
    assert tuple(ARCHITECTURES) == CLASSIFIER_ARCHITECTURES  # the names config validates are the ones built
    own = [Prompt("What colour?", t) for t in texts]
    losses = classifier.forward(images, own).loss
    assert losses.shape == (48,) and float(losses.mean()) < 0.2  # it reads the groups
    assert torch.equal(losses, again.forward(images, own).loss)  # deterministic for a seed
    # the raw logit of the answer's group: the cross-entropy is the log-sum-exp over groups less it
    logits = classifier.model(pixels(images[:4]))
    read = classifier.forward(images[:4], own[:4])
    assert torch.allclose(read.loss, torch.logsumexp(logits, 1) - read.answer_logit, atol=1e-5)
    assert not any(p.requires_grad for p in classifier.model.parameters())  # frozen, as the LVLM copies
    # the targeted objective: how far each image reads as the next group; differentiable w.r.t. the image
    delta = torch.zeros(3, 24, 40, requires_grad=True)
    shifted = [Prompt("What colour?", answers[(g + 1) % 3]) for g in groups[:4]]
    classifier.forward([images[k] + delta for k in range(4)], shifted).loss.mean().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="answer 'purple' belongs to no group"):
        classifier.forward(images[:1], [Prompt("What colour?", "purple")])


def test_classifier_copies_change_the_targeted_noise_and_keep_the_bound(surrogates):
    data, config, shared = targeted_shard_setup(surrogates)
    assert config.classifier_steps == 0 and preset("balanced").classifier_steps == 0  # off unless asked for
    assert (preset("strong").classifier_steps, preset("strong").classifier_weight) == (300, 0.5)
    without = protect_shard(data, shared, surrogates, config)
    again = protect_shard(data, shared, surrogates, config.updated(classifier_steps=0))
    with_classifier = protect_shard(data, shared, surrogates, config.updated(classifier_steps=20))
    assert all(np.array_equal(a, b) for a, b in zip(without.images, again.images, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(without.images, with_classifier.images, strict=True))
    assert largest_change(with_classifier.images, data.images) <= 8
    assert with_classifier.sample_objective == "targeted"
    lighter = protect_shard(data, shared, surrogates, config.updated(classifier_steps=20, classifier_weight=0.25))
    assert any(not np.array_equal(a, b) for a, b in zip(lighter.images, with_classifier.images, strict=True))
    assert largest_change(lighter.images, data.images) <= 8
    # a second architecture beside the CNN adds its own copies (strong has both since the twenty-sixth session)
    assert preset("strong").classifier_architectures == ["cnn", "vit"]
    both = protect_shard(data, shared, surrogates, config.updated(classifier_steps=20, classifier_architectures=["cnn", "vit"]))
    assert any(not np.array_equal(a, b) for a, b in zip(both.images, with_classifier.images, strict=True))
    assert largest_change(both.images, data.images) <= 8
    with pytest.raises(ConfigError, match="classifier_architectures: \\['resnet'\\] must be a non-empty list of distinct"):
        config.updated(classifier_architectures=["resnet"])
    with pytest.raises(ConfigError, match=r"classifier_weight: 0 is out of range \[0.01, 100.0\]"):
        config.updated(classifier_weight=0)
    with pytest.raises(ConfigError, match='classifier_steps: the image classifier is a surrogate of the targeted noise'):
        config.updated(classifier_steps=20, sample_objective="minimize")
    with pytest.raises(ConfigError, match="classifier_steps: -1 is out of range"):
        config.updated(classifier_steps=-1)
    with pytest.raises(ConfigError, match="classifier_steps: 2.5 must be a whole number"):
        config.updated(classifier_steps=2.5)
