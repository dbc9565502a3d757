"""Training: preflight, launching (torchrun, DeepSpeed, Ray), the tiny stand-in model, manifests and runs."""
