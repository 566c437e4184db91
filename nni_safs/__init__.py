"""nni-safs: SAFS (Sparse Activation Function Search) for pruned networks, as an NNI plugin."""
__version__ = "0.2.0"
