"""Tests for vlalign.models.load on tiny randomly initialised VLMs built here (no downloads)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

import vlalign.models.load as load_mod
from vlalign.errors import UserError
from vlalign.models.load import LoadedVLM, image_token_id, load_vlm

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
# transformers 5.23's Qwen2VLProcessor cannot be built, saved or loaded without its video
# processor, and Qwen2VLVideoProcessor needs torchvision.
needs_torchvision = pytest.mark.skipif(
    not HAS_TORCHVISION, reason="Qwen2VLProcessor needs Qwen2VLVideoProcessor, which needs torchvision"
)

SENTENCES = [
    "USER: what is in the image ? ASSISTANT: a red cube and a blue ball .",
    "describe the picture . is there a green cat on the table ? yes no",
    "system user assistant",
]
LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
QWEN_SPECIALS = [
    "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
]
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is in the image ?"}]}
]


def word_tokenizer(specials: list[str], *, bos: bool, eos: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on a few sentences, with ``specials`` as special tokens."""
    base = ["<unk>", "<pad>", "<s>", "</s>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainer=trainers.WordLevelTrainer(special_tokens=base + specials))
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token=eos,
        additional_special_tokens=specials,
    )


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor], int]:
    """A saved tiny LLaVA-1.5-style model + LlavaProcessor; returns (dir, weights, <image> id)."""
    tok = word_tokenizer(["<image>"], bos=True, eos="</s>")
    image_id = tok.convert_tokens_to_ids("<image>")
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token; "default" then drops it again
        chat_template=LLAVA_TEMPLATE,
    )
    vision = CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_id,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    out = tmp_path_factory.mktemp("llava")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out, state(model), image_id


def qwen_tokenizer_and_model() -> tuple[PreTrainedTokenizerFast, Qwen2VLForConditionalGeneration]:
    tok = word_tokenizer(QWEN_SPECIALS, bos=False, eos="<|im_end|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
            # head_dim 16 -> 8 rotary frequencies split over (temporal, height, width)
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    return tok, Qwen2VLForConditionalGeneration(config)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor], int]:
    """A saved tiny Qwen2-VL + Qwen2VLProcessor; returns (dir, weights, <|image_pad|> id)."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    tok, model = qwen_tokenizer_and_model()
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 56 * 56}  # a 56x56 image: 4x4 patches, 4 tokens
    patches = {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}  # as the vision config
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, **patches),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(size=pixels, **patches),
        chat_template=QWEN_TEMPLATE,
    )
    out = tmp_path_factory.mktemp("qwen2_vl")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out, state(model), model.config.image_token_id


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny CLIPModel: a vision model, but not an image-text-to-text one."""
    config = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=16,
    )
    out = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(out)
    return out


def check_loaded(
    loaded: LoadedVLM, family: str, weights: dict[str, torch.Tensor], image: Image.Image
) -> None:
    """Family, eval mode, the saved weights, and a greedy generate on (image, chat prompt)."""
    assert loaded.family == family
    model = loaded.model
    assert not model.training and not any(m.training for m in model.modules())
    got = model.state_dict()
    assert set(got) == set(weights)
    for key, value in weights.items():
        assert torch.equal(got[key], value), key
    prompt = loaded.processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    inputs = loaded.processor(images=image, text=prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    n_prompt = inputs["input_ids"].shape[1]
    assert out.shape[0] == 1 and n_prompt < out.shape[1] <= n_prompt + 3
    assert torch.equal(out[:, :n_prompt], inputs["input_ids"])


def test_load_llava(llava_dir: tuple[Path, dict[str, torch.Tensor], int]) -> None:
    path, weights, image_id = llava_dir
    loaded = load_vlm(path)
    assert isinstance(loaded.processor, LlavaProcessor)
    assert loaded.processor.apply_chat_template(MESSAGES, add_generation_prompt=True) == (
        "USER: <image>\nwhat is in the image ? ASSISTANT:"
    )
    check_loaded(loaded, "llava", weights, Image.new("RGB", (40, 48), (200, 30, 30)))
    assert image_token_id(loaded.processor) == image_id
    assert loaded.model.config.image_token_id == image_id


def test_load_llava_bfloat16_and_str_path(llava_dir: tuple[Path, dict[str, torch.Tensor], int]) -> None:
    path, weights, _ = llava_dir
    loaded = load_vlm(str(path), dtype="bfloat16", device="cpu")
    params = dict(loaded.model.named_parameters())
    assert params and all(p.dtype == torch.bfloat16 for p in params.values())
    assert loaded.model.device == torch.device("cpu")
    assert torch.float32 == load_vlm(path, dtype=torch.float32).model.dtype


@needs_torchvision
def test_load_qwen2_vl(qwen_dir: tuple[Path, dict[str, torch.Tensor], int]) -> None:
    path, weights, image_id = qwen_dir
    loaded = load_vlm(path)
    check_loaded(loaded, "qwen2_vl", weights, Image.new("RGB", (56, 56), (30, 200, 30)))
    assert image_token_id(loaded.processor) == image_id == loaded.model.config.image_token_id
    assert load_vlm(path, dtype="bfloat16").model.dtype == torch.bfloat16


@pytest.mark.skipif(HAS_TORCHVISION, reason="only without torchvision")
def test_qwen2_vl_without_torchvision_fails_before_loading_weights(tmp_path: Path) -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok, model = qwen_tokenizer_and_model()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    Qwen2VLImageProcessorPil().save_pretrained(tmp_path)  # then mark it as the Qwen2VLProcessor's
    config = tmp_path / "preprocessor_config.json"
    config.write_text(config.read_text().replace("{", '{"processor_class": "Qwen2VLProcessor",', 1))
    (tmp_path / "model.safetensors").write_bytes(b"not read")  # proves the weights are never reached
    with pytest.raises(ImportError, match="[Tt]orchvision"):
        load_vlm(tmp_path)


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(UserError, match="no_such_model") as err:
        load_vlm(missing)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="does not exist"):
        load_vlm("./checkpoints/no/such/model")


def test_path_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    with pytest.raises(UserError, match="not a directory"):
        load_vlm(file)


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"has no config\.json") as err:
        load_vlm(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_clip_model_is_not_a_vlm(clip_dir: Path) -> None:
    with pytest.raises(UserError, match="'clip'.*vision-language model is expected") as err:
        load_vlm(clip_dir)
    assert str(clip_dir) in str(err.value) and "\n" not in str(err.value)


def test_text_lm_is_not_a_vlm(tmp_path: Path) -> None:
    LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="'llama'.*vision-language model is expected"):
        load_vlm(tmp_path)


def copy_without(src: Path, dst: Path, *names: str) -> Path:
    shutil.copytree(src, dst, ignore=lambda _dir, files: [f for f in files if f in names])
    return dst


def test_missing_processor(llava_dir: tuple[Path, dict[str, torch.Tensor], int], tmp_path: Path) -> None:
    src = llava_dir[0]
    bare = copy_without(src, tmp_path / "bare", "processor_config.json", "tokenizer.json",
                        "tokenizer_config.json", "chat_template.jinja")
    with pytest.raises(UserError, match="has no processor: no image processor") as err:
        load_vlm(bare)
    assert str(bare) in str(err.value)
    text_only = copy_without(src, tmp_path / "text_only", "processor_config.json")
    with pytest.raises(UserError, match="has no processor: no image processor"):
        load_vlm(text_only)
    no_tokenizer = copy_without(src, tmp_path / "no_tokenizer", "tokenizer.json", "tokenizer_config.json")
    with pytest.raises(UserError, match="has no processor: no tokenizer"):
        load_vlm(no_tokenizer)


def test_pickled_weights_are_refused(
    llava_dir: tuple[Path, dict[str, torch.Tensor], int], tmp_path: Path
) -> None:
    pickled = copy_without(llava_dir[0], tmp_path / "pickled", "model.safetensors")
    (pickled / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(UserError, match=r"no \.safetensors weights"):
        load_vlm(pickled)


def test_unknown_dtype(llava_dir: tuple[Path, dict[str, torch.Tensor], int]) -> None:
    with pytest.raises(UserError, match="unknown dtype 'fp8'"):
        load_vlm(llava_dir[0], dtype="fp8")


def test_trust_remote_code_defaults_to_false_and_safetensors_is_forced(
    llava_dir: tuple[Path, dict[str, torch.Tensor], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, dict] = {}

    def spy(name: str, real: type) -> type:
        class Spy:
            @staticmethod
            def from_pretrained(*args, **kwargs):
                calls[name] = kwargs
                return real.from_pretrained(*args, **kwargs)

        return Spy

    for name in ("AutoConfig", "AutoProcessor", "AutoModelForImageTextToText"):
        monkeypatch.setattr(load_mod, name, spy(name, getattr(load_mod, name)))
    load_vlm(llava_dir[0], attn_implementation="eager")
    assert set(calls) == {"AutoConfig", "AutoProcessor", "AutoModelForImageTextToText"}
    assert all(kwargs["trust_remote_code"] is False for kwargs in calls.values())
    model_kwargs = calls["AutoModelForImageTextToText"]
    assert model_kwargs["use_safetensors"] is True
    assert model_kwargs["attn_implementation"] == "eager"
    assert "device_map" not in model_kwargs and "torch_dtype" not in model_kwargs


def test_image_token_id_without_one() -> None:
    class NoImageToken:
        pass

    with pytest.raises(UserError, match="no image token"):
        image_token_id(NoImageToken())


def test_processor_without_images_is_refused(
    llava_dir: tuple[Path, dict[str, torch.Tensor], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """AutoProcessor falls back to a bare tokenizer for model types that have no processor class."""

    class TokenizerOnly:
        @staticmethod
        def from_pretrained(path, **kwargs):
            return PreTrainedTokenizerFast.from_pretrained(path)

    monkeypatch.setattr(load_mod, "AutoProcessor", TokenizerOnly)
    with pytest.raises(UserError, match="only a .*Tokenizer.*not a multimodal processor"):
        load_vlm(llava_dir[0])


def test_hub_id_is_passed_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """An owner/name that is not a local path goes to transformers untouched (no local checks)."""
    seen: list[tuple[str, dict]] = []

    class Offline(Exception):
        pass

    class FakeConfig:
        @staticmethod
        def from_pretrained(name, **kwargs):
            seen.append((name, kwargs))
            raise Offline

    monkeypatch.setattr(load_mod, "AutoConfig", FakeConfig)
    monkeypatch.setattr(load_mod, "_offline", lambda: False, raising=False)  # whatever this machine's HF_HUB_OFFLINE
    with pytest.raises(Offline):
        load_vlm("llava-hf/llava-1.5-7b-hf")
    assert seen == [("llava-hf/llava-1.5-7b-hf", {"trust_remote_code": False})]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every HTTP request the hub client (httpx2) or transformers would send, refused and recorded."""
    import httpx2

    sent: list[str] = []

    def refuse(self, request, *args, **kwargs):
        sent.append(str(request.url))
        raise httpx2.ConnectError("the test allows no network", request=request)

    monkeypatch.setattr(httpx2.Client, "send", refuse)
    monkeypatch.setattr(httpx2.AsyncClient, "send", refuse)
    return sent


@pytest.mark.parametrize("name", ["models/nope", "./models/nope", "../nope/model", "/no/such/models/x"])
def test_a_path_that_looks_local_is_missing_at_once(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    """``models/nope`` has a hub id's form, but ``models/`` exists: no hub lookup, one line."""
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(load_mod, "_offline", lambda: False, raising=False)
    with pytest.raises(UserError, match="does not exist") as err:
        load_vlm(name)
    assert repr(name) in str(err.value) and "\n" not in str(err.value)
    assert no_network == []


def test_offline_a_hub_id_not_in_the_cache_is_missing_at_once(
    monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"'nobody-vlalign/no-such-vlm' is not in the hub cache \(HF_HUB_OFFLINE"):
        load_vlm("nobody-vlalign/no-such-vlm")
    assert no_network == []


def test_a_hub_id_the_hub_refuses_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unreachable:
        @staticmethod
        def from_pretrained(name, **kwargs):
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection")

    monkeypatch.setattr(load_mod, "AutoConfig", Unreachable)
    monkeypatch.setattr(load_mod, "_offline", lambda: False, raising=False)
    with pytest.raises(UserError, match=r"model 'owner/vlm': cannot load its config \(We couldn't connect") as err:
        load_vlm("owner/vlm")
    assert "\n" not in str(err.value)


def fake_run(root: Path, model: Path | None, adapter: bool = False) -> Path:
    """A directory laid out as ``vlalign train`` leaves one: config.json of a TrainConfig, model/."""
    import json

    root.mkdir()
    (root / "config.json").write_text(json.dumps({"method": "dpo", "model": "base", "data": "p.jsonl", "lr": 1e-5}))
    if adapter:
        (root / "model").mkdir()
        (root / "model" / "adapter_config.json").write_text("{}")
    elif model is not None:
        shutil.copytree(model, root / "model")
    return root


def test_a_run_directory_names_its_model(llava_dir: tuple[Path, dict[str, torch.Tensor], int], tmp_path: Path) -> None:
    done = fake_run(tmp_path / "done", llava_dir[0])
    with pytest.raises(UserError, match=rf"is a vlalign run directory, not a model: its trained model is {done}/model$"):
        load_vlm(done)
    lora = fake_run(tmp_path / "lora", None, adapter=True)
    with pytest.raises(UserError, match=r"the LoRA adapter .*lora/model \(merge it with vlalign merge"):
        load_vlm(lora)
    with pytest.raises(UserError, match="holds a LoRA adapter, not a whole model"):
        load_vlm(lora / "model")
    unfinished = fake_run(tmp_path / "unfinished", None)
    with pytest.raises(UserError, match=rf"without a model/ yet .*vlalign train --resume --out {unfinished}\)"):
        load_vlm(unfinished)


def test_torn_weights_and_config_are_one_line(
    llava_dir: tuple[Path, dict[str, torch.Tensor], int], tmp_path: Path
) -> None:
    torn = copy_without(llava_dir[0], tmp_path / "torn", "model.safetensors")
    (torn / "model.safetensors").write_bytes((llava_dir[0] / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(UserError, match=r"'.*torn': cannot load its weights \(") as err:
        load_vlm(torn)
    assert "\n" not in str(err.value)
    bad_config = copy_without(llava_dir[0], tmp_path / "bad_config")
    (bad_config / "config.json").write_text('{"model_type": "llava", ')
    with pytest.raises(UserError, match=r"config\.json: not a readable JSON config") as err:
        load_vlm(bad_config)
    assert "\n" not in str(err.value)


def test_train_on_a_missing_local_path_or_a_run_directory_exits_2_in_one_line(
    tiny_base: Path, tiny_prefs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from vlalign.cli import main

    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(load_mod, "_offline", lambda: False, raising=False)
    run = fake_run(tmp_path / "runs_dpo", tiny_base / "llava")
    for model, message in (("models/nope", "model path 'models/nope' does not exist (models/ is a local directory"),
                           (str(run), f"is a vlalign run directory, not a model: its trained model is {run}/model")):
        args = ["train", "--method", "dpo", "--model", model, "--data", str(tiny_prefs), "--out", str(tmp_path / "out")]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "out").exists()
    assert no_network == []
