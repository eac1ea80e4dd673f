"""The shipped default checkpoint (adapter + LoRA safetensors, config, processor files)."""
