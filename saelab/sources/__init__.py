"""Model sources: a language model with OpenAI's hook locations (`models`)."""
