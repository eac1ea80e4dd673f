"""Text-to-image generation through the LLM: prompts, the image-token generator, its checker.

The LLM writes the ids of a discrete tokenizer (:mod:`mmllm.vision_tokenizers.discrete`) after a
text prompt, as new vocabulary rows; the tokenizer decodes them to pixels.
"""
