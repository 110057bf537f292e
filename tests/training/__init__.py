"""Tests of finetune.training."""
