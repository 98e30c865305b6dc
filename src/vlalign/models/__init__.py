"""Loading Hugging Face VLMs, tiny builders for tests and the synthetic world."""
