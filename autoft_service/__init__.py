"""autoft-service: find robust fine-tuning objectives (AutoFT) as a self-hosted service."""

__version__ = "0.1.0"
