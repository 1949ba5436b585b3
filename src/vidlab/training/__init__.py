"""Fine-tuning VideoLLaMA3: data, model set-up, training loop and checkpoints."""
