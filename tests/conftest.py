"""Test-wide settings: torch on one thread (the timings and the fixtures assume it)."""
import torch

torch.set_num_threads(1)
