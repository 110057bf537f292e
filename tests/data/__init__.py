"""Tests of finetune.data."""
