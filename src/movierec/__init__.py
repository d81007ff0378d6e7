"""movierec: fine-tune small LLMs into Yes/No movie recommenders with LLaMA-Factory."""

__version__ = "0.1.0"
