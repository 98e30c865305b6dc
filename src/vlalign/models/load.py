"""Load any Hugging Face vision-language model together with its processor.

Training and evaluation code works on a :class:`LoadedVLM` so that LLaVA-1.5, Qwen2-VL and
the project's tiny synthetic-world LLaVA are all handled the same way: the model comes from
``AutoModelForImageTextToText`` (safetensors only, in eval mode), the processor from
``AutoProcessor``, and ``family`` is the config's ``model_type`` for the few places that
must branch on the architecture. Remote code is never trusted unless the caller asks.

Mistakes a user can make (a wrong path, a run directory or an adapter given for a model, a
directory that is not a VLM checkpoint, files that do not load) raise
:class:`~vlalign.errors.UserError` with one line naming the path; anything else propagates.
:func:`resolve_model_path` decides, without the network, whether a name is a local directory or
a hub id, so that a mistyped local path never waits on hub retries.
So does a torchvision that is installed but does not import (a build for another torch):
transformers then fails to import any image processor, whatever the family.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageTextToText
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

try:
    from transformers import AutoProcessor
except Exception:  # a torchvision that does not import breaks transformers' image utilities: see check_torchvision
    AutoProcessor = None

from vlalign.errors import UserError
from vlalign.models.adapters import check_family

__all__ = ["LoadedVLM", "load_vlm", "resolve_model_path", "image_token_id", "check_torchvision",
           "torchvision_import_error"]

_DTYPES: dict[str, torch.dtype | str] = {
    "auto": "auto",
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
# A hub id is "owner/name"; anything else that does not exist locally is a missing path.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
# A processor needs an image processor's config and a tokenizer.
_IMAGE_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass
class LoadedVLM:
    """A vision-language model, its processor and its family (the config's ``model_type``)."""

    model: Any
    processor: Any
    family: str


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}: expected one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def check_checkpoint_files(path: Path) -> None:
    """Map a local VLM directory's missing processor or weights to one-line errors."""
    for what, names in (("image processor", _IMAGE_PROCESSOR_FILES), ("tokenizer", _TOKENIZER_FILES)):
        if not any((path / name).is_file() for name in names):
            raise UserError(
                f"model directory {str(path)!r} has no processor: no {what} (none of {', '.join(names)})"
            )
    if not any(path.glob("*.safetensors")):
        raise UserError(
            f"model directory {str(path)!r} has no .safetensors weights "
            "(pickled .bin weights are refused)"
        )


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> str:
    """What :func:`load_vlm` loads for a user's ``--model``: a local checkpoint directory, or a hub id.

    Nothing here touches the network. A name that does not exist locally is taken for a hub id only
    when it has the form ``owner/name``, does not look local (``./``, ``../``, ``~``, absolute, or an
    ``owner`` that is an existing directory: ``models/nope`` where ``models/`` exists) and, when the
    machine is offline (``HF_HUB_OFFLINE``), is in the hub cache; otherwise it is a missing path at once.

    Raises:
        UserError: one line naming the path: it does not exist, is a file, has no config.json, or is
            a vlalign run directory or a LoRA adapter rather than a whole model (the line names what to
            pass instead).
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model path {str(path)!r} is not a directory")
        _check_whole_model(path)
        return str(path)
    if not HUB_ID.match(name):
        raise UserError(f"model path {name!r} does not exist (nor is it a hub id owner/name)")
    owner = name.split("/", 1)[0]
    if Path(owner).is_dir():
        raise UserError(f"model path {name!r} does not exist ({owner}/ is a local directory, so it is not "
                        "looked up as a hub id)")
    if _offline() and not _in_hub_cache(name):
        raise UserError(f"model path {name!r} does not exist, and the hub id {name!r} is not in the hub cache "
                        "(HF_HUB_OFFLINE is set: nothing is downloaded)")
    return name


def _check_whole_model(path: Path) -> None:
    """A run directory or an adapter given where a whole model is expected, named in one line."""
    import json

    config = path / "config.json"
    if not config.is_file():
        if (path / "adapter_config.json").is_file():
            raise UserError(f"model directory {str(path)!r} holds a LoRA adapter, not a whole model: merge it "
                            f"with its base first (vlalign merge --adapter {path} --out MERGED)")
        raise UserError(f"model directory {str(path)!r} has no config.json")
    try:
        fields = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{config}: not a readable JSON config ({_first_line(err)})") from None
    if not isinstance(fields, dict) or "model_type" in fields or not {"method", "model", "data"} <= fields.keys():
        return
    model = path / "model"
    if (model / "adapter_config.json").is_file():
        raise UserError(f"{str(path)!r} is a vlalign run directory, not a model: its trained model is the LoRA "
                        f"adapter {model} (merge it with vlalign merge --adapter {model} --out MERGED)")
    if (model / "config.json").is_file():
        raise UserError(f"{str(path)!r} is a vlalign run directory, not a model: its trained model is {model}")
    raise UserError(f"{str(path)!r} is a vlalign run directory without a model/ yet (the run has not finished: "
                    f"continue it with vlalign train --resume --out {path})")


def _offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as now set; huggingface_hub reads it once, at import."""
    import huggingface_hub.constants

    values = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return huggingface_hub.constants.HF_HUB_OFFLINE or any(v.upper() in ("1", "ON", "YES", "TRUE") for v in values)


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)  # a local lookup only


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def load_vlm(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    for_training: bool = False,
) -> LoadedVLM:
    """Load an image-text-to-text model and its processor from a local directory or hub id.

    Args:
        name_or_path: a checkpoint directory, or a hub id ``owner/name``.
        dtype: ``"auto"`` (the checkpoint's own dtype), ``"float32"``, ``"bfloat16"``,
            ``"float16"`` or a :class:`torch.dtype`.
        device: where to place the weights (loaded straight there); ``None`` keeps the CPU.
        trust_remote_code: run the checkpoint's own Python code; off unless asked for.
        attn_implementation: e.g. ``"eager"``, ``"sdpa"``, ``"flash_attention_2"``;
            ``None`` lets transformers choose.
        for_training: also refuse, before anything heavy loads, a family whose log-probs the
            scorer cannot compute (:func:`vlalign.models.adapters.check_family`).

    Returns:
        A :class:`LoadedVLM` whose model is in eval mode.

    Raises:
        UserError: the path does not exist (:func:`resolve_model_path`: no hub lookup for a path
            that looks local, or offline), is a run directory or an adapter, is not a VLM checkpoint,
            lacks a processor, or its config, processor or weights do not load (one line each); or
            torchvision is installed but does not import (:func:`check_torchvision`).
    """
    name = resolve_model_path(name_or_path)
    path = Path(name)
    local = path.is_dir()
    torch_dtype = _resolve_dtype(dtype)
    check_torchvision()

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except OSError as err:  # a hub id the hub does not have or cannot be reached; an unreadable config.json
        raise UserError(f"model {name!r}: cannot load its config ({_first_line(err)})") from None
    except (ValueError, KeyError) as err:
        if "recogni" not in str(err).lower():  # "does not recognize this architecture", "Unrecognized model"
            if not local:
                raise
            raise UserError(f"model directory {name!r}: config.json is not a model config ({_first_line(err)})") from None
        import transformers

        declared = _declared_model_type(path) if local else None
        family = f"model family {declared!r}" if declared else "its model family"
        raise UserError(f"{name}: {family} is not one transformers {transformers.__version__} knows: upgrade "
                        "transformers, or pass --trust-remote-code if the checkpoint ships its own code") from None
    remote_vlm = trust_remote_code and "AutoModelForImageTextToText" in (
        getattr(config, "auto_map", None) or {}
    )
    if type(config) not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING and not remote_vlm:
        raise UserError(
            f"{name!r} holds a {config.model_type!r} model ({type(config).__name__}), "
            "not an image-text-to-text model: a vision-language model is expected"
        )

    if for_training:
        try:
            check_family(config.model_type)
        except ValueError as err:
            raise UserError(f"{name}: {err}") from None
    if local:
        check_checkpoint_files(path)
    # The processor first: it is cheap, and a missing one should fail before the weights load.
    try:
        processor = _load_processor(name, trust_remote_code)
    except OSError as err:  # an unreadable tokenizer or processor file, a failed download
        raise UserError(f"model {name!r}: cannot load its processor ({_first_line(err)})") from None
    from transformers.processing_utils import ProcessorMixin

    if not isinstance(processor, ProcessorMixin):
        raise UserError(
            f"{name!r} has only a {type(processor).__name__}, not a multimodal processor "
            "(image processor + tokenizer)"
        )

    kwargs: dict[str, Any] = {
        "config": config,
        "dtype": torch_dtype,
        "trust_remote_code": trust_remote_code,
        "use_safetensors": True,
    }
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if device is not None:
        kwargs["device_map"] = torch.device(device)
    try:
        model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
    except (OSError, SafetensorError) as err:  # torn or unreadable weights, a failed download
        raise UserError(f"model {name!r}: cannot load its weights ({_first_line(err)})") from None
    model.eval()
    return LoadedVLM(model=model, processor=processor, family=config.model_type)


def _declared_model_type(path: Path) -> str | None:
    import json

    try:
        value = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


@functools.cache
def torchvision_import_error() -> Exception | None:
    """Why torchvision, which is installed, does not import; ``None`` when it imports or is not installed.

    transformers imports torchvision whenever it is installed (``find_spec`` finds it), and every
    image processor then fails with it: a torchvision built for another torch is the usual cause.
    """
    if importlib.util.find_spec("torchvision") is None:
        return None
    try:
        importlib.import_module("torchvision")
    except Exception as err:  # OSError (a missing library), RuntimeError (an operator torch lacks), ImportError
        return err
    return None


def check_torchvision() -> None:
    """Refuse, in one line, a torchvision that is installed but does not import.

    transformers 5 imports torchvision from its image utilities whenever it is installed, and the
    config classes of every VLM import those: such a torchvision breaks every family at once.
    """
    broken = torchvision_import_error()
    if broken is None:
        return
    raise UserError(
        f"torchvision is installed but does not import: {type(broken).__name__}: {_first_line(broken)}; "
        "uninstall it (pip uninstall torchvision) or install the torchvision release built for "
        f"torch {torch.__version__} (torch and torchvision are released in pairs, e.g. "
        "torch==2.14.1 with torchvision==0.29.1)"
    )


def _load_processor(name: str, trust_remote_code: bool) -> Any:
    auto = AutoProcessor
    if auto is None:  # its import failed when this module loaded: try again, for the error itself
        from transformers import AutoProcessor as auto
    return auto.from_pretrained(name, trust_remote_code=trust_remote_code)


def image_token_id(processor: Any) -> int:
    """Return the id of the processor's image placeholder token (``<image>``, ``<|image_pad|>``).

    Raises:
        UserError: the processor defines no image token, or its tokenizer does not know it.
    """
    token_id = getattr(processor, "image_token_id", None)
    if token_id is None:
        token = getattr(processor, "image_token", None)
        tokenizer = getattr(processor, "tokenizer", None)
        if token is None or tokenizer is None:
            raise UserError(f"processor {type(processor).__name__} has no image token")
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise UserError(
                f"processor {type(processor).__name__}: image token {token!r} is not in its vocabulary"
            )
    return int(token_id)


def kv_cache(output: Any) -> Any:
    """The key/value cache a forward pass returned: ``output.cache`` (transformers >= 5.24), else
    ``output.past_key_values``."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def with_kv_cache(module: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """``cache`` as the keyword ``module.forward`` takes it: ``cache`` from transformers 5.24 on,
    ``past_key_values`` before (5.24 still accepts the old name, with a warning)."""
    return {_cache_keyword(type(module)): cache}


@functools.cache
def _cache_keyword(cls: type) -> str:
    # Looked up once per model class: this runs on every packed forward of training.
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"
