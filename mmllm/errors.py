"""User-facing errors.

Every mistake a user can make (a bad spec, a bad image, a missing package) raises a subclass of
:class:`MMLLMError` whose message names the problem and the fix. The CLI prints such errors as
one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class MMLLMError(Exception):
    """Base class for errors caused by user input or environment, not by a bug."""


class SpecError(MMLLMError, ValueError):
    """A reducer spec string cannot be parsed or names an unknown method or parameter."""


class BudgetError(MMLLMError, ValueError):
    """A reducer was asked to keep more tokens than it receives (or a non-positive count)."""


class MissingSideInfoError(MMLLMError, ValueError):
    """A reducer needs side information (``cls``, ``keys``, ...) the encoder did not provide."""


class ImageError(MMLLMError, ValueError):
    """An image cannot be decoded or is outside the accepted size range."""


class DataFormatError(MMLLMError, ValueError):
    """A data folder does not follow the data format (see ARCHITECTURE.md, "Data format")."""


class MissingPackageError(MMLLMError, ImportError):
    """A package that ships pretrained weights (or an optional extra) is not installed."""
