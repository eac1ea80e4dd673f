"""The shipped text-to-image generator (``mmllm generate``): LoRA, image rows, tokenizer."""
