"""Tiny local "base models": randomly initialised Llama-style models with a locally trained
byte-level BPE tokenizer, built from fixed seeds, so that the pipeline runs for real on CPU
and in tests without a model hub.

A model is named ``tiny/<name>`` (see ``TINY_MODELS``); ``resolve_model`` builds it once into
a cache folder and returns the folder, which every ``from_pretrained`` call accepts like a hub
name. Any other name (``Qwen/Qwen2.5-0.5B-Instruct``, a local folder) is returned unchanged.

The tokenizer is shared by all tiny models: byte-level BPE (so decoding reproduces the text
exactly and "Answer:" survives), trained on text from every synthetic task and the eight
answer formats, with the chat template ``<|role|>\\n{content}<|end|>\\n`` and ``<|end|>`` as
end of sequence (a rendered prompt is an exact prefix of prompt + completion).
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

TINY_PREFIX = "tiny/"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ("<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>")
VOCAB_SIZE = 512
MAX_POSITIONS = 256


@dataclass(frozen=True, kw_only=True)
class TinyModel:
    """A Llama architecture: ``hidden`` width, ``layers`` blocks, ``heads`` attention heads."""

    hidden: int
    layers: int
    heads: int
    seed: int = 0

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden


TINY_MODELS: dict[str, TinyModel] = {
    "llama-0.1m": TinyModel(hidden=48, layers=2, heads=4, seed=11),
    "llama-0.6m": TinyModel(hidden=96, layers=4, heads=4, seed=12),
    "llama-1.1m": TinyModel(hidden=128, layers=4, heads=4, seed=13),
}


def cache_dir() -> Path:
    """Where built models live: ``$AUTOPIPE_CACHE`` or ``~/.cache/optuna-autopipe``."""
    root = os.environ.get("AUTOPIPE_CACHE") or Path.home() / ".cache" / "optuna-autopipe"
    return Path(root) / "tiny-models"


def resolve_model(name: str) -> str:
    """A name ``from_pretrained`` understands: ``tiny/<name>`` is built locally (once)."""
    if not name.startswith(TINY_PREFIX):
        return name
    key = name[len(TINY_PREFIX) :]
    if key not in TINY_MODELS:
        raise ValueError(
            f"Unknown tiny model {name!r}; choose one of "
            f"{[TINY_PREFIX + k for k in TINY_MODELS]} or give a hub name / local folder."
        )
    folder = cache_dir() / key
    if not (folder / "config.json").exists():
        build_tiny_model(TINY_MODELS[key], folder)
    return str(folder)


def _tokenizer_corpus() -> list[str]:
    from objectives.post_training.formats import ANSWER_FORMATS
    from objectives.post_training.tasks import TASKS

    rng = random.Random(0)
    texts = [f.instruction + "\n" + f.render("B") for f in ANSWER_FORMATS]
    for spec in TASKS.values():
        for level in range(4):
            for _ in range(150):
                example = spec.make(rng, level)
                texts.append(example.prompt + "\n" + example.completion)
    return texts


def build_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    """The shared tiny tokenizer (module docstring); deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<|pad|>",
        eos_token="<|end|>",
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(spec: TinyModel, folder: str | Path) -> Path:
    """Build ``spec`` with its seed, save model + tokenizer to ``folder`` (atomically)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process built it first
            if not (folder / "config.json").exists():
                raise
        else:
            os.makedirs(tmp)  # TemporaryDirectory removes its (now moved) folder on exit
    return folder
