"""medix-r1: offline MediX-R1 training and evaluation for medical vision-language models.

The base install is light: the Rust core (``medix_r1._native``) and NumPy. The judge, embedder, trainer and
evaluator live in extras and are imported only by the code that needs them.
"""

from importlib.metadata import PackageNotFoundError, version

from medix_r1._native import MODALITY_TAGS, MedixInputError

try:
    __version__ = version("medix-r1")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"

__all__ = ["MODALITY_TAGS", "MedixInputError", "__version__"]
