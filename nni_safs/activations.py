"""``nni_safs.activations``: what a user's model or op needs (see :mod:`nni_safs.models.activations`)."""
from nni_safs.models.activations import OPS, ActivationSlot, op_names, register_op

__all__ = ["OPS", "ActivationSlot", "op_names", "register_op"]
