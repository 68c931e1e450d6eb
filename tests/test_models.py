"""Model layer: every family's adapter over its real transformers class (tiny random models, CPU, offline)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from mmguard_core.config import FAMILY_NAMES  # noqa: E402
from mmguard_core.engine.feature_target import capture_layer_input, pooled_image_states, state_layer  # noqa: E402
from mmguard_core.models import (  # noqa: E402
    FAMILIES,
    ModelLoadError,
    Prompt,
    build_tiny,
    build_word_tokenizer,
    load_surrogate,
)
from mmguard_core.models.tiny import BUILDERS  # noqa: E402

torch.set_num_threads(1)

WORDS = "what colour is the shape red blue green circle square triangle pent zebra describe a small".split()
TINY_FAMILIES = sorted(set(BUILDERS) & set(FAMILIES))


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(WORDS)


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def adapter(request, tokenizer):
    return build_tiny(request.param, tokenizer, size="test", seed=0)


def _prompts() -> list[Prompt]:
    q1 = "pent zebra what colour is the shape"
    q2 = "what colour is the shape"
    a3 = "describe a small red circle"
    return [
        Prompt(q1, "red circle", trigger_span=(0, len("pent zebra"))),
        Prompt(q2, "blue"),
        Prompt("describe the shape", a3, trigger_span=(0, len("describe")), trigger_in_answer=True),
    ]


def _images(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # three different original resolutions, none equal to the model input size
    return [torch.rand(3, h, w, generator=g) for h, w in ((40, 56), (24, 24), (37, 29))]


def _word_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_tokenizer_offsets_and_round_trip(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    text = "<bos>USER: <image><image>\nWhat colour is the Red circle? ASSISTANT: blue<eos>"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[:5] == ["<bos>", "user", ":", "<image>", "<image>"]
    assert "red" in tokens and "?" in tokens and tokens[-1] == "<eos>"
    red = tokens.index("red")
    start, end = enc["offset_mapping"][red]
    assert text[start:end] == "Red"
    assert tokenizer.unk_token_id not in _word_ids(tokenizer, " ".join(WORDS))
    for token in (
        "<|image_pad|>",
        "<fake_token_around_image>",
        "<global-img>",
        "<row_1_col_1>",
        "<IMG_CONTEXT>",
    ):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert again(text, add_special_tokens=False)["input_ids"] == enc["input_ids"]
    assert len(again) == len(tokenizer) and again.pad_token_id == tokenizer.pad_token_id


def test_build_is_deterministic(tokenizer):
    a = build_tiny("llava", tokenizer, seed=3)
    b = build_tiny("llava", tokenizer, seed=3)
    c = build_tiny("llava", tokenizer, seed=4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.model.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_pixel_gradient_two_sizes(adapter):
    images = [img.clone().requires_grad_(True) for img in _images()]
    adapter.model.train()
    try:
        out = adapter.forward(images, _prompts())
    finally:
        adapter.model.eval()
    assert out.loss.shape == (3,) and out.exact.shape == (3,) and out.exact.dtype == torch.bool
    assert torch.isfinite(out.loss).all()
    out.loss.sum().backward()
    for img in images:
        assert img.grad is not None and img.grad.abs().sum() > 0


def test_pixel_inputs_are_differentiable(adapter):
    image = _images()[0].requires_grad_(True)
    pixels = adapter.pixel_inputs([image])
    first = next(v for v in pixels.values() if v.is_floating_point())
    first.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_token_positions_and_labels(adapter, tokenizer):
    prompts = _prompts()
    text = adapter.text_inputs(prompts)
    ids, labels, mask = text["input_ids"], text["labels"], text["attention_mask"]
    assert ids.shape == labels.shape == mask.shape
    end_tokens = {
        "llava": "<eos>",
        "paligemma": "<eos>",
        "qwen2_vl": "<|im_end|>",
        "qwen2_5_vl": "<|im_end|>",
    }
    end_tokens |= {"idefics3": "<end_of_utterance>", "internvl": "<|im_end|>", "gemma3": "<end_of_turn>"}
    end_tokens |= {"llava_next": "<eos>"}
    end_id = tokenizer.convert_tokens_to_ids(end_tokens[adapter.family])
    for row, (prompt, pos) in enumerate(zip(prompts, text["positions"], strict=True)):
        # image placeholders
        assert len(pos.image) == adapter.num_image_tokens() > 0
        assert (ids[row, pos.image] == adapter.image_token_id).all()
        assert int((ids[row] == adapter.image_token_id).sum()) == len(pos.image)
        # trigger tokens decode to the trigger words
        if prompt.trigger_span is None:
            assert len(pos.trigger) == 0
        else:
            source = prompt.answer if prompt.trigger_in_answer else prompt.question
            words = source[prompt.trigger_span[0] : prompt.trigger_span[1]]
            assert ids[row, pos.trigger].tolist() == _word_ids(tokenizer, words)
        # answer queries predict exactly the answer tokens and the end token
        expected = _word_ids(tokenizer, prompt.answer) + [end_id]
        assert labels[row, pos.answer + 1].tolist() == expected
        # labels mask everything else (prompt, image, padding)
        keep = torch.zeros_like(labels[row], dtype=torch.bool)
        keep[pos.answer + 1] = True
        assert (labels[row, ~keep] == -100).all()
        assert (labels[row, keep] == ids[row, keep]).all()
        # right padding
        n = int(mask[row].sum())
        assert mask[row, :n].all() and not mask[row, n:].any()
        assert int(pos.answer.max()) + 1 == n - 1


def test_attentions_for_requested_layers(adapter):
    layers = (0, adapter.num_lm_layers - 1)
    with torch.no_grad():
        out = adapter.forward(_images(), _prompts(), attention_layers=layers)
    text = adapter.text_inputs(_prompts())
    batch, length = text["input_ids"].shape
    heads = adapter.config.text_config.num_attention_heads
    assert set(out.attentions) == set(layers)
    for attn in out.attentions.values():
        assert attn.shape == (batch, heads, length, length)
        valid = text["attention_mask"].bool()
        sums = attn.sum(-1)[valid[:, None, :].expand(-1, heads, -1)]
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-4)
    assert len(out.positions) == batch
    # attentions are differentiable w.r.t. the pixels
    image = _images()[0].requires_grad_(True)
    out = adapter.forward([image], _prompts()[:1], attention_layers=(0,))
    pos = out.positions[0]
    out.attentions[0][0, :, pos.answer][..., pos.image].sum().backward()
    assert image.grad.abs().sum() > 0


def test_image_states_follow_the_image_and_never_the_answer(adapter):
    """The feature term's reading (engine/feature_target.py): the middle layer's input at the image
    positions, differentiable in the pixels, blind to the answer; blind to the question too except
    under PaliGemma's prefix attention."""
    layer = state_layer(adapter)

    def states(images, prompts):
        with capture_layer_input(adapter, layer) as store:
            out = adapter.forward(images, prompts)
        return pooled_image_states(store["hidden"], out.positions)

    image = _images()[0]
    with torch.no_grad():
        base = states([image] * 3, [Prompt("what colour is the shape", "red circle"),
                                    Prompt("what colour is the shape", "blue"),
                                    Prompt("pent zebra is the shape red", "blue")])
        other_image = states([_images(seed=1)[0]], [Prompt("what colour is the shape", "red circle")])
    assert base.shape == (3, adapter.config.text_config.hidden_size)
    assert torch.allclose(base[0], base[1], atol=1e-6)  # the answer never reaches them
    assert torch.allclose(base[0], base[2], atol=1e-6) != (adapter.family == "paligemma")
    assert not torch.allclose(base[0], other_image[0], atol=1e-6)
    pixels = image.clone().requires_grad_(True)
    states([pixels], [Prompt("what colour is the shape", "blue")]).sum().backward()
    assert pixels.grad.abs().sum() > 0


def test_save_load_round_trip(adapter, tmp_path):
    images, prompts = _images(), _prompts()
    with torch.no_grad():
        before = adapter.forward(images, prompts).loss
    adapter.save_pretrained(tmp_path / "ckpt")
    loaded = load_surrogate(f"{adapter.family}:{tmp_path / 'ckpt'}")
    assert type(loaded) is type(adapter)
    assert loaded.image_size == adapter.image_size
    with torch.no_grad():
        after = loaded.forward(images, prompts).loss
    assert torch.equal(before, after)


def test_exact_match_equals_greedy_decode(tokenizer):
    family_results = {}
    for family in TINY_FAMILIES:
        adapter = build_tiny(family, tokenizer, size="test", seed=1)
        image = _images(5)[0]
        prompt = Prompt("what colour is the shape", "green triangle")
        other = Prompt("what colour is the shape", "blue square")
        optimiser = torch.optim.Adam(adapter.model.parameters(), lr=1e-2)
        text = adapter.text_inputs([prompt])
        adapter.model.train()
        for _ in range(60):
            out = adapter.forward([image], [prompt], text=text)
            if bool(out.exact[0]) and float(out.loss[0].detach()) < 0.05:
                break
            optimiser.zero_grad()
            out.loss.sum().backward()
            optimiser.step()
        adapter.model.eval()
        with torch.no_grad():
            exact = adapter.forward([image, image], [prompt, other]).exact.tolist()
        label_ids = text["labels"][0][text["labels"][0] != -100].tolist()
        greedy = adapter.greedy_answer_ids(image, prompt, max_new_tokens=len(label_ids) + 2)
        family_results[family] = exact
        assert exact[0] is True, family
        assert greedy == label_ids, family
        assert exact[1] is False, family
        other_ids = adapter.text_inputs([other])["labels"][0]
        assert greedy != other_ids[other_ids != -100].tolist()


def test_lora_keeps_pixel_gradients(adapter):
    from peft import LoraConfig, get_peft_model

    twin = adapter.clone()
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj)"
    )
    twin.model = get_peft_model(twin.model, config)
    lora = [p for n, p in twin.model.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)
    image = _images()[1].requires_grad_(True)
    out = twin.forward([image, _images()[0]], _prompts()[:2], attention_layers=(0,))
    assert out.attentions[0].shape[0] == 2
    out.loss.sum().backward()
    assert image.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert twin.num_lm_layers == adapter.num_lm_layers
    # the original adapter is untouched
    assert not any("lora_" in n for n, _ in adapter.model.named_parameters())


def test_load_surrogate_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="nosuch"):
        load_surrogate("nosuch:/tmp")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_surrogate(f"llava:{tmp_path / 'missing'}")
    with pytest.raises(ModelLoadError, match="not a checkpoint"):
        load_surrogate(f"llava:{tmp_path}")
    with pytest.raises(ModelLoadError, match="expected"):
        load_surrogate("no-colon")
    assert issubclass(ModelLoadError, ValueError)


def test_wrong_family_for_checkpoint(tokenizer, tmp_path):
    adapter = build_tiny("llava", tokenizer)
    adapter.save_pretrained(tmp_path)
    others = [f for f in FAMILIES if f != "llava"]
    if not others:
        pytest.skip("only one family registered")
    with pytest.raises(ModelLoadError, match="llava"):
        load_surrogate(f"{others[0]}:{tmp_path}")


def _reference(family: str, tokenizer, pil, question: str, answer: str):
    """(processor output, number of prompt tokens it covers) from the family's own transformers
    processor (PIL image backends, built offline with explicit sizes), or None when unavailable."""
    if family == "llava":
        from transformers import LlavaProcessor
        from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

        image_processor = LlavaImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
        processor = LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=8,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
        text = f"<bos>USER: <image>\n{question} ASSISTANT:"
        return processor(images=[pil], text=[text], return_tensors="pt", add_special_tokens=False)
    if family == "llava_next":  # canonical size = the tile size: base image + one tile
        from transformers import LlavaNextProcessor
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": 32},
            crop_size={"height": 32, "width": 32},
            image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]],
        )
        processor = LlavaNextProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=8,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
        text = f"<bos>USER: <image>\n{question} ASSISTANT:"
        return processor(images=[pil], text=[text], return_tensors="pt", add_special_tokens=False)
    if family == "idefics3":
        from transformers import Idefics3Processor
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        image_processor = Idefics3ImageProcessorPil(
            do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
        )
        processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=16)
        text = f"<bos>User:<image>{question}<end_of_utterance>\nAssistant:"
        return processor(images=[[pil]], text=[text], return_tensors="pt", add_special_tokens=False)
    if family == "paligemma":
        from transformers import PaliGemmaProcessor
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

        image_processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
        image_processor.image_seq_length = 16
        processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
        return processor(images=[pil], text=[f"<image>{question}"], suffix=[answer], return_tensors="pt")
    if family in (
        "qwen2_vl",
        "qwen2_5_vl",
    ):  # the Qwen2-VL processor needs torchvision (video); compare pixels only
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        image_processor = Qwen2VLImageProcessorPil(
            patch_size=4,
            merge_size=2,
            temporal_patch_size=2,
            size={"shortest_edge": 256, "longest_edge": 4096},
        )
        return image_processor(images=[pil], return_tensors="pt")
    return None


def test_matches_reference_processor_at_native_size(adapter, tokenizer):
    import numpy as np
    from PIL import Image

    array = (np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8)
    image = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    question, answer = "what colour is the shape", "red circle"
    ref = _reference(adapter.family, tokenizer, Image.fromarray(array), question, answer)
    if ref is None:
        pytest.skip(f"no offline reference processor for {adapter.family}")
    mine = adapter.pixel_inputs([image])
    for key in ("pixel_values", "image_grid_thw", "image_sizes"):
        if key in ref:
            assert torch.allclose(mine[key].float(), ref[key].float(), atol=1e-6), key
    if "input_ids" in ref:
        text = adapter.text_inputs([Prompt(question, answer)])
        n = ref["input_ids"].shape[1]
        assert text["input_ids"][0, :n].tolist() == ref["input_ids"][0].tolist()
        for key in ("labels", "token_type_ids"):
            if key in ref:
                assert text[key][0, :n].tolist() == ref[key][0].tolist(), key


def test_loads_a_checkpoint_laid_out_like_the_hub(tokenizer, tmp_path):
    """A real checkpoint folder has no mmguard_adapter.json: mean/std (and for Qwen2-VL the pixel
    bounds) come from the processor's preprocessor_config.json, sizes from the model config."""
    import json

    for family, pre, expected_size in (
        (
            "llava",
            {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.5, 0.5], "crop_size": {"height": 32}},
            32,
        ),
        (
            "qwen2_vl",
            {"image_mean": [0.4, 0.4, 0.4], "image_std": 0.25, "min_pixels": 256, "max_pixels": 24 * 24},
            24,
        ),
    ):
        folder = tmp_path / family
        build_tiny(family, tokenizer).save_pretrained(folder)
        (folder / "mmguard_adapter.json").unlink()
        (folder / "preprocessor_config.json").write_text(json.dumps(pre))
        adapter = load_surrogate(f"{family}:{folder}", dtype="float32")
        assert adapter.image_size == (expected_size, expected_size)
        assert adapter.image_mean == tuple(pre["image_mean"])
        assert adapter.image_std[0] == (pre["image_std"][0] if isinstance(pre["image_std"], list) else 0.25)
        image = _images()[0].requires_grad_(True)
        out = adapter.forward([image], _prompts()[:1])
        out.loss.sum().backward()
        assert image.grad.abs().sum() > 0
        assert len(out.positions[0].image) == adapter.num_image_tokens()


def test_llava_next_template_follows_the_checkpoint(tokenizer, tmp_path):
    import json

    build_tiny("llava_next", tokenizer).save_pretrained(tmp_path)
    (tmp_path / "chat_template.json").write_text(
        json.dumps({"chat_template": "{{ '[INST] ' }}...{{ ' [/INST]' }}"})
    )
    adapter = load_surrogate(f"llava_next:{tmp_path}")
    rendered = adapter.render(Prompt("what colour", "red"))
    assert rendered.text.startswith("<bos>[INST] <image>")
    assert rendered.text.endswith("what colour [/INST] red<eos>")
    assert rendered.text[rendered.answer_start :].startswith("red")


def test_the_torch_free_family_list_matches_the_registry():
    # config.py refuses unknown families in the API process, which must not import torch
    assert sorted(FAMILY_NAMES) == sorted(FAMILIES)
