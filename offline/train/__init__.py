"""Recommender training: BPR trainer with early stopping, full-ranking evaluation, runs, benchmarks."""
