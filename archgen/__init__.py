"""archgen: compile YAML architecture specs into exact, standalone PyTorch modules."""

__version__ = "0.1.0"
