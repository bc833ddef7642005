"""CapsLab: capsule networks that train fast, fit a hardware budget and go deep in little memory."""

__version__ = "0.1.0"
