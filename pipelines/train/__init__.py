"""Training: the pretrained trunk, the one training loop, the family registry and evaluation."""
