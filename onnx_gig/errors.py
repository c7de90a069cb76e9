"""User-facing errors: each one prints as a single readable line from the CLI."""


class GigError(Exception):
    """Base class for errors a user can act on (bad model, bad image, bad option)."""


class UnsupportedOpError(GigError):
    """The graph holds an op on the differentiable path that no rule covers."""


class ModelError(GigError):
    """The model file is missing, corrupt, or not an image classifier we can explain."""


class InputError(GigError):
    """An image, array, baseline or target the user passed cannot be used."""


class SizeRejected(ModelError):
    """A model with dynamic sizes failed on an input's size (a stride it needs, a merge of two branches): that
    image's failure, not the run's."""
