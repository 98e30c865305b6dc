"""vlalign.models.generation: batching must not change answers; yes/no scores are log-probabilities."""

import pytest
import torch

from vlalign.models.generation import DecodingConfig, answer_token_ids, answer_yes_no, chat_prompt, generate
from vlalign.models.load import load_vlm
from vlalign.world.dataset import World


@pytest.fixture(scope="module")
def vlm(tiny_base):
    return load_vlm(tiny_base / "llava", dtype="float32")


@pytest.fixture(scope="module")
def images(tiny_world):
    world = World(tiny_world)
    return [world.load_image(f"images/test/{im['file_name']}") for im in world.coco("instances", "test")["images"][:6]]


def test_chat_prompt_matches_the_training_format(vlm):
    assert chat_prompt(vlm.processor, "Describe this image.") == "<s>USER: <image>\nDescribe this image. ASSISTANT:"


def test_batched_greedy_equals_one_at_a_time(vlm, images):
    # Prompts of different lengths make left padding matter.
    questions = ["Describe this image.", "Is there a dog in the image?", "What is in this picture?"] * 2
    decoding = DecodingConfig(max_new_tokens=12)
    batched = generate(vlm, images, questions, decoding, batch_size=6)
    single = [generate(vlm, [im], [q], decoding, batch_size=1)[0] for im, q in zip(images, questions)]
    assert batched == single
    assert all(isinstance(a, str) for a in batched)


def test_sampling_is_deterministic_for_a_seed(vlm, images):
    decoding = DecodingConfig(max_new_tokens=12, do_sample=True, temperature=5.0, seed=3)
    first = generate(vlm, images, ["Describe this image."] * 6, decoding, batch_size=3)
    assert generate(vlm, images, ["Describe this image."] * 6, decoding, batch_size=3) == first
    other = DecodingConfig(max_new_tokens=12, do_sample=True, temperature=5.0, seed=4)
    assert generate(vlm, images, ["Describe this image."] * 6, other, batch_size=3) != first


def test_progress_callback_counts_answers(vlm, images):
    seen = []
    generate(vlm, images[:5], ["Describe this image."] * 5, DecodingConfig(max_new_tokens=2), batch_size=2,
             on_batch=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_answer_tokens_of_the_world_tokenizer(vlm):
    tok = vlm.processor.tokenizer
    ids = answer_token_ids(tok, "Yes")
    assert ids and all(tok.decode([i]).strip().startswith("Y") for i in ids)


def test_yes_no_margin_is_the_log_probability_difference(vlm, images):
    questions = ["Is there a dog in the image?", "Is there an oven in the image?", "Is there a cup in the image?"]
    answers, margins = answer_yes_no(vlm, images[:3], questions, batch_size=3)
    tok = vlm.processor.tokenizer
    yes = sorted(set(answer_token_ids(tok, "Yes") + answer_token_ids(tok, "yes")))
    no = sorted(set(answer_token_ids(tok, "No") + answer_token_ids(tok, "no")))
    for image, question, answer, margin in zip(images, questions, answers, margins):
        inputs = vlm.processor(images=[image], text=[chat_prompt(vlm.processor, question)], return_tensors="pt")
        with torch.no_grad():
            logp = vlm.model(**inputs).logits[0, -1].log_softmax(-1)  # unpadded, full logits
        expected = (logp[yes].logsumexp(-1) - logp[no].logsumexp(-1)).item()
        assert margin == pytest.approx(expected, abs=1e-4)
        assert answer == ("Yes" if expected > 0 else "No")


def test_mismatched_lengths_are_refused(vlm, images):
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        generate(vlm, images[:2], ["Describe this image."], DecodingConfig())


def test_questions_about_one_image_share_its_prefix_and_give_the_same_margins(vlm, images, monkeypatch):
    """Repeated image objects take the shared-prefix path; margins must equal whole-prompt forwards."""
    from vlalign.models.adapters import LlavaAdapter

    questions = ["Is there a dog in the image?", "Is there an oven in the image?", "Is there a traffic light?",
                 "Describe this image.", "Is there a cup in the image?"]
    rows = [(images[k % 2], q) for k, q in enumerate(questions)]
    shared_answers, shared = answer_yes_no(vlm, [im for im, _ in rows], [q for _, q in rows], batch_size=3)
    monkeypatch.setattr(LlavaAdapter, "prefix_sharing", False)
    whole_answers, whole = answer_yes_no(vlm, [im for im, _ in rows], [q for _, q in rows], batch_size=3)
    assert shared == pytest.approx(whole, abs=1e-4)
    assert shared_answers == whole_answers
