"""Step 3: the base model. `load_model(config.model)` returns model + tokenizer."""

from adhere.models.loader import LoadedModel, ResolvedModel, load_model, load_tokenizer, resolve

__all__ = ["LoadedModel", "ResolvedModel", "load_model", "load_tokenizer", "resolve"]
