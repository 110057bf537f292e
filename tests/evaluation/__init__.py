"""Tests of finetune.evaluation."""
