"""Every registry by the name config errors use for it."""

from lorasec.attacks import ATTACKS
from lorasec.data import DATASETS
from lorasec.methods import METHODS
from lorasec.models import MODELS

REGISTRIES = {"model": MODELS, "dataset": DATASETS, "method": METHODS, "attack": ATTACKS}
