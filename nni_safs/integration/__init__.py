"""The NNI side: the tuner, the trial entry point and its channel, the manager's API and address,
NNI's built-in tuners driven in-process, and the warm-trial server."""
