"""Every registry by the name config errors use for it, per research arm."""

from lorasec.attacks import ATTACKS
from lorasec.data import DATASETS
from lorasec.methods import METHODS
from lorasec.models import MODELS
from lorasec.registry import Registry


def registries(task: str = "classification") -> dict[str, Registry]:
    if task == "memorization":
        from lorasec.data.corpora import CORPORA
        from lorasec.models.causal import CAUSAL_LMS

        return {"model": CAUSAL_LMS, "corpus": CORPORA, "method": METHODS}
    return {"model": MODELS, "dataset": DATASETS, "method": METHODS, "attack": ATTACKS}
