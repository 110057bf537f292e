"""Tests of finetune.models."""
