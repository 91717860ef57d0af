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
from dataclasses import dataclass, replace
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
    """A Llama architecture: ``hidden`` width, ``layers`` blocks, ``heads`` attention heads;
    ``pretrain`` > 0: a "base model" pre-trained on that many plain-text task examples."""

    hidden: int
    layers: int
    heads: int
    seed: int = 0
    pretrain: int = 0

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden


_ARCHITECTURES = {
    "llama-0.1m": TinyModel(hidden=48, layers=2, heads=4, seed=11),
    "llama-0.6m": TinyModel(hidden=96, layers=4, heads=4, seed=12),
    "llama-1.1m": TinyModel(hidden=128, layers=4, heads=4, seed=13),
}
#: Examples a ``-base`` model is pre-trained on (one pass; minutes per model on one CPU core).
PRETRAIN_EXAMPLES = 60_000
#: Randomly initialised models (``llama-*``) and pre-trained bases (``llama-*-base``).
TINY_MODELS: dict[str, TinyModel] = {
    **_ARCHITECTURES,
    **{
        f"{name}-base": replace(spec, pretrain=PRETRAIN_EXAMPLES)
        for name, spec in _ARCHITECTURES.items()
    },
}
#: The pre-trained bases (corpus v2's ``base_model`` choices).
BASE_MODELS = tuple(name for name, spec in TINY_MODELS.items() if spec.pretrain)


def cache_dir() -> Path:
    """Where built models live: ``$AUTOPIPE_CACHE`` or ``~/.cache/optuna-autopipe``."""
    root = os.environ.get("AUTOPIPE_CACHE") or Path.home() / ".cache" / "optuna-autopipe"
    return Path(root) / "tiny-models"


def resolve_model(name: str) -> str:
    """A name ``from_pretrained`` understands: ``tiny/<name>`` is built locally (once; a
    pre-trained base the package bundles is unpacked instead, ``bundle.unpack_base``)."""
    if not name.startswith(TINY_PREFIX):
        return name
    key = name[len(TINY_PREFIX) :]
    if key not in TINY_MODELS:
        raise ValueError(
            f"Unknown tiny model {name!r}; choose one of "
            f"{[TINY_PREFIX + k for k in TINY_MODELS]} or give a hub name / local folder."
        )
    spec = TINY_MODELS[key]
    # the pre-training size is part of the folder: a changed recipe never reads a stale build
    folder = cache_dir() / (f"{key}-{spec.pretrain}" if spec.pretrain else key)
    if not (folder / "config.json").exists():
        from objectives.post_training.bundle import unpack_base

        if not (spec.pretrain and unpack_base(folder)):
            build_tiny_model(spec, folder)
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
    if spec.pretrain:
        _pretrain(model, tokenizer, spec, folder.parent)
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


def pretraining_texts(count: int, seed: int) -> list[str]:
    """``count`` plain-text examples ("prompt\nreasoning\nAnswer: X", no chat template, gold
    answers) drawn uniformly over every task and difficulties 0-2 (seeded)."""
    from objectives.post_training.tasks import TASKS

    rng = random.Random(f"pretrain/{seed}")
    specs = [TASKS[name] for name in sorted(TASKS)]
    texts = []
    for _ in range(count):
        example = rng.choice(specs).make(rng, rng.randrange(3))
        texts.append(f"{example.prompt}\n{example.completion}")
    return texts


def _pretrain(model, tokenizer, spec: TinyModel, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    """One pass of causal language modelling over ``pretraining_texts(spec.pretrain,
    spec.seed)`` (TRL ``SFTTrainer`` on a text column; learning rate 3e-3, cosine, batch 32)."""
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    disable_progress_bar()
    texts = pretraining_texts(spec.pretrain, spec.seed)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        config = SFTConfig(
            output_dir=tmp,
            num_train_epochs=1,
            per_device_train_batch_size=32,
            learning_rate=3e-3,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            seed=spec.seed,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_steps=100,
            disable_tqdm=True,
            max_length=MAX_POSITIONS,
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list([{"text": t} for t in texts]),
            processing_class=tokenizer,
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
