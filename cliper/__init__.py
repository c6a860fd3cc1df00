"""Torch-free core shared by the offline job and the service: views, prompts, image preprocessing."""
