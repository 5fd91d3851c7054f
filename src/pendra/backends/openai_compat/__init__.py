"""What every OpenAI-compatible backend (vLLM, LM Studio, llama-server, SGLang, …) shares."""
